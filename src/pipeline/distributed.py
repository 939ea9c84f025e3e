"""Data-parallel training on several processes (torch.distributed): launching, joining, ranks.

With `train.processes: 1` none of this does anything: rank 0 of a world of 1. With N > 1 the
train stage starts itself again as N worker processes through torch's elastic launcher (the
code `torchrun --standalone --nproc-per-node N` runs) and waits for them. Each worker joins the
process group, trains on its share of every step's batches, and rank 0 alone writes the
outputs. Under an outer `torchrun` (several machines) the stage is a worker already: it joins.
"""

import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pipeline.errors import PipelineError

# Tests only: the worker of this global rank stops with a user error after its first epoch,
# so that tests can check that the other workers stop too (tests/test_distributed_stage.py).
TEST_FAIL_RANK = "PIPELINE_TEST_FAIL_RANK"


def launched() -> bool:
    """True in a worker that a launcher (torchrun, or launch() below) started."""
    return "WORLD_SIZE" in os.environ


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """The process that writes outputs and prints progress."""
    return rank() == 0


@contextmanager
def process_group(device: torch.device, processes: int) -> Iterator[torch.device]:
    """Join the process group of the workers a launcher started, and yield this worker's
    device (cuda:LOCAL_RANK on GPUs); outside a launcher, yield `device` and do nothing."""
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
    total = tensor.to(device)
    dist.all_reduce(total)
    return total.cpu()


def fail_if_testing(epoch: int) -> None:
    """Tests only (TEST_FAIL_RANK): stop this worker with a user error after epoch 1."""
    if epoch == 1 and os.environ.get(TEST_FAIL_RANK) == str(rank()):
        raise PipelineError(f"Injected failure on rank {rank()} ({TEST_FAIL_RANK}, tests only).")


def launch(processes: int, script: Path, args: list[str]) -> None:
    """Run `python script *args` as `processes` workers on this machine, as `torchrun
    --standalone --nproc-per-node processes` would, and wait for them.

    Workers' stdout (rank 0's progress lines) passes through; their stderr goes to files, and
    this process prints it: rank 0's after a success, one sentence after a failure (the first
    `Error:` line a worker printed, so the other workers' reports of a lost peer stay hidden).
    A failure, or SIGINT / SIGTERM to this process, stops every worker (SIGKILL after 10 s)
    and raises PipelineError.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # gloo takes its address from the host name, which in containers may not be reachable;
    # all workers are on this machine. A user's own setting wins.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
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
            raise PipelineError(_failure(logs, err)) from None
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


def _failure(logs: str, err: Exception) -> str:
    stderr = _stderr(logs)
    for local_rank in sorted(stderr):
        for line in stderr[local_rank].splitlines():
            if line.startswith("Error: "):
                return line.removeprefix("Error: ")
    # Not a user error: a bug or a killed process; show what the failed workers printed.
    failures = getattr(err, "failures", {})
    for global_rank, failure in sorted(failures.items()):
        sys.stderr.write(f"--- rank {global_rank} ---\n{stderr.get(failure.local_rank, '')}")
    codes = ", ".join(f"rank {r} exit code {f.exitcode}" for r, f in sorted(failures.items()))
    return f"A training process failed ({codes}); its output is above."
