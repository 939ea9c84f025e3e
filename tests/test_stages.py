"""The stage commands themselves, run as a user runs them: bad input gives one sentence."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.data import LABEL, TEXT
from pipeline.vocab import build_vocab, save_vocab
from tests.conftest import ROOT, TINY, synthetic_table, write_csv


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
    assert (tmp_path / "out" / "clean.csv").read_text().startswith("text,label,original\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_stops_quickly_and_leaves_no_outputs(tmp_path, sig):
    """Ctrl-C or kill in the middle of training: exit non-zero within seconds, and neither a
    model nor dvclive metrics stay behind for DVC to mistake for a finished stage."""
    data = tmp_path / "data"
    data.mkdir()
    table = synthetic_table(["A", "B", "C"], 60)
    table.iloc[:120].to_csv(data / "train.csv", index=False)
    table.iloc[120:].to_csv(data / "val.csv", index=False)
    build_vocab_json(data / "train.csv", data / "vocab.json")
    write_params(tmp_path, train={"epochs": 1000, "threads": 1})
    args = [
        "--train",
        str(data / "train.csv"),
        "--val",
        str(data / "val.csv"),
        "--vocab",
        str(data / "vocab.json"),
        "--model",
        str(tmp_path / "models" / "model.pt"),
        "--live-dir",
        str(tmp_path / "reports" / "train"),
    ]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`cmd &` in a script)
        # inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout.readline().startswith("epoch   1/1000")  # training is under way
    stopped_at = time.monotonic()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - stopped_at < 10
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert not (tmp_path / "models" / "model.pt").exists()
    left = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert left == []


def build_vocab_json(train_csv: Path, out: Path) -> None:
    table = pd.read_csv(train_csv)
    save_vocab(build_vocab(table[TEXT], table[LABEL], min_freq=1, max_size=1000), out)


# --- held-out test rows (split.test_size) ------------------------------------------------------


def options(**paths: Path) -> list[str]:
    """`--live-dir x`-style command-line options from keyword arguments."""
    return [
        item for key, path in paths.items() for item in (f"--{key.replace('_', '-')}", str(path))
    ]


def split_args(tmp_path: Path, clean_csv: Path, test: bool = True) -> list[str]:
    out = tmp_path / "data"
    args = ["--input", str(clean_csv), "--train", str(out / "train.csv")]
    args += ["--val", str(out / "val.csv"), "--report", str(tmp_path / "reports" / "split.json")]
    return args + (["--test", str(out / "test.csv")] if test else [])


@pytest.mark.parametrize("test_size", [0.25, 0.0])
def test_test_rows_are_split_off_and_scored_by_evaluate_and_baseline(tmp_path, test_size):
    """The stage commands as dvc.yaml runs them: with split.test_size above 0, evaluate and
    baseline add the test rows' headline scores under `test` and their per-class scores to
    per_class_test.csv; with 0, test.csv and per_class_test.csv are a header only and neither
    metrics.json has a `test` key. Both score the order probe (`order`) and write length.csv
    of the validation rows in the same buckets."""
    clean_csv = tmp_path / "clean.csv"
    synthetic_table(["A", "B", "C"], 40).to_csv(clean_csv, index=False)
    write_params(tmp_path, split={"test_size": test_size}, **TINY)
    data, reports = tmp_path / "data", tmp_path / "reports"
    train, val, test = data / "train.csv", data / "val.csv", data / "test.csv"
    model = tmp_path / "model.pt"
    commands = [
        ("split", split_args(tmp_path, clean_csv)),
        ("vocab", options(train=train, output=data / "vocab.json")),
        (
            "train",
            options(
                train=train,
                val=val,
                vocab=data / "vocab.json",
                model=model,
                live_dir=reports / "train",
            ),
        ),
        (
            "evaluate",
            options(model=model, val=val, test=test, train=train, output=reports / "eval"),
        ),
        ("baseline", options(train=train, val=val, test=test, output=reports / "baseline")),
    ]
    for stage, args in commands:
        result = run_stage(stage, *args, cwd=tmp_path)
        assert result.returncode == 0, (stage, result.stderr)
    split = json.loads((reports / "split.json").read_text())
    model_metrics = json.loads((reports / "eval" / "metrics.json").read_text())
    baseline = json.loads((reports / "baseline" / "metrics.json").read_text())["baseline"]
    per_class = {
        (stage, rows): pd.read_csv(reports / stage / f"per_class{rows}.csv")
        for stage in ("eval", "baseline")
        for rows in ("", "_test")
    }
    lengths = [pd.read_csv(reports / stage / "length.csv") for stage in ("eval", "baseline")]
    pd.testing.assert_frame_equal(*(table[["bucket", "rows"]] for table in lengths))
    assert lengths[0]["rows"].sum() == len(pd.read_csv(val))
    for metrics in (model_metrics, baseline):
        assert {"accuracy_shuffled", "drop"} <= set(metrics["order"])
    if test_size == 0:
        assert test.read_text() == "text,label\n"
        assert split["test"] == {}
        assert "test" not in model_metrics and "test" not in baseline
        assert per_class["eval", "_test"].empty and per_class["baseline", "_test"].empty
        return
    assert split["duplicates_removed"] == 0
    assert split["test"] == {"A": 10, "B": 10, "C": 10}
    assert split["val"] == {"A": 12, "B": 12, "C": 12}  # 0.3 of each label's 40 rows
    texts = [set(pd.read_csv(data / f"{part}.csv")[TEXT]) for part in ("train", "val", "test")]
    assert not (texts[0] & texts[2] or texts[1] & texts[2])
    for metrics in (model_metrics, baseline):
        assert 0 <= metrics["test"]["accuracy"] <= 1
        assert 0 <= metrics["test"]["macro_f1"] <= 1
    alone = {"accuracy_transformer_only", "accuracy_ngrams_only"}
    assert set(model_metrics["test"]) == {"accuracy", "macro_f1", "order", *alone}
    assert set(model_metrics["test"]["order"]) == {
        "accuracy_shuffled", "drop", "transformer_only_shuffled"
    }  # fmt: skip
    assert set(baseline["test"]) == {"accuracy", "macro_f1", "order"}
    assert set(baseline["test"]["order"]) == {"accuracy_shuffled", "drop"}
    # Per class: the validation rows' (still the top-level scores) and the test rows' apart.
    for stage in ("eval", "baseline"):
        for rows, count in (("", 12), ("_test", 10)):
            table = per_class[stage, rows]
            assert table["label"].tolist() == ["A", "B", "C"], (stage, rows)
            assert table["support"].tolist() == [count] * 3, (stage, rows)


def test_split_with_test_size_but_no_test_path_fails_cleanly(tmp_path):
    clean_csv = tmp_path / "clean.csv"
    synthetic_table(["A", "B"], 10).to_csv(clean_csv, index=False)
    write_params(tmp_path, split={"test_size": 0.2})
    result = run_stage("split", *split_args(tmp_path, clean_csv, test=False), cwd=tmp_path)
    assert_one_sentence(result, "split.test_size is 0.2", "--test")
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


def test_split_with_test_rows_and_a_label_of_two_rows_fails_cleanly(tmp_path):
    clean_csv = tmp_path / "clean.csv"
    rows = synthetic_table(["A"], 10)
    rows = pd.concat([rows, pd.DataFrame({TEXT: ["b one", "b two"], LABEL: ["B", "B"]})])
    rows.to_csv(clean_csv, index=False)
    write_params(tmp_path, split={"test_size": 0.2})
    result = run_stage("split", *split_args(tmp_path, clean_csv), cwd=tmp_path)
    assert_one_sentence(result, "'B' has fewer than three distinct rows", "split.test_size to 0")
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()
