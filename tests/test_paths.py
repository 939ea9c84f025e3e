"""data.raw may name any file: spaces, quotes, `$`, `&`, `;`, parentheses and backticks reach
the clean stage as written, because dvc.yaml passes no user path through the shell (clean.py
reads data.raw from params.yaml itself) and DVC hashes `${data.raw}` as a dependency."""

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_csv
from tests.projects import make_project, sh
from tests.test_stages import assert_one_sentence, run_stage, write_params

pytestmark = pytest.mark.e2e

LABELS = ["Physics", "Chemistry"]

# Each would break `--input ${data.raw}` in a shell command, quoted or not.
NAMES = [
    "data/raw/my questions.csv",
    'data/raw/it\'s a "quoted" name.csv',
    "data/raw/$HOME ${data.raw} $(touch pwned).csv",
    "data/raw/a & b; c (1) `touch pwned` | d.csv",
    "data/raw files/new rows.csv",
]


def set_raw(project: Path, raw: str) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["data"]["raw"] = raw
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def rows_in(project: Path) -> int:
    return json.loads((project / "reports" / "clean.json").read_text(encoding="utf-8"))["rows_in"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("paths") / "project", LABELS)


@pytest.mark.parametrize("raw", NAMES, ids=range(len(NAMES)))
def test_dvc_repro_clean_reads_data_raw_whatever_its_name(project, raw):
    # Another row count for each name, so the report shows which file was read.
    rows_per_label = 3 + NAMES.index(raw)
    write_csv(project / raw, LABELS, rows_per_label, "question", "subject")
    set_raw(project, raw)
    out = sh(project, "dvc", "repro", "clean")
    assert "Running stage 'clean'" in out
    assert rows_in(project) == rows_per_label * len(LABELS)
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    assert raw in [dep["path"] for dep in lock["stages"]["clean"]["deps"]]
    assert "up to date" in sh(project, "dvc", "status", "clean")
    assert not list(project.rglob("pwned"))  # nothing in the name ran as a command


def test_dvc_repro_clean_reruns_when_the_raw_file_changes(project):
    raw = NAMES[0]
    write_csv(project / raw, LABELS, 9, "question", "subject")
    set_raw(project, raw)
    sh(project, "dvc", "repro", "clean")
    write_csv(project / raw, LABELS, 10, "question", "subject")
    assert "Running stage 'clean'" in sh(project, "dvc", "repro", "clean")
    assert rows_in(project) == 20


def test_dvc_exp_run_set_data_raw_to_a_path_with_a_space(project):
    """The reported command: `dvc exp run -S 'data.raw=data/raw/my questions.csv'`."""
    raw = "data/raw/more questions.csv"
    write_csv(project / raw, LABELS, 4, "question", "subject")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "a raw file with a space")
    sh(project, "dvc", "exp", "run", "clean", "-S", f"data.raw={raw}")
    assert rows_in(project) == 8
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    assert params["data"]["raw"] == raw


# --- clean.py by hand, without DVC --------------------------------------------------------


def test_clean_without_input_reads_data_raw(tmp_path):
    raw = tmp_path / "my data" / "it's (new) $x.csv"
    write_csv(raw, LABELS, 3, "question", "subject")
    write_params(tmp_path, data={"raw": str(raw.relative_to(tmp_path))})
    result = run_stage("clean", "--output", "clean.csv", "--report", "clean.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "clean.json").read_text(encoding="utf-8"))["rows_in"] == 6


def test_clean_input_overrides_data_raw(tmp_path):
    write_params(tmp_path, data={"raw": "nowhere.csv"})
    raw = write_csv(tmp_path / "by hand.csv", LABELS, 2, "question", "subject")
    args = ["--input", str(raw), "--output", "clean.csv", "--report", "clean.json"]
    result = run_stage("clean", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "clean.json").read_text(encoding="utf-8"))["rows_in"] == 4


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([], ["missing file.csv", "does not exist", "check data.raw in params.yaml"]),
        (["--input", "other file.csv"], ["other file.csv", "does not exist", "--input"]),
    ],
    ids=["data-raw", "input"],
)
def test_a_missing_raw_file_names_the_setting_to_fix(tmp_path, args, fragments):
    write_params(tmp_path, data={"raw": "missing file.csv"})
    result = run_stage(
        "clean", *args, "--output", "clean.csv", "--report", "clean.json", cwd=tmp_path
    )
    assert_one_sentence(result, *fragments)
    assert not (tmp_path / "clean.csv").exists()
