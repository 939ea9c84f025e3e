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


def run_predict(model: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "predict.py"), "--model", str(model), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def predict(model: Path, *args: str, stdin: str = "") -> str:
    result = run_predict(model, *args, stdin=stdin)
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


def test_a_text_with_no_words_is_marked_and_the_batch_still_labelled(model, tmp_path):
    texts = [TEXTS[0], "?! ...", TEXTS[1]]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "new.csv", index=False)
    result = run_predict(model, "--format", "json", "--input", str(tmp_path / "new.csv"))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["text"] for row in rows] == texts
    assert rows[0]["label"] in LABELS and rows[2]["label"] in LABELS
    assert rows[1]["label"] == "" and all(rows[1][f"p_{label}"] is None for label in LABELS)
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("Warning: text 2 ")


def test_a_csv_whose_text_column_is_named_twice_is_refused_not_labelled(model, tmp_path):
    """Reported: the header word `text` came out labelled, 2 rows out for 3 in."""
    path = tmp_path / "dup.csv"
    path.write_text("text,text\n" + "".join(f"{t},a\n" for t in TEXTS), encoding="utf-8")
    result = run_predict(model, "--input", str(path), "--format", "csv")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"Error: {path} has 2 columns named 'text' (--text-column); rename all but one of them."
    )


def test_other_columns_may_share_a_name(model, tmp_path):
    # Only the column predict reads must be unique: `id,id` beside it is no concern of ours.
    lines = ["id,id,text", *(f"{i},{i},{text}" for i, text in enumerate(TEXTS))]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = json.loads(predict(model, "--input", str(tmp_path / "new.csv"), "--format", "json"))
    assert [row["text"] for row in rows] == TEXTS
