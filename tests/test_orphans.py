"""pipeline.distributed.end_with_starter on its own (issue 20): which processes it ties to the
process that started them, and that one whose starter is already gone by the time it sets its
guard ends at once (the race the parent-death signal alone leaves open). The kills themselves,
under DVC, are in tests/test_distributed_stage.py and tests/test_crashes.py."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.distributed import DVC_STAGE, LAUNCHER_PID

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a Linux guard")

# Sets the guard, then prints the parent-death signal it left (prctl PR_GET_PDEATHSIG = 2)
# and how many threads run (2: a watcher thread as well).
PROBE = """
import ctypes, threading
from pipeline import distributed
distributed.end_with_starter()
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
print(sig.value, threading.active_count())
"""
KILL = signal.SIGKILL.value


def probe(env: dict[str, str], shell: bool = False, **popen) -> subprocess.CompletedProcess:
    """Run PROBE as a child of this test process (which plays the launcher, or DVC), with
    `env` added to an environment free of launchers' and DVC's variables; through a shell that
    forks it (not exec) with `shell`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", DVC_STAGE)}
    command = [sys.executable, "-c", PROBE]
    if shell:
        command = ["/bin/sh", "-c", '"$0" -c "$1"; exit $?', sys.executable, PROBE]
    return subprocess.run(
        command, env={**clean, **env}, capture_output=True, text=True, timeout=60, **popen
    )


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_run_by_hand_is_left_be():
    done = probe({})
    assert (done.returncode, done.stdout) == (0, "0 1\n"), done.stderr


def test_a_worker_gets_the_parent_death_signal():
    done = probe({"WORLD_SIZE": "2", LAUNCHER_PID: str(os.getpid())})
    assert (done.returncode, done.stdout) == (0, f"{KILL} 1\n"), done.stderr


def test_a_worker_of_an_outer_torchrun_gets_the_parent_death_signal():
    done = probe({"WORLD_SIZE": "2"})
    assert (done.returncode, done.stdout) == (0, f"{KILL} 1\n"), done.stderr


def test_a_worker_whose_launcher_is_already_gone_ends_at_once():
    """Its parent is not the launcher of LAUNCHER_PID: the launcher died and another process
    adopted the worker before it set its guard."""
    done = probe({"WORLD_SIZE": "2", LAUNCHER_PID: str(dead_pid())})
    assert (done.returncode, done.stdout) == (-signal.SIGKILL, "")


def test_a_stage_dvc_runs_gets_the_parent_death_signal():
    done = probe({DVC_STAGE: "train"})
    assert (done.returncode, done.stdout) == (0, f"{KILL} 1\n"), done.stderr


def test_a_stage_whose_dvc_is_already_gone_ends_at_once():
    """Its parent is in another process group, as the process that adopts DVC's orphans is:
    DVC never moves its commands out of its own group."""
    done = probe({DVC_STAGE: "train"}, start_new_session=True)
    assert (done.returncode, done.stdout) == (-signal.SIGKILL, "")


def test_a_stage_behind_a_forking_shell_is_watched_by_a_thread():
    """DVC (this process) is the grandchild's ancestor, not its parent: no parent-death signal
    (the shell's death would fire it, not DVC's) but a thread that waits for DVC to end."""
    done = probe({DVC_STAGE: "train"}, shell=True)
    assert (done.returncode, done.stdout) == (0, "0 2\n"), done.stderr


# A parent that starts `sleep` from a thread, as the tuning study starts a trial's run, prints
# the child's pid, and waits.
PARENT = """
import subprocess, sys, threading, time
from pipeline import distributed
def start():
    child = subprocess.Popen(["sleep", "120"], preexec_fn=distributed.dies_with_this_process())
    print(child.pid, flush=True)
    child.wait()
threading.Thread(target=start).start()
time.sleep(120)
"""


def test_a_child_started_with_dies_with_this_process_ends_when_its_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = None
    try:
        child = int(parent.stdout.readline())
        os.kill(parent.pid, KILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        for pid in (parent.pid, child):
            if pid is not None and alive(pid):
                os.kill(pid, KILL)
        parent.wait(timeout=10)


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed child of init is reaped at once; of ours, when waited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
