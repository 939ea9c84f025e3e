"""The stage commands themselves, run as a user runs them: bad input gives one sentence."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, write_csv


def run_stage(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_params(tmp_path: Path, **changes: dict) -> Path:
    """The repo's params.yaml with some keys of some sections replaced."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in changes.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_one_sentence(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def clean_args(raw: Path, tmp_path: Path) -> list[str]:
    return [
        "--input",
        str(raw),
        "--output",
        str(tmp_path / "out" / "clean.csv"),
        "--report",
        str(tmp_path / "out" / "clean.json"),
    ]


@pytest.mark.parametrize(
    "stage", ["clean", "split", "vocab", "train", "evaluate", "baseline", "predict"]
)
def test_every_stage_documents_its_options(stage, tmp_path):
    result = run_stage(stage, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--help" in result.stdout and "Usage:" in result.stdout
    assert result.stdout.count("--") >= 3


def test_missing_raw_file(tmp_path):
    write_params(tmp_path)
    result = run_stage("clean", *clean_args(tmp_path / "nope.csv", tmp_path), cwd=tmp_path)
    assert_one_sentence(result, "nope.csv", "does not exist")
    assert not (tmp_path / "out").exists()


def test_missing_column_names_the_columns_that_exist(tmp_path):
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, text_column="body", label_column="topic")
    write_params(tmp_path)  # still asks for question/subject
    result = run_stage("clean", *clean_args(raw, tmp_path), cwd=tmp_path)
    assert_one_sentence(result, "'question'", "body, topic")
    assert not (tmp_path / "out").exists()


def test_bad_learning_rate_is_rejected_before_any_work(tmp_path):
    raw = write_csv(
        tmp_path / "raw.csv", ["A", "B"], 5, text_column="question", label_column="subject"
    )
    write_params(tmp_path, train={"lr": "fast"})
    result = run_stage("clean", *clean_args(raw, tmp_path), cwd=tmp_path)
    assert_one_sentence(result, "train.lr", "fast")
    assert not (tmp_path / "out").exists()


def test_clean_writes_table_and_report(tmp_path):
    raw = write_csv(
        tmp_path / "raw.csv", ["A", "B"], 5, text_column="question", label_column="subject"
    )
    write_params(tmp_path)
    result = run_stage("clean", *clean_args(raw, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10 rows in, 10 out" in result.stdout
    assert (tmp_path / "out" / "clean.csv").read_text().startswith("text,label\n")
