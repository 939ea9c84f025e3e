"""End to end: the train stage on two gloo processes (train.processes: 2), under DVC, failing,
interrupted, killed, and as two simulated machines meeting through torchrun's c10d rendezvous."""

import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from tests.projects import sh, trained_project, user_env
from tests.test_crashes import after_epoch_1, assert_nothing_outlives, kill_stage, paused_env

pytestmark = pytest.mark.e2e

OUTPUTS = ("models/model.pt", "reports/train/metrics.json")
CURVES = [f"reports/train/plots/metrics/{name}.tsv" for name in ("train_loss", "val_accuracy")]
STAGE_ARGS = [
    "--train",
    "data/processed/train.csv",
    "--val",
    "data/processed/val.csv",
    "--vocab",
    "data/processed/vocab.json",
]


def outputs(project: Path) -> dict[str, bytes]:
    return {name: (project / name).read_bytes() for name in (*OUTPUTS, *CURVES)}


def val_accuracy(project: Path) -> float:
    return yaml.safe_load((project / "reports/train/metrics.json").read_text())["val_accuracy"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """The tiny project trained on one process, then with `dvc exp run -S train.processes=2`."""
    path = trained_project(tmp_path_factory, "dist")
    one = {"outputs": outputs(path), "val_accuracy": val_accuracy(path)}
    log = sh(path, "dvc", "exp", "run", "-S", "train.processes=2", "train")
    return {"path": path, "one": one, "log": log, "two": outputs(path)}


def test_two_processes_under_dvc_log_once_and_write_everything(project):
    path, log = project["path"], project["log"]
    epochs = yaml.safe_load((path / "params.yaml").read_text())["train"]["epochs"]
    assert [line.split()[1] for line in log.splitlines() if line.startswith("epoch ")] == [
        f"{epoch}/{epochs}" for epoch in range(1, epochs + 1)
    ]  # one line per epoch, from rank 0 only
    assert "Traceback" not in log and "Error" not in log
    for name in CURVES:  # dvclive: a header and one row per epoch, written once
        assert len((path / name).read_text().splitlines()) == 1 + epochs
    assert project["two"]["models/model.pt"] != project["one"]["outputs"]["models/model.pt"]
    # Other batches per step, so not the same bits; on these easy rows the same accuracy.
    assert abs(val_accuracy(path) - project["one"]["val_accuracy"]) <= 0.05


def test_two_machines_through_c10d_train_the_same_model_byte_for_byte(project, tmp_path):
    """Two torchrun launches of one process each (`--nnodes 2`), meeting on a local port: the
    second two-process run of these params, it writes the model, metrics and curves of the
    first byte for byte (params.yaml says processes: 2 since the experiment)."""
    path = project["path"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "machines"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        uuid.uuid4().hex,
        "stages/train.py",
        *STAGE_ARGS,
        "--model",
        str(out / "model.pt"),
        "--live-dir",
        str(out / "train"),
    ]
    env = user_env(GLOO_SOCKET_IFNAME="lo")
    machines = [
        subprocess.Popen(command, cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for machine in machines:
        _, stderr = machine.communicate(timeout=120)
        assert machine.returncode == 0, stderr.decode()
    again = {
        "models/model.pt": (out / "model.pt").read_bytes(),
        **{
            name: (out / "train" / Path(name).relative_to("reports/train")).read_bytes()
            for name in ("reports/train/metrics.json", *CURVES)
        },
    }
    assert again == project["two"]


# --- failures ----------------------------------------------------------------------------------


def start_training(
    project: Path, tmp_path: Path, torchrun: bool = False, **env: str
) -> subprocess.Popen:
    """The train stage on two processes for 1000 epochs, writing under tmp_path; started as
    a user would, or by an outer `torchrun --standalone --nproc-per-node 2`."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=1000, processes=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = [sys.executable, *(launcher if torchrun else []), "stages/train.py"]
    out = ["--model", str(tmp_path / "out/model.pt"), "--live-dir", str(tmp_path / "out/train")]
    return subprocess.Popen(
        [*command, "--params", str(tmp_path / "params.yaml"), *STAGE_ARGS, *out],
        cwd=project,
        env=user_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )


def _as_from_a_terminal() -> None:
    # A background test run inherits SIGINT ignored; and a worker crashed by a test leaves
    # no core file in the project.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def workers_of(process: subprocess.Popen) -> list[psutil.Process]:
    """The launcher's two worker processes, once it has started them."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        workers = psutil.Process(process.pid).children(recursive=True)
        if len(workers) == 2:
            return workers
        time.sleep(0.05)
    pytest.fail("the launcher did not start two workers")


def ends_cleanly(process: subprocess.Popen, tmp_path: Path, workers: list, since: float) -> str:
    """Within 30 s: non-zero exit, one `Error:` sentence and no traceback on stderr, no output
    left, no worker left running. Returns the sentence."""
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - since < 30
    assert process.returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    assert workers and not [w for w in workers if w.is_running() and w.status() != "zombie"]
    return lines[0]


def test_an_error_in_one_process_stops_all_of_them(project, tmp_path):
    process = start_training(project["path"], tmp_path, PIPELINE_TEST_FAIL_RANK="1")
    workers = workers_of(process)  # rank 1 fails after its first epoch
    error = ends_cleanly(process, tmp_path, workers, time.monotonic())
    assert "Injected failure on rank 1" in error


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_launcher_stops_every_process(project, tmp_path, sig):
    process = start_training(project["path"], tmp_path)
    workers = workers_of(process)
    assert process.stdout.readline().startswith("epoch   1/1000")  # both are training
    process.send_signal(sig)
    error = ends_cleanly(process, tmp_path, workers, time.monotonic())
    assert sig.name in error


@pytest.mark.parametrize(("rank", "sig"), [(0, signal.SIGKILL), (1, signal.SIGSEGV)])
def test_a_process_killed_or_crashed_is_one_sentence(project, tmp_path, rank, sig):
    """The others lose a peer (gloo raises, with a traceback) or are stopped by the launcher
    (click's "Aborted!"); none of that is shown, only which process died and how."""
    process = start_training(project["path"], tmp_path)
    workers = workers_of(process)
    assert process.stdout.readline().startswith("epoch   1/1000")
    next(w for w in workers if w.environ()["RANK"] == str(rank)).send_signal(sig)
    error = ends_cleanly(process, tmp_path, workers, time.monotonic())
    assert error == (
        f"Error: Training process rank {rank} of 2 was ended by signal {sig.value} ({sig.name}); "
        "the other processes were stopped and nothing was written."
    )


def test_a_bug_in_one_process_keeps_its_traceback(project, tmp_path):
    process = start_training(project["path"], tmp_path, PIPELINE_TEST_BUG_RANK="1")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "Traceback" in stderr and "RuntimeError: Injected bug on rank 1" in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: A training process failed (")


def test_workers_end_with_an_outer_torchrun_killed(project, tmp_path):
    process = start_training(project["path"], tmp_path, torchrun=True)
    workers = workers_of(process)
    assert process.stdout.readline().startswith("epoch   1/1000")
    process.kill()
    assert_nothing_outlives(workers, tmp_path / "out/model.pt", tmp_path / "out/train")


@pytest.mark.parametrize("target", ["stage", "group"])
def test_nothing_outlives_a_killed_stage(project, target):
    """SIGKILL of the launcher, or of DVC's process group (the launcher's workers are in
    sessions of their own), mid-training: nothing runs on, nothing is written after, and the
    rerun writes an uninterrupted run's bytes (curves with one row per epoch)."""
    path = project["path"]
    _, processes = kill_stage(path, "train", after_epoch_1, paused_env(), target)
    assert len(processes) == 3  # the launcher and its two workers
    # Watched for 20 s, as long as the orphans of the report took to write (issue 20).
    assert_nothing_outlives(processes, path / "models/model.pt", path / "reports/train", quiet=20)
    sh(path, "dvc", "repro", "train")
    epochs = yaml.safe_load((path / "params.yaml").read_text())["train"]["epochs"]
    for name in CURVES:  # no rows from a run left over, interleaved with the rerun's
        assert len((path / name).read_text().splitlines()) == 1 + epochs
    assert outputs(path) == project["two"]


FORKING_SHELL = """#!/bin/sh
# Runs the command in a child process, as shells do for a command list (`a && b`).
/bin/sh -c "$2"
exit $?
"""


def test_nothing_outlives_dvc_killed_behind_a_forking_shell(project, tmp_path):
    """DVC runs the command with $SHELL; this one does not exec it, so the launcher is DVC's
    grandchild and DVC's death reaches it through its watcher thread, not the parent-death
    signal. No rerun: the kills above check that, and no later test reads the outputs."""
    shell = tmp_path / "forking-sh"
    shell.write_text(FORKING_SHELL)
    shell.chmod(0o755)
    path = project["path"]
    _, processes = kill_stage(path, "train", after_epoch_1, paused_env(SHELL=str(shell)), "dvc")
    assert len(processes) == 3
    assert_nothing_outlives(processes, path / "models/model.pt", path / "reports/train")
