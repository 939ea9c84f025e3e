"""Whatever a user gets wrong, each stage command answers with one sentence (what, where, how to
fix), exits non-zero, prints no traceback and leaves no output behind.

Every test runs the real command as a subprocess, as DVC does.
"""

import gzip
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipeline.checkpoint import save_checkpoint
from pipeline.config import load_params
from tests.conftest import ROOT, synthetic_table, write_csv
from tests.test_checkpoint import Stowaway, make_checkpoint
from tests.test_stages import assert_one_sentence, clean_args, run_stage, write_params

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def assert_fails_cleanly(tmp_path: Path, stage: str, args: list[str], *fragments: str) -> str:
    """Run `stage`; it must fail with one sentence holding `fragments` and write no file at all
    (neither an output nor a `.*.tmp` leftover) anywhere under tmp_path."""
    before = files_under(tmp_path)
    result = run_stage(stage, *args, cwd=tmp_path)
    assert_one_sentence(result, *fragments)
    assert files_under(tmp_path) == before
    return result.stderr


def write_raw(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "raw.csv"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def run_clean(tmp_path: Path, content: str | bytes) -> subprocess.CompletedProcess:
    """Run clean on a raw CSV holding `content`, with the repo's params (question, subject)."""
    write_params(tmp_path)
    return run_stage("clean", *clean_args(write_raw(tmp_path, content), tmp_path), cwd=tmp_path)


def clean_report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "clean.json").read_text(encoding="utf-8"))


def split_args(input_path: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return [
        "--input",
        str(input_path),
        "--train",
        str(out / "train.csv"),
        "--val",
        str(out / "val.csv"),
        "--report",
        str(out / "split.json"),
    ]


def write_clean(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    """A table as the clean stage writes it, for the split stage to read."""
    path = tmp_path / "clean.csv"
    lines = ["text,label", *(f"{text},{label}" for text, label in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the raw CSV (clean stage) ---------------------------------------------------------------


def test_raw_file_missing(tmp_path):
    write_params(tmp_path)
    args = clean_args(tmp_path / "nope.csv", tmp_path)
    assert_fails_cleanly(tmp_path, "clean", args, "nope.csv", "does not exist", "--input")


def test_raw_path_is_a_directory(tmp_path):
    write_params(tmp_path)
    (tmp_path / "data").mkdir()
    args = clean_args(tmp_path / "data", tmp_path)
    assert_fails_cleanly(tmp_path, "clean", args, "data is a directory", "--input")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (PNG, ["raw.csv", "not a text file", "UTF-8 CSV"]),
        (gzip.compress(b"question,subject\nx,A\n", mtime=0), ["raw.csv", "not a text file"]),
        (b"question,subject\nr1,A\nr2,B\ncaf\xe9,C\n", ["line 4", "0xE9", "UTF-8"]),
        (b"", ["raw.csv", "is empty"]),
        (b"\n\n  \n", ["raw.csv", "is empty"]),
        ("question,subject\n", ["raw.csv", "no data rows"]),
        ("body,subject\nx,A\n", ["'question'", "data.text_column", "columns are: body, subject"]),
        ("question,topic\nx,A\n", ["'subject'", "data.label_column", "are: question, topic"]),
        ("question,question,subject\nx,y,A\n", ["2 columns named 'question'"]),
        ("question,subject\nok,A\nWhat is 1,000 x 2?,B\n", ["line 3", "3 fields", "quotes"]),
        ('question,subject\nok,A\n"never closed,B\n', ["raw.csv", "not a valid CSV", "quotes"]),
        ("question,subject\n,A\n   ,B\n,C\n", ["No rows are left", "3 have no text"]),
        ("question,subject\nx,\ny, \n", ["No rows are left", "2 no label"]),
        (
            "question,subject\n?!,A\nhttp://a.b/c,B\n$\\($,A\n",
            ["No rows are left", "3 only punctuation, links or LaTeX"],
        ),
    ],
    ids=[
        "png",
        "gzip",
        "latin-1-row-3",
        "empty",
        "blank-lines",
        "header-only",
        "no-text-column",
        "no-label-column",
        "text-column-twice",
        "row-with-an-extra-field",
        "unclosed-quote",
        "all-texts-empty",
        "all-labels-empty",
        "all-rows-emptied-by-cleaning",
    ],
)
def test_bad_raw_csv(tmp_path, content, fragments):
    write_params(tmp_path)
    raw = write_raw(tmp_path, content)
    assert_fails_cleanly(tmp_path, "clean", clean_args(raw, tmp_path), *fragments)


def test_some_empty_texts_and_labels_are_dropped_and_counted(tmp_path):
    # The last row has no label field at all: it reads as an empty label.
    content = "question,subject\nfirst,A\n,A\nsecond,\n?!,B\nthird,B\n  ,B\nshort row\n"
    result = run_clean(tmp_path, content)
    assert result.returncode == 0, result.stderr
    report = clean_report(tmp_path)
    assert report["rows_in"] == 7
    assert report["rows_out"] == 2
    assert report["dropped"] == {"missing_text": 2, "missing_label": 2, "empty_after_cleaning": 1}


def test_labels_lose_surrounding_spaces_but_keep_their_case(tmp_path):
    result = run_clean(tmp_path, "question,subject\na,Physics\nb, Physics \nc,physics\n")
    assert result.returncode == 0, result.stderr
    assert clean_report(tmp_path)["labels"] == {"Physics": 2, "physics": 1}


@pytest.mark.parametrize(
    ("content", "labels"),
    [
        ("question,subject\nwhat is x,A\n".encode("utf-8-sig"), {"A": 1}),
        (b"question,subject\r\nwhat is x,A\r\nwhy,B\r\n", {"A": 1, "B": 1}),
        ('question,subject\n"first line\nsecond line",A\n"a, b\r\nc",B\nd,B\n', {"A": 1, "B": 2}),
    ],
    ids=["byte-order-mark", "crlf", "quoted-newlines"],
)
def test_accepted_csv_variants(tmp_path, content, labels):
    result = run_clean(tmp_path, content)
    assert result.returncode == 0, result.stderr
    assert clean_report(tmp_path)["labels"] == labels
    first = pd.read_csv(tmp_path / "out" / "clean.csv").iloc[0]
    assert (first["text"], first["label"]) in (("what is x", "A"), ("first line second line", "A"))


def test_one_megabyte_text_is_cleaned_quickly(tmp_path):
    start = time.monotonic()
    result = run_clean(tmp_path, "question,subject\n" + "word " * 200_000 + ",A\n")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 30
    assert clean_report(tmp_path)["rows_out"] == 1


# --- the cleaned table (split stage) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        (
            [(f"a{i}", "A") for i in range(10)] + [("lonely", "Rare")],
            ["'Rare'", "only one distinct row", "add rows"],
        ),
        ([(f"t{i}", "Solo") for i in range(10)], ["only one label", "'Solo'", "another label"]),
    ],
    ids=["label-with-one-row", "one-label"],
)
def test_bad_labels_for_a_split(tmp_path, rows, fragments):
    write_params(tmp_path)
    args = split_args(write_clean(tmp_path, rows), tmp_path)
    assert_fails_cleanly(tmp_path, "split", args, *fragments)


def test_ten_thousand_labels_of_one_row_fail_quickly(tmp_path):
    write_params(tmp_path)
    args = split_args(write_clean(tmp_path, [(f"t{i}", f"L{i}") for i in range(10_000)]), tmp_path)
    start = time.monotonic()
    stderr = assert_fails_cleanly(tmp_path, "split", args, "10000 labels", "only one distinct row")
    assert time.monotonic() - start < 30
    assert len(stderr) < 400


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (None, ["clean.csv", "does not exist", "dvc repro"]),
        ("question,subject\nx,A\n", ["clean.csv", "not written by this pipeline"]),
        ("text,label\n", ["clean.csv", "no rows"]),
    ],
    ids=["missing", "foreign-columns", "no-rows"],
)
def test_bad_split_input(tmp_path, content, fragments):
    write_params(tmp_path)
    path = tmp_path / "clean.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert_fails_cleanly(tmp_path, "split", split_args(path, tmp_path), *fragments)


# --- params.yaml -----------------------------------------------------------------------------


def edit_params(tmp_path: Path, edit: Callable[[dict], object]) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    edit(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")


def train(**values) -> Callable[[dict], object]:
    return lambda raw: raw["train"].update(values)


def model(**values) -> Callable[[dict], object]:
    return lambda raw: raw["model"].update(values)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (train(lrr=0.1), ["unknown key 'train.lrr'", "did you mean 'train.lr'"]),
        (train(lr="fast"), ["'train.lr'", "'fast'"]),
        (train(epochs=2.5), ["'train.epochs'", "whole number", "2.5"]),
        (train(epochs=0), ["'train.epochs'", "at least 1"]),
        (train(epochs=-3), ["'train.epochs'", "at least 1"]),
        (train(batch_size=0), ["'train.batch_size'", "at least 1"]),
        (train(batch_size=-8), ["'train.batch_size'", "at least 1"]),
        (train(lr=0), ["'train.lr'", "greater than 0"]),
        (train(lr=-0.001), ["'train.lr'", "greater than 0"]),
        (model(d_model=30, num_heads=8), ["'model.d_model'", "divisible", "model.num_heads"]),
        (model(pos_encoding="rotary"), ["'model.pos_encoding'", "learned, sinusoidal, none"]),
        (train(pos_encoding="learned"), ["'train.pos_encoding'", "use model.pos_encoding"]),
        (lambda raw: raw["split"].update(val_size=0), ["'split.val_size'", "between 0 and 1"]),
        (lambda raw: raw["split"].update(val_size=1), ["'split.val_size'", "between 0 and 1"]),
        (lambda raw: raw["split"].update(val_size=1.5), ["'split.val_size'", "between 0 and 1"]),
        (lambda raw: raw.pop("vocab"), ["section 'vocab' is missing"]),
        (lambda raw: raw["train"].pop("warmup_share"), ["'train.warmup_share' is missing"]),
        (lambda raw: raw.update(train=[1, 2]), ["train must be a mapping"]),
    ],
    ids=[
        "unknown-key",
        "lr-fast",
        "epochs-2.5",
        "epochs-0",
        "epochs-negative",
        "batch-size-0",
        "batch-size-negative",
        "lr-0",
        "lr-negative",
        "d-model-not-divisible",
        "unknown-pos-encoding",
        "moved-key",
        "val-size-0",
        "val-size-1",
        "val-size-1.5",
        "missing-section",
        "missing-key",
        "section-is-a-list",
    ],
)
def test_bad_params(tmp_path, edit, fragments):
    edit_params(tmp_path, edit)
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, "question", "subject")
    assert_fails_cleanly(tmp_path, "clean", clean_args(raw, tmp_path), "params.yaml", *fragments)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("train:\n  lr: 0.1\n   epochs: 3\n", ["params.yaml", "not valid YAML", "line"]),
        ("", ["params.yaml", "is empty", "vocab, model, train, baseline and evaluate"]),
        ("- data\n- train\n", ["params.yaml", "mapping of sections"]),
        (None, ["params.yaml", "does not exist", "--params"]),
    ],
    ids=["invalid-yaml", "empty", "a-list", "missing"],
)
def test_bad_params_file(tmp_path, content, fragments):
    if content is not None:
        (tmp_path / "params.yaml").write_text(content, encoding="utf-8")
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, "question", "subject")
    assert_fails_cleanly(tmp_path, "clean", clean_args(raw, tmp_path), *fragments)


def test_params_path_is_a_directory(tmp_path):
    (tmp_path / "conf").mkdir()
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, "question", "subject")
    args = ["--params", "conf", *clean_args(raw, tmp_path)]
    assert_fails_cleanly(tmp_path, "clean", args, "conf is a directory", "--params")


def test_lr_written_by_hand_in_exponent_notation_is_a_float(tmp_path):
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert "  lr: 2.0e-3" in text
    (tmp_path / "params.yaml").write_text(text.replace("  lr: 2.0e-3", "  lr: 1e-4"))
    assert load_params(tmp_path / "params.yaml").train.lr == 1e-4
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, "question", "subject")
    result = run_stage("clean", *clean_args(raw, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# --- model files (evaluate and predict) ------------------------------------------------------


@pytest.fixture
def project(tmp_path, params) -> Path:
    """A checkpoint for labels A, B, C at models/model.pt and validation rows at data/val.csv."""
    save_checkpoint(tmp_path / "models" / "model.pt", make_checkpoint(params))
    (tmp_path / "data").mkdir()
    synthetic_table(["A", "B", "C"], 3).to_csv(tmp_path / "data" / "val.csv", index=False)
    return tmp_path


def evaluate_args(tmp_path: Path) -> list[str]:
    return [
        "--model",
        str(tmp_path / "models" / "model.pt"),
        "--val",
        str(tmp_path / "data" / "val.csv"),
        "--output",
        str(tmp_path / "reports" / "eval"),
    ]


def predict_args(tmp_path: Path) -> list[str]:
    return ["--model", str(tmp_path / "models" / "model.pt"), "What is a force?"]


def test_evaluate_and_predict_succeed_on_good_inputs(project):
    result = run_stage("evaluate", *evaluate_args(project), cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / "reports" / "eval" / "metrics.json").is_file()
    result = run_stage("predict", *predict_args(project), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "What is a force?" in result.stdout


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def pickled_object(path: Path) -> None:
    torch.save(Stowaway(path.parent / "code-ran"), path)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (Path.unlink, ["model.pt", "does not exist", "dvc repro"]),
        (lambda path: path.unlink() or path.mkdir(), ["model.pt is a directory", ".pt file"]),
        (truncate, ["model.pt", "not a complete checkpoint", "dvc repro"]),
        (random_bytes, ["model.pt", "not a complete checkpoint"]),
        (pickled_object, ["model.pt", "not a complete checkpoint"]),
    ],
    ids=["missing", "a-directory", "truncated", "random-bytes", "pickled-object"],
)
def test_bad_checkpoint(project, command, damage, fragments):
    model = project / "models" / "model.pt"
    damage(model)
    args = evaluate_args(project) if command == "evaluate" else predict_args(project)
    assert_fails_cleanly(project, command, args, *fragments)
    assert not (project / "models" / "code-ran").exists()  # the pickle was never run


def test_evaluate_val_with_a_label_the_model_does_not_know(project):
    table = synthetic_table(["A", "B", "C", "D"], 3)
    table.to_csv(project / "data" / "val.csv", index=False)
    args = evaluate_args(project)
    assert_fails_cleanly(project, "evaluate", args, "val.csv", "(D)", "dvc repro")


def test_evaluate_val_missing(project):
    (project / "data" / "val.csv").unlink()
    args = evaluate_args(project)
    assert_fails_cleanly(project, "evaluate", args, "val.csv", "does not exist", "dvc repro")


def test_evaluate_with_a_params_file_that_is_not_there(project):
    """Without params.yaml evaluate pins the kernels; a --params file that is missing is an
    error, not a silent default."""
    args = [*evaluate_args(project), "--params", str(project / "nowhere.yaml")]
    assert_fails_cleanly(project, "evaluate", args, "nowhere.yaml", "does not exist")


def test_predict_an_empty_text(project):
    args = ["--model", str(project / "models" / "model.pt"), ""]
    assert_fails_cleanly(project, "predict", args, "None of the texts", "words left")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (
            "question\nWhat is a force?\n",
            ["new.csv", "no column 'text'", "--text-column", "question"],
        ),
        (None, ["new.csv", "does not exist", "--input"]),
        ("text\n", ["new.csv", "a header but no data rows"]),
        ("text,text\nWhat is a force?,a\nBalance Fe + O2,b\n", ["2 columns named 'text'"]),
        (b"", ["new.csv", "is empty"]),
        (b"\n\n  \n", ["new.csv", "is empty"]),
        (b"text\nWhat is a force?\ncaf\xe9 au lait\n", ["line 3", "0xE9", "UTF-8"]),
        (PNG, ["new.csv", "not a text file"]),
        ("text\nok\nWhat is 1,000 x 2?\n", ["line 3", "2 fields", "quotes"]),
    ],
    ids=[
        "no-text-column",
        "missing",
        "header-only",
        "text-column-twice",
        "empty",
        "blank-lines",
        "latin-1-row-3",
        "png",
        "row-with-an-extra-field",
    ],
)
def test_predict_bad_input_csv(project, content, fragments):
    """The same checks as clean's (pipeline.data.read_columns), each one sentence."""
    path = project / "new.csv"
    if content is not None:
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    args = ["--model", str(project / "models" / "model.pt"), "--input", str(path)]
    assert_fails_cleanly(project, "predict", args, *fragments)


def test_predict_with_empty_stdin(project):
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "predict.py")],
        cwd=project,
        input="\n  \n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_sentence(result, "No texts to label")


# --- where outputs go ------------------------------------------------------------------------


def blocker(tmp_path: Path) -> Path:
    """A regular file where an output directory should be."""
    path = tmp_path / "blocker"
    path.write_text("not a directory\n", encoding="utf-8")
    return path


def test_clean_output_under_a_file(tmp_path):
    write_params(tmp_path)
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, "question", "subject")
    args = clean_args(raw, tmp_path)
    args[3] = str(blocker(tmp_path) / "clean.csv")
    assert_fails_cleanly(tmp_path, "clean", args, "Cannot write", "blocker is a file")


def test_clean_report_under_a_file_leaves_no_table(tmp_path):
    write_params(tmp_path)
    raw = write_csv(tmp_path / "raw.csv", ["A", "B"], 5, "question", "subject")
    args = clean_args(raw, tmp_path)
    args[5] = str(blocker(tmp_path) / "clean.json")
    assert_fails_cleanly(tmp_path, "clean", args, "clean.json", "blocker is a file")
    assert not (tmp_path / "out" / "clean.csv").exists()


def test_split_val_under_a_file_leaves_no_train(tmp_path):
    write_params(tmp_path)
    args = split_args(write_clean(tmp_path, [(f"t{i}", "AB"[i % 2]) for i in range(10)]), tmp_path)
    args[5] = str(blocker(tmp_path) / "val.csv")
    assert_fails_cleanly(tmp_path, "split", args, "val.csv", "blocker is a file")
    assert not (tmp_path / "out" / "train.csv").exists()


def test_vocab_output_is_a_directory(tmp_path):
    write_params(tmp_path)
    train_csv = write_clean(tmp_path, [("a b", "A"), ("c d", "B")])
    (tmp_path / "vocab.json").mkdir()
    args = ["--train", str(train_csv), "--output", str(tmp_path / "vocab.json")]
    assert_fails_cleanly(tmp_path, "vocab", args, "vocab.json", "directory")


def test_evaluate_output_is_a_file(project):
    args = evaluate_args(project)
    args[5] = str(blocker(project))
    assert_fails_cleanly(project, "evaluate", args, "Cannot write", "blocker is a file")
