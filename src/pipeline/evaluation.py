"""Scores of predicted against true labels, in the schema every model of the project reports."""

from pathlib import Path

import pandas as pd

from pipeline.data import write_table
from pipeline.files import write_json


def _round(x: float) -> float:
    # Six decimals keep the JSON readable; equal runs still give equal bytes.
    return round(float(x), 6)


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """Accuracy, macro-averaged P/R/F1 and the same per class."""
    # sklearn.metrics loads here, not at the top: it pulls in scipy (~0.8 s), which the
    # evaluate and baseline stages' `--help` and usage errors need not wait for.
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        label: {
            "precision": _round(p[i]),
            "recall": _round(r[i]),
            "f1": _round(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_precision": _round(p.mean()),
        "macro_recall": _round(r.mean()),
        "macro_f1": _round(f.mean()),
        "rows": len(y_true),
        "per_class": per_class,
    }


def summary_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """Accuracy and the macro averages, without the per-class part: for the test rows."""
    metrics = classification_metrics(y_true, y_pred, labels)
    del metrics["per_class"]
    return metrics


def summary_of_test(metrics: dict) -> str:
    """The test rows' scores for a stage's summary line ("" when there are none)."""
    if "test" not in metrics:
        return ""
    test = metrics["test"]
    return (
        f"; accuracy {test['accuracy']:.4f}, macro_f1 {test['macro_f1']:.4f} "
        f"on {test['rows']} test rows"
    )


def per_class_table(metrics: dict) -> pd.DataFrame:
    """The per-class part of `metrics` as a table, one row per label."""
    rows = [{"label": label, **scores} for label, scores in metrics["per_class"].items()]
    return pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support"])


def accuracy(y_true: list[str], y_pred: list[str]) -> float:
    from sklearn.metrics import accuracy_score  # lazy, as in classification_metrics

    return _round(accuracy_score(y_true, y_pred))


def confusion_table(y_true: list[str], y_pred: list[str]) -> pd.DataFrame:
    """One row per validation text, the input DVC's `confusion` plot template counts."""
    return pd.DataFrame({"actual": y_true, "predicted": y_pred})


def write_scores(
    output: Path,
    y_true: list[str],
    y_pred: list[str],
    labels: list[str],
    extra: dict | None = None,
) -> dict:
    """Score the predictions and write metrics.json (with `extra` entries added),
    confusion.csv and per_class.csv to `output`; metrics.json last, so that its presence
    means the others are complete."""
    metrics = {**classification_metrics(y_true, y_pred, labels), **(extra or {})}
    write_table(confusion_table(y_true, y_pred), output / "confusion.csv")
    write_table(per_class_table(metrics), output / "per_class.csv")
    write_json(output / "metrics.json", metrics)
    return metrics
