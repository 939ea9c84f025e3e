"""The quality report through the stage commands: a slice column carried from the raw CSV to
slices.csv, train.calibrate's temperature from the checkpoint to predict and evaluate, predict
--min-confidence, and every report file of evaluate and baseline."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.checkpoint import FORMAT, UNCALIBRATED_FORMAT, load_checkpoint, save_checkpoint
from pipeline.data import ORIGINAL, SLICE, TEXT
from pipeline.predict import predict_proba
from tests.conftest import TINY, write_csv
from tests.test_checkpoint import make_checkpoint
from tests.test_stages import assert_one_sentence, options, run_stage, write_params

LABELS = ["Physics", "Chemistry", "Maths"]


def run(stage: str, cwd: Path, **paths: Path) -> str:
    result = run_stage(stage, "--params", "params.yaml", *options(**paths), cwd=cwd)
    assert result.returncode == 0, (stage, result.stderr)
    return result.stdout + result.stderr


def pipeline(work: Path) -> Path:
    """The stages as dvc.yaml runs them, train.calibrate on, on rows with a `source` column
    named as the slice, written as people write (capitals, a question mark), every fourth row
    given another label than its words say, so that no model is sure of every row."""
    raw = write_csv(work / "raw.csv", LABELS, 30, "question", "subject")
    table = pd.read_csv(raw)
    table["question"] = table["question"].str.capitalize() + "?"
    noisy = table.index % 4 == 0
    table.loc[noisy, "subject"] = table.loc[noisy, "subject"].map(
        {LABELS[i]: LABELS[(i + 1) % 3] for i in range(3)}
    )
    table["source"] = ["exam a", "exam b", ""] * (len(table) // 3)
    table.to_csv(raw, index=False)
    write_params(
        work,
        data={"raw": "raw.csv", "text_column": "question", "label_column": "subject"},
        evaluate={"slice_column": "source"},
        model=TINY["model"],
        train={**TINY["train"], "calibrate": True},
    )
    data, reports = work / "data", work / "reports"
    run("clean", work, output=data / "clean.csv", report=reports / "clean.json")
    split = {name: data / f"{name}.csv" for name in ("train", "val", "test")}
    run("split", work, input=data / "clean.csv", report=reports / "split.json", **split)
    run("vocab", work, train=split["train"], output=data / "vocab.json")
    trained = run(
        "train",
        work,
        train=split["train"],
        val=split["val"],
        vocab=data / "vocab.json",
        model=work / "model.pt",
        live_dir=reports / "train",
    )
    # 15 % of each label's training rows (at least one) fit the temperature, the rest train.
    train_rows = pd.read_csv(split["train"])
    held = sum(max(round(n * 0.15), 1) for n in train_rows["label"].value_counts())
    assert f"on {len(train_rows) - held} rows" in trained, trained
    assert f"on {held} held-out rows" in trained, trained
    run("evaluate", work, model=work / "model.pt", output=reports / "eval", **split)
    run("baseline", work, output=reports / "baseline", **split)
    return work


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    return pipeline(tmp_path_factory.mktemp("calibrated"))


def test_the_slice_column_is_carried_beside_the_rows_and_scored(calibrated):
    clean = pd.read_csv(calibrated / "data" / "clean.csv", keep_default_na=False)
    assert list(clean.columns) == [TEXT, "label", ORIGINAL, SLICE]
    assert clean[ORIGINAL].str.contains("[A-Z]").any()  # as written, not cleaned
    val = pd.read_csv(calibrated / "data" / "val.csv", keep_default_na=False)
    slices = pd.read_csv(calibrated / "reports" / "eval" / "slices.csv")
    assert slices["slice"].tolist() == ["(empty)", "exam a", "exam b"]
    assert slices["rows"].sum() == len(val)
    assert dict(zip(slices["slice"], slices["rows"], strict=True)) == {
        name or "(empty)": n for name, n in val[SLICE].value_counts().items()
    }


def test_every_report_file_is_written(calibrated):
    eval_dir, baseline_dir = calibrated / "reports" / "eval", calibrated / "reports" / "baseline"
    for name in ("errors.csv", "label_issues.csv", "reliability.csv", "slices.csv"):
        assert (eval_dir / name).is_file(), name
    errors = pd.read_csv(baseline_dir / "errors.csv")
    assert list(errors.columns)[-2:] == ["score_label", "score_predicted"]
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    baseline = json.loads((baseline_dir / "metrics.json").read_text())["baseline"]
    checks = {"upper_case", "spacing_punctuation", "typo", "numbers", "prefix", "directional"}
    assert set(metrics["robustness"]) == {*checks, "rows"} == set(baseline["robustness"])
    assert metrics["robustness"]["rows"] == baseline["robustness"]["rows"]
    assert "calibration" not in baseline  # decision scores are not probabilities


def test_calibrate_fits_a_temperature_that_predict_and_evaluate_use(calibrated):
    checkpoint = load_checkpoint(calibrated / "model.pt")
    assert checkpoint.temperature != 1.0
    assert torch.load(calibrated / "model.pt", weights_only=True)["format"] == FORMAT
    metrics = json.loads((calibrated / "reports" / "eval" / "metrics.json").read_text())
    block = metrics["calibration"]
    assert block["temperature"] == checkpoint.temperature and block["bins"] == 10
    assert set(block["uncalibrated"]) == {"bins", "ece", "nll", "brier"}
    # Fitted on the held-out rows, scored on the validation rows: nothing promises it helps
    # there on 27 rows, only that both are scored, and differently.
    assert block["nll"] != block["uncalibrated"]["nll"]


def test_temperature_round_trips_and_divides_the_logits(tmp_path, params):
    checkpoint = make_checkpoint(params)
    texts = ["a0 a1 the", "b2 of"]
    plain = predict_proba(checkpoint, texts)
    save_checkpoint(tmp_path / "plain.pt", checkpoint)
    payload = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert payload["format"] == UNCALIBRATED_FORMAT and "temperature" not in payload
    checkpoint.temperature = 2.0
    save_checkpoint(tmp_path / "warm.pt", checkpoint)
    loaded = load_checkpoint(tmp_path / "warm.pt")
    assert loaded.temperature == 2.0
    warm = predict_proba(loaded, texts)
    expected = (plain.log() / 2.0).softmax(dim=1)  # log of the mixture, halved
    assert torch.allclose(warm, expected, atol=1e-5)
    assert torch.equal(warm.argmax(dim=1), plain.argmax(dim=1))


def test_predict_min_confidence_leaves_unsure_texts_unlabelled(calibrated):
    texts = ["physics0 physics1 physics2", "the of what"]
    args = ["--model", str(calibrated / "model.pt"), "--format", "json", *texts]
    every = json.loads(run_stage("predict", *args, cwd=calibrated).stdout)
    assert all(row["label"] for row in every)
    top = [max(v for k, v in row.items() if k.startswith("p_")) for row in every]
    threshold = str(round((min(top) + max(top)) / 2, 4))
    assert min(top) < float(threshold) < max(top)
    result = run_stage("predict", *args, "--min-confidence", threshold, cwd=calibrated)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [bool(row["label"]) for row in rows] == [t >= float(threshold) for t in top]
    assert f"1 of 2 texts have a top probability below {float(threshold)}" in result.stderr
    bad = run_stage("predict", *args, "--min-confidence", "1.5", cwd=calibrated)
    assert bad.returncode != 0 and "1.5" in bad.stderr


def test_a_slice_column_the_csv_lacks_is_one_sentence_and_no_output(tmp_path):
    write_csv(tmp_path / "raw.csv", LABELS, 3, "question", "subject")
    write_params(
        tmp_path,
        data={"raw": "raw.csv", "text_column": "question", "label_column": "subject"},
        evaluate={"slice_column": "source"},
    )
    out = tmp_path / "out"
    args = ["--output", str(out / "clean.csv"), "--report", str(out / "clean.json")]
    result = run_stage("clean", *args, cwd=tmp_path)
    assert_one_sentence(result, "no column 'source'", "evaluate.slice_column", "question, subject")
    assert not out.exists()
