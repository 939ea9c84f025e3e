"""Scores of predicted against true labels."""

import json
import warnings

import pytest

from pipeline.evaluation import classification_metrics, confusion_table, per_class_table

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


def test_accuracy_and_row_count(metrics):
    assert metrics["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert metrics["rows"] == 6


def test_per_class_scores(metrics):
    expected = {
        "A": (1.0, 2 / 3, 0.8, 3),
        "B": (0.5, 0.5, 0.5, 2),
        "C": (0.5, 1.0, 2 / 3, 1),
        "D": (0.0, 0.0, 0.0, 0),
    }
    assert list(metrics["per_class"]) == LABELS
    for label, (p, r, f1, support) in expected.items():
        scores = metrics["per_class"][label]
        assert scores["precision"] == pytest.approx(p, abs=1e-6), label
        assert scores["recall"] == pytest.approx(r, abs=1e-6), label
        assert scores["f1"] == pytest.approx(f1, abs=1e-6), label
        assert scores["support"] == support, label
        assert type(scores["support"]) is int


def test_macro_averages_include_every_listed_label(metrics):
    assert metrics["macro_precision"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4, abs=1e-6)
    assert metrics["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1 + 0) / 4, abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3 + 0) / 4, abs=1e-6)


def test_values_are_rounded_to_six_decimals(metrics):
    assert metrics["accuracy"] == 0.666667
    assert metrics["per_class"]["C"]["f1"] == 0.666667


def test_label_never_predicted_gets_zero_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero_division=0 means no UndefinedMetricWarning
        metrics = classification_metrics(["A", "B", "B"], ["A", "A", "A"], ["A", "B"])
    assert metrics["per_class"]["B"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["per_class"]["A"]["precision"] == pytest.approx(1 / 3, abs=1e-6)


def test_perfect_predictions():
    metrics = classification_metrics(["A", "B"], ["A", "B"], ["A", "B"])
    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0


def test_metrics_are_plain_json(metrics):
    assert json.loads(json.dumps(metrics)) == metrics


def test_per_class_table(metrics):
    table = per_class_table(metrics)
    assert list(table.columns) == ["label", "precision", "recall", "f1", "support"]
    assert table["label"].tolist() == LABELS
    row = table.set_index("label").loc["A"]
    assert row["precision"] == 1.0
    assert row["support"] == 3


def test_confusion_table():
    table = confusion_table(TRUE, PRED)
    assert list(table.columns) == ["actual", "predicted"]
    assert table.to_dict("records")[2] == {"actual": "A", "predicted": "B"}
    assert len(table) == len(TRUE)
