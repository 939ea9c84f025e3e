"""A stage killed with SIGKILL (no handler runs: the OOM killer, a power cut) leaves nothing that
the next `dvc repro` trips on: it reruns what is missing, its results equal an uninterrupted
run's, and no temporary file stays anywhere in the repository (issue 15). A SIGKILL of DVC
alone ends the stage too, which then writes nothing more (issue 20)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pipeline.distributed import TEST_PAUSE_S
from pipeline.files import atomic_write_text
from tests.projects import sh, trained_project, user_env

OUTPUTS = (
    "data/interim/clean.csv",
    "models/model.pt",
    "reports/train/metrics.json",
    "reports/eval/metrics.json",
    "reports/eval/confusion.csv",
)
# After the killed stage's processes are gone, how long its outputs are watched for a write.
# A process left running would write its curves after every epoch (0.1-0.3 s here).
QUIET = 3


def stage_pids(project: Path, stage: str) -> list[int]:
    """Processes running `python stages/<stage>.py` in `project` (the stage DVC started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if f"stages/{stage}.py".encode() in argv and Path(cwd) == project:
            pids.append(int(entry.name))
    return pids


def temp_files(project: Path) -> list[str]:
    """Temporary files anywhere in the project (DVC's own .dvc/tmp aside) and what git sees."""
    found = [
        str(path.relative_to(project))
        for path in project.rglob("*")
        if (path.name.endswith(".tmp") or ".tmp." in path.name)
        and ".dvc/tmp" not in path.as_posix()
        and ".git/" not in path.as_posix()
    ]
    status = sh(project, "git", "status", "--porcelain", "--ignored")
    return found + [line for line in status.splitlines() if ".tmp" in line]


def stage_processes(project: Path, stage: str) -> list[psutil.Process]:
    """The stage's process and its descendants (the workers of train.processes N > 1)."""
    processes = []
    for pid in stage_pids(project, stage):
        try:
            process = psutil.Process(pid)
            processes += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return processes


def held_temporary_files(project: Path) -> list[Path]:
    """atomic_path's temporary files in the project, DVC's own aside. os.walk, not rglob,
    which fails on a folder that DVC removes as it looks (a stage's outputs, as it starts)."""
    return [
        Path(folder, name)
        for folder, _, names in os.walk(project)
        if ".dvc" not in Path(folder).relative_to(project).parts
        for name in names
        if name.startswith(".") and name.endswith(".tmp")
    ]


def kill_stage(
    project: Path, stage: str, when, env: dict[str, str], target: str = "stage"
) -> tuple[str, list[psutil.Process]]:
    """Start `dvc repro -f -s <stage>` and SIGKILL `target` once `when(line)` is true for a line
    of its output (or, with when=None, once an atomic_path temporary file exists): "stage" the
    stage's process, "dvc" DVC alone, "group" DVC's process group (DVC runs in a session of
    its own, as under `setsid`). Return DVC's output and the stage's processes at the kill.
    The repro must fail."""
    proc = subprocess.Popen(
        ["dvc", "repro", "-f", "-s", stage],
        cwd=project,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    deadline = time.monotonic() + 60
    try:
        if when is not None:
            for line in proc.stdout:
                output.append(line)
                if when(line):
                    break
        else:
            while not held_temporary_files(project):
                assert time.monotonic() < deadline and proc.poll() is None, "no temporary file"
                time.sleep(0.02)
        processes = stage_processes(project, stage)
        assert processes, "".join(output)
        if target == "stage":
            for pid in stage_pids(project, stage):
                os.kill(pid, signal.SIGKILL)
        elif target == "dvc":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output.append(rest)
    assert proc.returncode != 0, "".join(output)
    return "".join(output), processes


def assert_nothing_outlives(
    processes: list[psutil.Process], model: Path, live_dir: Path, quiet: float = QUIET
) -> None:
    """Within 10 s of the kill none of the training processes runs any more; then, for `quiet`
    seconds, no file beside `model` or in `live_dir` changes; the killed run never wrote
    `model` (it was killed after its first epoch). Ends any left, so as not to upset later
    tests."""
    try:
        deadline = time.monotonic() + 10
        while running := [p.pid for p in processes if _running(p)]:
            assert time.monotonic() < deadline, f"still running 10 s after the kill: {running}"
            time.sleep(0.05)
        before = _files(model.parent, live_dir)
        time.sleep(quiet)
        assert _files(model.parent, live_dir) == before
        assert not model.exists()
    finally:
        for process in processes:
            if _running(process):
                process.kill()


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _files(*folders: Path) -> dict[Path, tuple[int, int, int]]:
    """(inode, mtime, size) of every file in `folders`."""
    files = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                files[path] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return files


def after_epoch_1(line: str) -> bool:
    return line.startswith("epoch   1/")


def paused_env(**extra: str) -> dict[str, str]:
    """A user's environment in which training sleeps 30 s after epoch 1's report, so that a
    kill on seeing that report lands mid-training however fast the machine is (a run killed
    too late would write the model, a guard that failed would let it)."""
    return user_env(**{TEST_PAUSE_S: "30"}, **extra)


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A project after an uninterrupted `dvc repro`, and its outputs' bytes."""
    project = trained_project(tmp_path_factory, "crash")
    return project, {name: (project / name).read_bytes() for name in OUTPUTS}


def check_rerun(project: Path, expected: dict[str, bytes]) -> None:
    sh(project, "dvc", "repro")
    assert json.loads(sh(project, "dvc", "status", "--json")) == {}
    for name, data in expected.items():
        assert (project / name).read_bytes() == data, name
    assert temp_files(project) == []


def test_a_write_removes_temporary_files_a_killed_write_left(tmp_path):
    stale = [tmp_path / ".out.csv.k3x_9q2w.tmp", tmp_path / ".out.csv.abcdefgh.tmp"]
    kept = [tmp_path / ".out.csv.tmp", tmp_path / ".other.csv.abcdefgh.tmp", tmp_path / "x.tmp"]
    for path in stale + kept:
        path.write_text("partial")
    atomic_write_text(tmp_path / "out.csv", "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.csv"] + [p.name for p in kept]
    )


@pytest.mark.e2e
def test_train_killed_mid_epoch(done):
    project, expected = done
    output, _ = kill_stage(project, "train", after_epoch_1, paused_env())
    assert "epoch   2/" not in output
    check_rerun(project, expected)


@pytest.mark.e2e
def test_train_ends_with_dvc_killed_alone(done):
    """DVC's usual shell execs the stage's command: the stage is DVC's child, and its
    parent-death signal ends it (pipeline.distributed.end_with_starter)."""
    project, expected = done
    _, processes = kill_stage(project, "train", after_epoch_1, paused_env(), target="dvc")
    assert_nothing_outlives(processes, project / "models/model.pt", project / "reports/train")
    check_rerun(project, expected)


@pytest.mark.e2e
@pytest.mark.parametrize("stage", ["train", "evaluate", "clean"])
def test_killed_while_writing_an_output(done, stage):
    """Killed between writing an output's temporary file and renaming it (held there by the
    PIPELINE_TEST_HOLD_TMP hook of pipeline.files.atomic_path)."""
    project, expected = done
    kill_stage(project, stage, None, user_env(PIPELINE_TEST_HOLD_TMP="30"))
    check_rerun(project, expected)


@pytest.mark.e2e
def test_two_repros_at_once_one_runs_the_other_stops_on_dvcs_lock(done):
    project, expected = done
    first = subprocess.Popen(
        ["dvc", "repro", "-f", "-s", "train"],
        cwd=project,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not stage_pids(project, "train"):  # the first holds the lock once it trains
            assert time.monotonic() < deadline and first.poll() is None, "train did not start"
            time.sleep(0.05)
        second = subprocess.run(
            ["dvc", "repro", "-f", "-s", "train"],
            cwd=project,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        first_output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    stopped = second.stdout + second.stderr
    # DVC's own messages: its repository lock, or (while a stage runs, when DVC has let the
    # repository lock go) its lock on the stage's outputs.
    locked = ("Unable to acquire lock", "is busy, it is being blocked by")
    assert second.returncode != 0 and any(m in stopped for m in locked), stopped
    assert "Traceback" not in stopped and "epoch" not in stopped  # it never started the stage
    assert first.returncode == 0, first_output
    check_rerun(project, expected)  # nothing corrupted: the same bytes, nothing left over
