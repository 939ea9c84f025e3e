"""Scores of predicted against true labels, and the files they are written to."""

import json
import warnings

import pandas as pd
import pytest

from pipeline.evaluation import (
    Predictions,
    classification_metrics,
    confusion_table,
    per_class_table,
    write_scores,
)

# By hand, for labels A B C D:
#   A: 3 true, predicted A twice, both right -> P 2/2, R 2/3, F1 0.8
#   B: 2 true, predicted B twice, one right  -> P 1/2, R 1/2, F1 0.5
#   C: 1 true, predicted C twice, one right  -> P 1/2, R 1/1, F1 2/3
#   D: never true, never predicted          -> 0 everywhere (zero_division=0)
TRUE = ["A", "A", "A", "B", "B", "C"]
PRED = ["A", "A", "B", "B", "C", "C"]
LABELS = ["A", "B", "C", "D"]


@pytest.fixture
def metrics():
    return classification_metrics(TRUE, PRED, LABELS)


@pytest.fixture
def table():
    return per_class_table(TRUE, PRED, LABELS)


def test_headline_scores_only(metrics):
    assert metrics == {"accuracy": 0.666667, "macro_f1": 0.491667}


def test_per_class_scores(table):
    expected = {
        "A": (1.0, 2 / 3, 0.8, 3),
        "B": (0.5, 0.5, 0.5, 2),
        "C": (0.5, 1.0, 2 / 3, 1),
        "D": (0.0, 0.0, 0.0, 0),
    }
    assert list(table.columns) == ["label", "precision", "recall", "f1", "support"]
    assert table["label"].tolist() == LABELS
    for label, (p, r, f1, support) in expected.items():
        scores = table.set_index("label").loc[label]
        assert scores["precision"] == pytest.approx(p, abs=1e-6), label
        assert scores["recall"] == pytest.approx(r, abs=1e-6), label
        assert scores["f1"] == pytest.approx(f1, abs=1e-6), label
        assert scores["support"] == support, label


def test_macro_f1_averages_every_listed_label(metrics, table):
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3 + 0) / 4, abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(table["f1"].mean(), abs=1e-6)


def test_values_are_rounded_to_six_decimals(metrics, table):
    assert metrics["accuracy"] == 0.666667
    assert table.set_index("label").loc["C", "f1"] == 0.666667


def test_label_never_predicted_gets_zero_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero_division=0 means no UndefinedMetricWarning
        table = per_class_table(["A", "B", "B"], ["A", "A", "A"], ["A", "B"])
        classification_metrics(["A", "B", "B"], ["A", "A", "A"], ["A", "B"])
    rows = table.set_index("label")
    assert rows.loc["B"].tolist() == [0.0, 0.0, 0.0, 2]
    assert rows.loc["A", "precision"] == pytest.approx(1 / 3, abs=1e-6)


def test_perfect_predictions():
    assert classification_metrics(["A", "B"], ["A", "B"], ["A", "B"]) == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
    }


def test_confusion_table():
    table = confusion_table(TRUE, PRED)
    assert list(table.columns) == ["actual", "predicted"]
    assert table.to_dict("records")[2] == {"actual": "A", "predicted": "B"}
    assert len(table) == len(TRUE)


def leaves(tree: dict, prefix: str = "") -> dict:
    """A metrics.json as `dvc exp show` flattens it: dotted names -> values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


TEST_TRUE = ["A", "B", "C", "D"]
TEST_PRED = ["A", "B", "C", "C"]


@pytest.mark.parametrize("name", [None, "baseline"])
def test_metrics_json_holds_headline_scalars_and_the_csvs_each_class(tmp_path, name):
    """metrics.json: the headline numbers only, each a plain number (every per-class number
    would be a column of `dvc exp show`); per_class.csv and per_class_test.csv: every class."""
    extra = {"accuracy_ngrams_only": 0.5}
    val = Predictions(TRUE, PRED, extra)
    test = Predictions(TEST_TRUE, TEST_PRED, {"accuracy_ngrams_only": 0.25})
    returned = write_scores(tmp_path, LABELS, val, test, name=name)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == ({name: returned} if name else returned)
    prefix = f"{name}." if name else ""
    headline = {"accuracy", "macro_f1", "accuracy_ngrams_only"}
    expected = {f"{prefix}{key}" for key in headline} | {f"{prefix}test.{k}" for k in headline}
    flat = leaves(written)
    assert set(flat) == expected
    assert all(type(value) is float for value in flat.values()), flat
    assert flat[f"{prefix}accuracy_ngrams_only"] == 0.5
    assert flat[f"{prefix}test.accuracy"] == 0.75
    for csv, (y_true, y_pred) in {
        "per_class.csv": (TRUE, PRED),
        "per_class_test.csv": (TEST_TRUE, TEST_PRED),
    }.items():
        table = pd.read_csv(tmp_path / csv)
        assert table["label"].tolist() == LABELS, csv
        assert table["support"].sum() == len(y_true), csv
        pd.testing.assert_frame_equal(table, per_class_table(y_true, y_pred, LABELS))
    assert len(pd.read_csv(tmp_path / "confusion.csv")) == len(TRUE)


def test_without_test_rows_no_test_block_and_a_header_only_csv(tmp_path):
    metrics = write_scores(tmp_path, LABELS, Predictions(TRUE, PRED))
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"accuracy", "macro_f1"}
    assert (tmp_path / "per_class_test.csv").read_text() == "label,precision,recall,f1,support\n"
    assert len(pd.read_csv(tmp_path / "per_class.csv")) == len(LABELS)
