"""Data-parallel training on several processes (torch.distributed): launching, joining, ranks.

With `train.processes: 1` none of this does anything: rank 0 of a world of 1. With N > 1 the
train stage starts itself again as N worker processes through torch's elastic launcher (the
code `torchrun --standalone --nproc-per-node N` runs) and waits for them. Each worker joins the
process group, trains on its share of every step's batches, and rank 0 alone writes the
outputs. Under an outer `torchrun` (several machines) the stage is a worker already: it joins.

No process outlives the one that started it (end_with_starter): the launcher puts each worker
in a session of its own, so a SIGKILL of the launcher, or of DVC's process group, never reaches
the workers, which would train on and write outputs into the next run.

torch loads inside the functions that use it (the names below are annotations only), so that
the stage can call end_with_starter() first, before pipeline.portable chooses torch's kernels.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

# Tests only: the worker of this global rank stops with a user error after its first epoch,
# so that tests can check that the other workers stop too (tests/test_distributed_stage.py).
TEST_FAIL_RANK = "PIPELINE_TEST_FAIL_RANK"
# Tests only: the worker of this global rank raises an unexpected error (a bug) after epoch 1.
TEST_BUG_RANK = "PIPELINE_TEST_BUG_RANK"
# Tests only: every worker sleeps this many seconds after epoch 1's report, so that a test's
# kill on seeing that report lands mid-training on a machine of any speed (tests/test_crashes.py).
TEST_PAUSE_S = "PIPELINE_TEST_PAUSE_S"
# Set by launch() for its workers: its pid, so that a worker can tell that its launcher died
# before the worker set its guard (its parent is then another process).
LAUNCHER_PID = "PIPELINE_LAUNCHER_PID"
# What DVC sets for the commands of the stage it runs (dvc/stage/run.py), and nobody else.
DVC_STAGE = "DVC_STAGE"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def launched() -> bool:
    """True in a worker that a launcher (torchrun, or launch() below) started."""
    return "WORLD_SIZE" in os.environ


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """The process that writes outputs and prints progress."""
    return rank() == 0


@contextmanager
def process_group(device: torch.device, processes: int) -> Iterator[torch.device]:
    """Join the process group of the workers a launcher started, and yield this worker's
    device (cuda:LOCAL_RANK on GPUs); outside a launcher, yield `device` and do nothing."""
    import torch
    import torch.distributed as dist

    if not launched():
        yield device
        return
    world = int(os.environ["WORLD_SIZE"])
    if world != processes:
        # The model depends on the number of processes: dvc.lock must record the real one.
        raise PipelineError(
            f"train.processes is {processes} but the launcher started {world} processes "
            f"(WORLD_SIZE); set train.processes: {world} in params.yaml."
        )
    if device.type == "cuda":  # untested here: no GPU on the machines this was written on
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise PipelineError(
                f"{torch.cuda.device_count()} GPU(s) on this machine but {local_rank + 1} or "
                "more processes; start at most one process per GPU (torchrun --nproc-per-node)."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    yield device
    # Only after success: on an error the process exits, which drops its connections.
    dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DDP (which averages gradients over processes), or itself alone."""
    from torch import nn

    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # The buffers (idf, fixed positions) never change: synced once, at the start only.
        forward_sync_buffers=False,
    )


def sum_across(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (on the CPU); itself with one."""
    if world_size() == 1:
        return tensor
    import torch.distributed as dist

    total = tensor.to(device)
    dist.all_reduce(total)
    return total.cpu()


def fail_if_testing(epoch: int) -> None:
    """Tests only: after epoch 1, stop this worker with a user error (TEST_FAIL_RANK) or with
    an unexpected exception, as a bug would (TEST_BUG_RANK)."""
    if epoch != 1:
        return
    if os.environ.get(TEST_FAIL_RANK) == str(rank()):
        raise PipelineError(f"Injected failure on rank {rank()} ({TEST_FAIL_RANK}, tests only).")
    if os.environ.get(TEST_BUG_RANK) == str(rank()):
        raise RuntimeError(f"Injected bug on rank {rank()} ({TEST_BUG_RANK}, tests only).")


def pause_if_testing(epoch: int) -> None:
    """Tests only: after epoch 1 (reported), sleep TEST_PAUSE_S seconds."""
    if epoch == 1 and TEST_PAUSE_S in os.environ:
        time.sleep(float(os.environ[TEST_PAUSE_S]))


def launch(processes: int, script: Path, args: list[str]) -> None:
    """Run `python script *args` as `processes` workers on this machine, as `torchrun
    --standalone --nproc-per-node processes` would, and wait for them.

    Workers' stdout (rank 0's progress lines) passes through; their stderr goes to files, and
    this process prints it: rank 0's after a success, one sentence after a failure (see
    _failure: the other workers' reports of a lost peer stay hidden). A failure, or SIGINT /
    SIGTERM to this process, stops every worker (SIGKILL after 10 s) and raises PipelineError.
    Call it from the main thread: workers get their parent-death signal when the thread that
    started them ends (end_with_starter), and torch starts them from the calling thread.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # gloo takes its address from the host name, which in containers may not be reachable;
    # all workers are on this machine. A user's own setting wins.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ[LAUNCHER_PID] = str(os.getpid())
    # The launcher logs each worker it stops; the one sentence below says what happened.
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    with tempfile.TemporaryDirectory(prefix="train-workers-") as logs:
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=processes,
            # What --standalone sets: a rendezvous on a free local port, a fresh id.
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            run_id=str(uuid.uuid4()),
            max_restarts=0,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=Std.ERR),
            shutdown_timeout=10,
        )
        try:
            elastic_launch(config, sys.executable)(str(script), *args)
        except ChildFailedError as err:
            raise PipelineError(_failure(logs, err, processes)) from None
        except SignalException as err:
            raise PipelineError(
                f"Training stopped by {err.sigval.name}: all {processes} processes were ended "
                "and nothing was written."
            ) from None
        sys.stderr.write(_stderr(logs).get(0, ""))


def _stderr(logs: str) -> dict[int, str]:
    """What each worker wrote to stderr, by local rank."""
    files = Path(logs).glob("*/attempt_0/*/stderr.log")
    return {int(f.parent.name): f.read_text(errors="replace") for f in files}


def _failure(logs: str, err: ChildFailedError, processes: int) -> str:
    """The sentence for a failed run: a worker's user error; else the worker that died of a
    signal; else (a bug) the failed workers' output, printed here, and which ones failed."""
    stderr = _stderr(logs)
    for local_rank in sorted(stderr):
        for line in stderr[local_rank].splitlines():
            if line.startswith("Error: "):
                return line.removeprefix("Error: ")
    # A worker killed outright (SIGKILL: out of memory, a user) or crashed in native code
    # (SIGSEGV, SIGABRT) is the cause: the others then lost a peer (gloo's "Connection closed
    # by peer" traceback) or were stopped by the launcher's SIGTERM (click's "Aborted!", or
    # exit on the signal), and their output would only bury it. Failures are in the order the
    # launcher saw them.
    for global_rank, failure in err.failures.items():
        if failure.exitcode < 0 and failure.exitcode != -signal.SIGTERM:
            return (
                f"Training process rank {global_rank} of {processes} was ended by signal "
                f"{-failure.exitcode} ({failure.signal_name()}); the other processes were "
                "stopped and nothing was written."
            )
    # A bug: what the failed workers printed (tracebacks), less those the launcher stopped.
    failed = {r: f for r, f in err.failures.items() if f.exitcode != -signal.SIGTERM}
    for global_rank, failure in sorted((failed or err.failures).items()):
        sys.stderr.write(f"--- rank {global_rank} ---\n{stderr.get(failure.local_rank, '')}")
    codes = ", ".join(f"rank {r} exit code {f.exitcode}" for r, f in sorted(err.failures.items()))
    return f"A training process failed ({codes}); its output is above."


# --- no process outlives the one that started it ----------------------------------------------


def end_with_starter() -> None:
    """Make this process end (SIGKILL) when the process that started it ends: a worker with its
    launcher (launch() or an outer torchrun), a stage that DVC runs with DVC. A SIGKILL of the
    launcher or of DVC (the OOM killer, CI's `timeout -s KILL`) leaves no handler to stop
    the workers, which torch's launcher puts in sessions of their own, out of reach of a kill
    of the process group. A stage started by hand (`nohup python stages/train.py`) is left be.

    The parent-death signal (Linux's PR_SET_PDEATHSIG) is the kernel's: it fires even when the
    parent dies at once, with no code of ours running. It is set here, after this process
    started, so the parent may already be gone: the parent is then checked to be the expected
    one. Under an outer torchrun the launcher's pid is not known: a launcher that dies before
    this call (in the worker's first 0.7 s or so, its imports: pandas) leaves the worker
    running. Elsewhere than Linux this does nothing.
    """
    if sys.platform != "linux":
        return
    if launched():
        launcher = os.environ.get(LAUNCHER_PID)
        _end_with_parent(int(launcher) if launcher else os.getppid())
    elif DVC_STAGE in os.environ:
        dvc = _dvc_process()
        if dvc is None:  # DVC died before we looked
            _die()
        elif dvc == os.getppid():
            _end_with_parent(dvc)
        else:
            _end_with_ancestor(dvc)


def dies_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen: the child gets the parent-death signal (SIGKILL),
    which survives its exec, so it ends when this process ends, even by SIGKILL (a tuning
    trial's `dvc exp run`, whose stage end_with_starter then ties to it). The signal follows
    the thread that starts the child, so start it from a thread that waits for it. libc is
    looked up here, before the fork: between fork and exec the child does only the call and a
    check that this process had not already died. None elsewhere than Linux."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return tie


def _end_with_parent(expected: int) -> None:
    """The parent-death signal, then the check that the parent is `expected` (still alive)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected:
        _die()


def _end_with_ancestor(dvc: int) -> None:
    """Watch DVC when it is not the parent (the shell it runs the command with forked instead
    of exec), which the parent-death signal cannot: a thread looks twice a second that DVC
    still runs this stage (once it dies, the shell is adopted by a process in another group).
    Not a pidfd: os.pidfd_open needs Linux 5.3, and clusters still run 4.18 (RHEL 8)."""

    def watch() -> None:
        while _dvc_process() == dvc:
            time.sleep(0.5)
        _die()

    threading.Thread(target=watch, name="end-with-dvc", daemon=True).start()


def _dvc_process() -> int | None:
    """The DVC process running this stage: the nearest ancestor without this stage's
    DVC_STAGE (a shell that DVC started in between has it too). None when that ancestor is in
    another process group: DVC never moves its commands to another group, so DVC has died and
    the ancestor is the process that adopted its orphans (init, a subreaper)."""
    mark = f"{DVC_STAGE}={os.environ[DVC_STAGE]}".encode()
    try:
        pid = os.getppid()
        while mark in _environment(pid):
            pid = _stat(pid)[0]
        return pid if _stat(pid)[1] == os.getpgrp() else None
    except FileNotFoundError:  # an ancestor ended while we looked
        return None


def _die() -> None:
    """End at once, as the parent-death signal would have (never returns)."""
    os.kill(os.getpid(), signal.SIGKILL)


def _environment(pid: int) -> list[bytes]:
    """The environment process `pid` started with; none if it is another user's."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except PermissionError:
        return []


def _stat(pid: int) -> tuple[int, int]:
    """The parent pid and process group of process `pid` (from /proc/PID/stat)."""
    # The command name, in parentheses, may hold spaces and parentheses: split after the last.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2])
