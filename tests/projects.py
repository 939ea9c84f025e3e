"""Temporary DVC projects for the end-to-end tests: this repository's pipeline in a fresh git
repo on a tiny CSV, the commands run in it as a user's shell runs them, and one trained project
that every test file copies instead of training its own."""

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY, write_csv


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: the venv's bin first on PATH (so DVC's `python
    stages/...` is the interpreter running the tests) and Python writing bytecode, as it does
    unless told not to (our own machines tell it not to, which would hide stale stages)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def sh(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a command in the project; fail the test with its output if it fails."""
    result = subprocess.run(
        args, cwd=project, env=env or user_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def wait_for_queue(project: Path, env: dict[str, str] | None = None, limit: float = 300) -> str:
    """`dvc queue status` once nothing is queued or running any more."""
    deadline = time.monotonic() + limit
    while True:
        status = sh(project, "dvc", "queue", "status", env=env)
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(4)  # each `dvc queue status` costs a second of CPU the workers want


def make_project(
    path: Path, labels: list[str], text_column: str = "question", label_column: str = "subject"
) -> Path:
    """A git repo holding this project's pipeline, a tiny CSV and tiny-model params."""
    path.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    for folder in ("stages", "src", "models/sources"):
        shutil.copytree(
            ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    write_csv(path / "data" / "raw" / "rows.csv", labels, 24, text_column, label_column)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["data"] = {
        "raw": "data/raw/rows.csv",
        "text_column": text_column,
        "label_column": label_column,
    }
    for section, values in TINY.items():
        params[section].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "config", "user.name", "Test")
    sh(path, "git", "config", "user.email", "test@example.com")
    sh(path, "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", path / ".dvc" / "config")  # plots.html_template
    sh(path, "dvc", "config", "core.analytics", "false")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-q", "-m", "project")
    return path


TRAINED_LABELS = ["Physics", "Chemistry", "Maths", "Biology"]


def trained_project(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A copy of one project (`make_project` on TRAINED_LABELS) after `dvc repro`, its results
    committed. The original is trained once per test run, by whichever xdist worker asks first
    (the others wait on a lock): each tiny repro costs about 17 s of CI's CPU."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one per run
    template = shared / "trained-template"
    with open(shared / "trained-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.is_dir():
            # Built aside and renamed when done: a build that fails leaves no template behind.
            building = shared / "trained-template.building"
            shutil.rmtree(building, ignore_errors=True)
            make_project(building, TRAINED_LABELS)
            sh(building, "dvc", "repro")
            sh(building, "git", "add", "-A")
            sh(building, "git", "commit", "-q", "-m", "repro")
            building.rename(template)
    copy = tmp_path_factory.mktemp(name) / "project"
    # DVC's state and locks stay behind: they describe the original's files, not the copy's.
    dvc_dir = template / ".dvc"
    shutil.copytree(
        template, copy, symlinks=True, ignore=lambda d, _: ["tmp"] if Path(d) == dvc_dir else []
    )
    return copy
