"""Stages run the code DVC hashed, and running Python never makes them stale.

On a user's machine Python writes bytecode (`__pycache__/`) next to the modules it imports,
and the package is usually installed with `pip install -e .` from the workspace. Neither may
change what DVC considers the stage's code, nor which code a stage runs.
"""

import json
import shutil
from pathlib import Path

import pytest

from tests.projects import sh, trained_project, user_env, wait_for_queue

pytestmark = pytest.mark.e2e

# Appended to evaluation.py (which imports write_json; of the stages, evaluate and baseline
# import it, so an edit reruns two stages, not all): every metrics.json it writes then carries
# the mark, so a test can tell which copy of the library wrote it.
MARK = """

_write_json_unmarked = write_json


def write_json(path, payload):
    if isinstance(payload, dict) and "accuracy" in payload:
        payload = {{**payload, "code_mark": {mark}}}
    _write_json_unmarked(path, payload)
"""


def mark_library(src: Path, mark: int) -> None:
    marked = src / "pipeline" / "evaluation.py"
    marked.write_text(marked.read_text() + MARK.format(mark=mark))


def code_mark(project: Path) -> int | None:
    return json.loads((project / "reports/eval/metrics.json").read_text()).get("code_mark")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project after `dvc repro`, run as a user runs it (bytecode written, no PYTHONPATH)."""
    return trained_project(tmp_path_factory, "worktree")


def test_bytecode_written_by_stages_and_commands_leaves_the_pipeline_up_to_date(project):
    # Bytecode was written (otherwise this test would prove nothing) ...
    assert list((project / "src" / "pipeline" / "__pycache__").glob("*.pyc"))
    assert "up to date" in sh(project, "dvc", "status")
    # ... and so it is by predict and by anything that imports or compiles the library.
    sh(project, "python", "stages/predict.py", "physics1 physics2")
    sh(project, "python", "-m", "compileall", "-q", "src", "stages")
    assert "up to date" in sh(project, "dvc", "status")
    assert "Running stage" not in sh(project, "dvc", "repro")


def test_queued_experiment_runs_its_committed_code_not_the_workspace(tmp_path_factory):
    project = trained_project(tmp_path_factory, "queued_code")
    mark_library(project / "src", 1)
    sh(project, "git", "commit", "-q", "-am", "library marked 1")
    sh(project, "dvc", "exp", "run", "--queue", "-S", "train.epochs=2", "-n", "committed-code")
    # After queuing, the workspace's library changes without a commit; and, as with
    # `pip install -e .`, the workspace's src/ is what `import pipeline` finds by default.
    mark_library(project / "src", 2)
    env = user_env(PYTHONPATH=str(project / "src"))
    sh(project, "dvc", "queue", "start", env=env)
    status = wait_for_queue(project, env)
    assert "Success" in status and "Failed" not in status, status
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    runs = {
        run["name"]: run["data"]["metrics"]["reports/eval/metrics.json"]["data"]
        for rev in shown
        for exp in rev.get("experiments") or []
        for run in exp["revs"]
    }
    assert runs["committed-code"]["code_mark"] == 1


def test_repro_runs_the_workspace_library_not_an_installed_copy(project, tmp_path):
    installed = tmp_path / "site-packages"
    shutil.copytree(project / "src", installed)
    # What a non-editable `pip install .` would have copied, first on the path.
    mark_library(installed, 3)
    env = user_env(PYTHONPATH=str(installed))
    assert code_mark(project) is None
    mark_library(project / "src", 2)  # a workspace edit...
    status = sh(project, "dvc", "status", env=env)
    assert "src/pipeline/evaluation.py" in status
    out = sh(project, "dvc", "repro", env=env)  # ...is what reruns, and what runs
    assert "Running stage 'evaluate'" in out
    assert code_mark(project) == 2
