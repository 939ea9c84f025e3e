"""End to end: the train stage on two gloo processes (train.processes: 2), under DVC, failing,
interrupted, and as two simulated machines meeting through torchrun's c10d rendezvous."""

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

from tests.test_e2e import make_project, sh, user_env

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
    path = make_project(tmp_path_factory.mktemp("dist") / "project", ["Physics", "Maths", "Art"])
    sh(path, "dvc", "repro", "train")
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


def start_training(project: Path, tmp_path: Path, **env: str) -> subprocess.Popen:
    """The train stage on two processes for 1000 epochs, writing under tmp_path."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=1000, processes=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, "stages/train.py", "--params", str(tmp_path / "params.yaml")]
    out = ["--model", str(tmp_path / "out/model.pt"), "--live-dir", str(tmp_path / "out/train")]
    return subprocess.Popen(
        [*command, *STAGE_ARGS, *out],
        cwd=project,
        env=user_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal (a background test run inherits SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


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
