"""The predict command as a user runs it: texts as arguments, on stdin or in a CSV."""

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from pipeline.checkpoint import save_checkpoint
from tests.conftest import ROOT
from tests.test_checkpoint import make_checkpoint

TEXTS = ["What is a force?", "Balance Fe + O2", "Name the parts of a cell."]
LABELS = {"A", "B", "C"}  # the labels make_checkpoint's model knows


@pytest.fixture
def model(tmp_path, params) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    return path


def predict(model: Path, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "predict.py"), "--model", str(model), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_texts_as_arguments_as_json(model):
    rows = json.loads(predict(model, "--format", "json", *TEXTS))
    assert [row["text"] for row in rows] == TEXTS
    assert {row["label"] for row in rows} <= LABELS
    for row in rows:
        assert sum(row[f"p_{label}"] for label in LABELS) == pytest.approx(1.0, abs=1e-3)


def test_texts_on_stdin_one_per_line_as_csv(model):
    out = pd.read_csv(StringIO(predict(model, "--format", "csv", stdin="\n".join(TEXTS) + "\n\n")))
    assert list(out["text"]) == TEXTS  # the blank line is skipped
    assert list(out.columns) == ["text", "label", "p_A", "p_B", "p_C"]


def test_texts_from_a_csv_column_as_a_table(model, tmp_path):
    pd.DataFrame({"id": [1, 2, 3], "question": TEXTS}).to_csv(tmp_path / "new.csv", index=False)
    out = predict(model, "--input", str(tmp_path / "new.csv"), "--text-column", "question")
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["text", "label"]
    assert len(lines) == 1 + len(TEXTS)


def test_same_texts_give_the_same_answer_every_way(model, tmp_path):
    by_args = json.loads(predict(model, "--format", "json", *TEXTS))
    by_stdin = json.loads(predict(model, "--format", "json", stdin="\n".join(TEXTS)))
    assert by_args == by_stdin
