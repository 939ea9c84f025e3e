"""Experiments run in parallel through the queue, and shared between machines through git."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_e2e import make_project, sh, user_env, wait_for_queue

pytestmark = pytest.mark.e2e

LABELS = ["Physics", "Chemistry", "Maths"]


def experiments(project: Path) -> dict[str, dict]:
    """Each experiment's name -> its data (params, metrics) from `dvc exp show --json`."""
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    return {
        run["name"]: run["data"]
        for rev in shown
        for exp in rev.get("experiments") or []
        for run in exp["revs"]
    }


def eval_metrics(data: dict) -> dict:
    return data["metrics"]["reports/eval/metrics.json"]["data"]


def start_queue(project: Path, env: dict[str, str], jobs: int) -> str:
    """`dvc queue start -j JOBS`, with its output in a file: the workers it detaches inherit
    its stdout and stderr, so reading them through a pipe (as `sh` does) would wait for the
    workers to finish and hide that the command returns at once."""
    log = project.parent / "queue-start.log"
    with log.open("w") as out:
        result = subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert result.returncode == 0, log.read_text()
    return log.read_text()


def wait_for_workers_to_leave(project: Path, env: dict[str, str], limit: float = 60) -> None:
    """Idle workers leave by themselves once the queue is empty."""
    deadline = time.monotonic() + limit
    while "0 active, 0 idle" not in (status := sh(project, "dvc", "queue", "status", env=env)):
        assert time.monotonic() < deadline, status
        time.sleep(1)


def test_four_queued_experiments_on_two_workers_all_succeed(tmp_path):
    project = make_project(tmp_path / "project", LABELS)
    # Commit the pipeline's outputs first: each experiment then reruns train + evaluate only.
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "repro")
    rates = [0.0003, 0.001, 0.003, 0.01]
    sh(project, "dvc", "exp", "run", "--queue", "-S", f"train.lr={','.join(map(str, rates))}")
    env = user_env()
    assert "Started '2' new" in start_queue(project, env, jobs=2)  # returns before they finish
    status = wait_for_queue(project, env)
    assert status.count("Success") == 4 and "Failed" not in status, status
    by_rate = {
        data["params"]["params.yaml"]["data"]["train"]["lr"]: data
        for data in experiments(project).values()
    }
    assert set(rates) <= set(by_rate), by_rate.keys()
    for rate in rates:
        assert 0.0 <= eval_metrics(by_rate[rate])["accuracy"] <= 1.0
    # Their own metrics: four learning rates, four validation losses.
    losses = {
        by_rate[rate]["metrics"]["reports/train/metrics.json"]["data"]["val_loss"] for rate in rates
    }
    assert len(losses) == 4, by_rate
    wait_for_workers_to_leave(project, env)


def test_exp_push_from_one_clone_and_pull_into_another(tmp_path):
    origin = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    a = make_project(tmp_path / "a", LABELS)
    sh(a, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"))
    sh(a, "git", "commit", "-q", "-am", "DVC remote")
    sh(a, "git", "remote", "add", "origin", str(origin))
    sh(a, "git", "push", "-q", "origin", "main")

    sh(a, "dvc", "exp", "run", "-S", "train.lr=0.003", "-n", "shared-exp")
    sh(a, "dvc", "exp", "push", "origin", "shared-exp")  # the git ref, and its data to the remote
    model_a = (a / "models" / "model.pt").read_bytes()
    metrics_a = eval_metrics(experiments(a)["shared-exp"])

    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(b))
    sh(b, "dvc", "exp", "pull", "origin", "shared-exp")
    runs = experiments(b)
    assert "shared-exp" in runs, runs.keys()
    assert runs["shared-exp"]["params"]["params.yaml"]["data"]["train"]["lr"] == 0.003
    assert eval_metrics(runs["shared-exp"]) == metrics_a
    sh(b, "dvc", "exp", "apply", "shared-exp")
    sh(b, "dvc", "pull")
    assert (b / "models" / "model.pt").read_bytes() == model_a
    assert "up to date" in sh(b, "dvc", "status")
