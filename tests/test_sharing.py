"""Experiments run in parallel through the queue, compared and diffed, and shared between
machines through git."""

import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.projects import sh, trained_project, user_env, wait_for_queue

pytestmark = pytest.mark.e2e

SEEDS = [42, 43]
ENCODINGS = ["learned", "none"]
EVAL, TRAIN = "reports/eval/metrics.json", "reports/train/metrics.json"


def experiment_runs(project: Path) -> dict[str, dict]:
    """Each experiment's name -> its run in `dvc exp show --json`: its commit (`rev`) and its
    data (params, metrics)."""
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    return {
        run["name"]: run
        for rev in shown
        for exp in rev.get("experiments") or []
        for run in exp["revs"]
    }


def experiments(project: Path) -> dict[str, dict]:
    """Each experiment's name -> its data (params, metrics)."""
    return {name: run["data"] for name, run in experiment_runs(project).items()}


def params(data: dict) -> dict:
    return data["params"]["params.yaml"]["data"]


def eval_metrics(data: dict) -> dict:
    return data["metrics"][EVAL]["data"]


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


@pytest.fixture(scope="module")
def queued_study(tmp_path_factory) -> tuple[Path, str, str]:
    """One queued study for the tests below (each run of the queue costs CI a minute): 2 seeds
    x 2 encodings on two workers, and one experiment that fails. Returns the project, what
    `dvc queue start` said and the queue's status once it is done."""
    # The pipeline's outputs are committed: each experiment reruns train + evaluate only.
    project = trained_project(tmp_path_factory, "queue")
    seeds = ",".join(map(str, SEEDS))
    encodings = f"model.pos_encoding={','.join(ENCODINGS)}"
    sh(project, "dvc", "exp", "run", "--queue", "-S", f"train.seed={seeds}", "-S", encodings)
    # d_model 16 is not divisible by 3 heads: the train stage refuses it.
    sh(project, "dvc", "exp", "run", "--queue", "-S", "model.num_heads=3", "-n", "bad-heads")
    env = user_env()
    started = start_queue(project, env, jobs=2)
    return project, started, wait_for_queue(project, env)


def test_queued_experiments_run_on_two_workers_each_with_its_own_params(queued_study):
    project, started, status = queued_study
    assert "Started '2' new" in started  # returns before they finish
    assert status.count("Success") == 4 and status.count("Failed") == 1, status
    runs = {}
    for name, data in experiments(project).items():
        if name != "bad-heads":
            train, model = params(data)["train"], params(data)["model"]
            runs[train["seed"], model["pos_encoding"]] = data
    grid = {(seed, encoding) for seed in SEEDS for encoding in ENCODINGS}
    assert grid <= set(runs), runs.keys()
    for run in grid:
        assert 0.0 <= eval_metrics(runs[run])["accuracy"] <= 1.0
    # Their own metrics: four runs, four validation losses.
    losses = {runs[run]["metrics"][TRAIN]["data"]["val_loss"] for run in grid}
    assert len(losses) == 4, runs
    wait_for_workers_to_leave(project, user_env())


def test_compare_averages_each_queued_experiments_own_metrics(queued_study, tmp_path):
    project = queued_study[0]
    done = subprocess.run(
        [sys.executable, "stages/compare.py", "--over", "train.seed", "--format", "json"],
        cwd=project,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "left out, no results of their own: bad-heads (failed)" in done.stderr
    result = json.loads(done.stdout)
    groups = {g["group"]: g for g in result["groups"]}
    # Each run's own metrics file, from its commit (main's: the workspace's, untouched).
    revs = {name: run["rev"] for name, run in experiment_runs(project).items()}
    files = {
        run["name"]: json.loads(
            (project / EVAL).read_text()
            if run["name"] == "main"
            else sh(project, "git", "show", f"{revs[run['name']]}:{EVAL}")
        )
        for group in groups.values()
        for run in group["runs"]
    }
    assert sorted(groups) == ["model.pos_encoding=learned", "model.pos_encoding=none"]
    for group in groups.values():
        # main is seed 42 learned: its copy from the queue is counted once.
        assert sorted(run["train.seed"] for run in group["runs"]) == SEEDS
        for metric in ("accuracy", "accuracy_transformer_only", "accuracy_ngrams_only"):
            values = [files[run["name"]][metric] for run in group["runs"]]
            stat = group["metrics"][metric]
            assert stat["n"] == 2
            assert stat["mean"] == pytest.approx(statistics.mean(values))
            assert stat["sd"] == pytest.approx(statistics.stdev(values))
    assert "main" in [run["name"] for run in groups["model.pos_encoding=learned"]["runs"]]
    # The plot is where the help says, and `dvc plots show` draws it.
    sh(project, "dvc", "plots", "show", "reports/compare/compare.png", "-o", str(tmp_path / "p"))
    assert "compare" in (tmp_path / "p" / "index.html").read_text()


def test_plots_diff_of_two_queued_experiments(queued_study, tmp_path):
    project = queued_study[0]
    named = {
        name: params(data)["train"]["seed"]
        for name, data in experiments(project).items()
        if name != "bad-heads" and params(data)["model"]["pos_encoding"] == "none"
    }
    first, second = sorted(named)
    assert {named[first], named[second]} == set(SEEDS), named
    sh(project, "dvc", "plots", "diff", first, second, "-o", str(tmp_path / "diff"))
    html = (tmp_path / "diff" / "index.html").read_text()
    assert first in html and second in html


def test_exp_push_from_one_clone_and_pull_into_another(queued_study, tmp_path):
    """One of the study's experiments reaches another clone: its git ref through a git remote,
    its outputs through a DVC remote. Each clone names the DVC remote in its own config.local,
    so the study's project keeps its commit (its experiments stay HEAD's)."""
    a = queued_study[0]
    runs_a = experiment_runs(a)
    name = next(name for name in runs_a if name != "bad-heads")
    lock = yaml.safe_load(sh(a, "git", "show", f"{runs_a[name]['rev']}:dvc.lock"))
    made = {out["path"]: out["md5"] for out in lock["stages"]["train"]["outs"]}["models/model.pt"]
    origin = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    sh(a, "git", "remote", "add", "origin", str(origin))
    sh(a, "git", "push", "-q", "origin", "main")
    sh(a, "dvc", "remote", "add", "--local", "-d", "shared", str(tmp_path / "dvc-remote"))
    sh(a, "dvc", "exp", "push", "origin", name)  # the git ref, and its data to the remote

    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(b))
    sh(b, "dvc", "remote", "add", "--local", "-d", "shared", str(tmp_path / "dvc-remote"))
    sh(b, "dvc", "exp", "pull", "origin", name)
    runs = experiments(b)
    assert name in runs, runs.keys()
    assert params(runs[name]) == params(runs_a[name]["data"])
    assert eval_metrics(runs[name]) == eval_metrics(runs_a[name]["data"])
    sh(b, "dvc", "exp", "apply", name)
    sh(b, "dvc", "pull")
    # The model is the bytes the experiment made.
    assert hashlib.md5((b / "models" / "model.pt").read_bytes()).hexdigest() == made
    assert "up to date" in sh(b, "dvc", "status")
