"""Scores of predicted against true labels, in the schema every model of the project reports:
the headline numbers in metrics.json (the columns of `dvc exp show` and the rows of `dvc metrics
diff`), the numbers of each class in CSV tables (what `dvc plots` draws)."""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.data import write_table
from pipeline.files import write_json

PER_CLASS_COLUMNS = ["label", "precision", "recall", "f1", "support"]


@dataclass(frozen=True)
class Predictions:
    """One set of rows' true and predicted labels, and any headline scores of the model's own
    on them (evaluate's accuracy of each of its paths alone)."""

    true: list[str]
    predicted: list[str]
    extra: dict[str, float] = field(default_factory=dict)


def _round(x: float) -> float:
    # Six decimals keep the JSON readable; equal runs still give equal bytes.
    return round(float(x), 6)


def accuracy(y_true: list[str], y_pred: list[str]) -> float:
    # sklearn.metrics loads here, not at the top: it pulls in scipy (~0.8 s), which the
    # evaluate and baseline stages' `--help` and usage errors need not wait for.
    from sklearn.metrics import accuracy_score

    return _round(accuracy_score(y_true, y_pred))


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """The headline scores: accuracy, and F1 averaged over every label in `labels` (one never
    true and never predicted counts as 0), the mean of per_class_table's F1 column."""
    from sklearn.metrics import f1_score  # lazy, as in accuracy

    macro_f1 = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": _round(macro_f1)}


def per_class_table(y_true: list[str], y_pred: list[str], labels: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of each label, one row per label in `labels` order."""
    from sklearn.metrics import precision_recall_fscore_support  # lazy, as in accuracy

    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return pd.DataFrame(
        {
            "label": labels,
            "precision": [_round(x) for x in p],
            "recall": [_round(x) for x in r],
            "f1": [_round(x) for x in f],
            "support": [int(n) for n in support],
        },
        columns=PER_CLASS_COLUMNS,
    )


def confusion_table(y_true: list[str], y_pred: list[str]) -> pd.DataFrame:
    """One row per validation text, the input DVC's `confusion` plot template counts."""
    return pd.DataFrame({"actual": y_true, "predicted": y_pred})


def headline_scores(rows: Predictions, labels: list[str]) -> dict:
    return classification_metrics(rows.true, rows.predicted, labels) | rows.extra


def write_scores(
    output: Path,
    labels: list[str],
    val: Predictions,
    test: Predictions | None = None,
    name: str | None = None,
) -> dict:
    """Score the validation rows (and the test rows, if any) and write to `output`:

    - metrics.json: the headline scores only, the test rows' under `test`, and all of them
      under `name` when given: DVC prefixes a metric whose name two files share with the file's
      path in `dvc exp show` (`reports/eval/metrics.json:accuracy`), so the baseline's live
      under `baseline` and the model's keep the short names;
    - per_class.csv and per_class_test.csv (a header only without test rows, as test.csv);
    - confusion.csv of the validation rows.

    metrics.json last, so that its presence means the others are complete. Returns the scores
    as written, without `name`."""
    metrics = headline_scores(val, labels)
    if test is not None:
        metrics["test"] = headline_scores(test, labels)
    on_test = (
        per_class_table(test.true, test.predicted, labels)
        if test is not None
        else pd.DataFrame(columns=PER_CLASS_COLUMNS)
    )
    write_table(confusion_table(val.true, val.predicted), output / "confusion.csv")
    write_table(per_class_table(val.true, val.predicted, labels), output / "per_class.csv")
    write_table(on_test, output / "per_class_test.csv")
    write_json(output / "metrics.json", {name: metrics} if name else metrics)
    return metrics


def summary_of_test(metrics: dict, test: Predictions | None) -> str:
    """The test rows' scores for a stage's summary line ("" when there are none)."""
    if test is None:
        return ""
    scores = metrics["test"]
    return (
        f"; accuracy {scores['accuracy']:.4f}, macro_f1 {scores['macro_f1']:.4f} "
        f"on {len(test.true)} test rows"
    )
