"""Scores of predicted against true labels, in the schema every model of the project reports:
the headline numbers in metrics.json (the columns of `dvc exp show` and the rows of `dvc metrics
diff`), the numbers of each class and of each length of text in CSV tables (what `dvc plots`
draws)."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import TEXT, originals, write_table
from pipeline.files import write_json
from pipeline.text import tokenize

PER_CLASS_COLUMNS = ["label", "precision", "recall", "f1", "support"]
# The order probe's shuffles: fixed, and apart from every seed in params.yaml, so that every
# model and every run is probed with the same shuffled texts.
ORDER_SEED = 0
LENGTH_QUANTILES = (0.25, 0.5, 0.75)
LENGTH_COLUMNS = [
    "bucket", "min_tokens", "max_tokens", "rows", "accuracy", "accuracy_shuffled", "drop"
]  # fmt: skip


@dataclass(frozen=True)
class Predictions:
    """One set of rows' true labels, the labels predicted for them and for the same rows with
    each text's words shuffled (shuffle_words: the order probe), and any scores of the model's
    own on them: `extra` in the headline (evaluate's accuracy of each path alone), `order_extra`
    in the `order` block (its transformer alone on the shuffled texts). `scores` (rows, labels
    in the stage's label order): what the prediction is the top of, the model's probabilities
    or the baseline's decision scores, for errors.csv and the quality checks."""

    true: list[str]
    predicted: list[str]
    shuffled: list[str]
    extra: dict[str, float] = field(default_factory=dict)
    order_extra: dict[str, float] = field(default_factory=dict)
    scores: np.ndarray | None = None


def _round(x: float) -> float:
    # Six decimals keep the JSON readable; equal runs still give equal bytes.
    return round(float(x), 6)


def accuracy(y_true: list[str], y_pred: list[str]) -> float:
    return _round(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _label_counts(
    y_true: list[str], y_pred: list[str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label in `labels`: true positives, rows truly of it, rows predicted as it."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    hits = [np.sum((true == x) & (pred == x)) for x in labels]
    actual = [np.sum(true == x) for x in labels]
    predicted = [np.sum(pred == x) for x in labels]
    return tuple(np.array(c, dtype=np.float64) for c in (hits, actual, predicted))


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole, and 0 where whole is 0 (a label never predicted, or never true)."""
    return np.divide(part, whole, out=np.zeros_like(part), where=whole > 0)


def label_scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 (2·tp / (true + predicted)) and support of each label. Counted
    here, not by sklearn.metrics, whose import (scipy, ~2 s) every evaluate run would wait
    for; the formulas are sklearn's, so the numbers are the same to the last bit."""
    tp, true, predicted = _label_counts(y_true, y_pred, labels)
    f1 = _share(2 * tp, true + predicted)
    return _share(tp, predicted), _share(tp, true), f1, true


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """The headline scores: accuracy, and F1 averaged over every label in `labels` (one never
    true and never predicted counts as 0), the mean of per_class_table's F1 column."""
    f1 = label_scores(y_true, y_pred, labels)[2]
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": _round(f1.mean())}


def per_class_table(y_true: list[str], y_pred: list[str], labels: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of each label, one row per label in `labels` order."""
    p, r, f, support = label_scores(y_true, y_pred, labels)
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


def shuffle_words(texts: list[str], window: int | None = None) -> list[str]:
    """The order probe's texts: each cleaned text with its first `window` words (all when None)
    in a random order and the words after them in place, so that a model reading only its
    first `window` words reads the same words, only in another order. Row i draws from its own
    generator, seeded with (ORDER_SEED, i): the same rows give the same shuffles every run."""
    shuffled = []
    for row, text in enumerate(texts):
        words = tokenize(text)
        head = words[:window]
        order = np.random.default_rng((ORDER_SEED, row)).permutation(len(head))
        shuffled.append(" ".join([head[i] for i in order] + words[len(head) :]))
    return shuffled


def order_scores(rows: Predictions) -> dict:
    """How much the predictions rest on word order: the accuracy on the shuffled texts and its
    drop from the accuracy on the texts as written (0 for a model blind to order)."""
    written, shuffled = accuracy(rows.true, rows.predicted), accuracy(rows.true, rows.shuffled)
    return {"accuracy_shuffled": shuffled, "drop": _round(written - shuffled)} | rows.order_extra


def headline_scores(rows: Predictions, labels: list[str]) -> dict:
    scores = classification_metrics(rows.true, rows.predicted, labels) | rows.extra
    return scores | {"order": order_scores(rows)}


def token_counts(texts: Iterable[str]) -> list[int]:
    """Whitespace tokens of each cleaned text, all of them (before any model's truncation)."""
    return [len(tokenize(text)) for text in texts]


def length_edges(train_texts: Iterable[str]) -> list[int]:
    """The longest token count of each length bucket but the last: the quartiles of the
    training rows' token counts, rounded down, each once (equal quartiles make one edge, and
    fewer buckets). Counts are whole numbers, so a count at or below a quartile is at or below
    its rounded value: a row of exactly an edge's count lies in the bucket the edge closes."""
    return sorted({int(q) for q in np.quantile(token_counts(train_texts), LENGTH_QUANTILES)})


def length_table(edges: list[int], texts: Iterable[str], rows: Predictions) -> pd.DataFrame:
    """Accuracy, on the texts as written and shuffled, in each length bucket `edges` close
    (length_edges), one row per bucket, shortest first; a bucket of no rows has no accuracy.
    `bucket` names the bucket and its range ("1: 1-13 tokens") for the bar plot, whose axis
    sorts names as text; min_tokens and max_tokens (none for the last) give it as numbers."""
    counts = np.array(token_counts(texts))
    bucket = np.searchsorted(edges, counts)  # 0 for counts <= edges[0], ...
    right = np.array(rows.true) == np.array(rows.predicted)
    right_shuffled = np.array(rows.true) == np.array(rows.shuffled)
    lows = [1, *(edge + 1 for edge in edges)]  # a cleaned row has at least one token
    highs: list[int | None] = [*edges, None]
    records = []
    for i, (low, high) in enumerate(zip(lows, highs, strict=True)):
        inside = bucket == i
        span = f"{low}+" if high is None else f"{low}-{high}" if high > low else f"{low}"
        record = {
            "bucket": f"{i + 1}: {span} tokens",
            "min_tokens": low,
            "max_tokens": high,
            "rows": int(inside.sum()),
        }
        if inside.any():
            written = _round(right[inside].mean())
            shuffled = _round(right_shuffled[inside].mean())
            record |= {"accuracy": written, "accuracy_shuffled": shuffled}
            record["drop"] = _round(written - shuffled)
        records.append(record)
    # max_tokens: whole numbers, the last one missing.
    return pd.DataFrame(records, columns=LENGTH_COLUMNS).astype({"max_tokens": "Int64"})


ERROR_COLUMNS = ["split", "row", "original", "text", "label", "predicted"]


def errors_table(
    parts: dict[str, tuple[pd.DataFrame, Predictions]], labels: list[str], score: str
) -> pd.DataFrame:
    """Every misclassified row of each named set of rows ("val", "test": its table and its
    predictions), most confident mistakes first (the highest score of the predicted label, then
    in file order): its place in its split's CSV (`row`, from 0), raw and cleaned text, true and
    predicted label, and the score of each, named `<score>_label` and `<score>_predicted` (for a
    model's probabilities, `p_predicted` is its top probability)."""
    index = {label: i for i, label in enumerate(labels)}
    records = []
    for name, (table, rows) in parts.items():
        raw = originals(table)
        for row, (true, predicted) in enumerate(zip(rows.true, rows.predicted, strict=True)):
            if true != predicted:
                scores = [_round(rows.scores[row, index[label]]) for label in (true, predicted)]
                records.append(
                    [name, row, raw[row], table[TEXT].iloc[row], true, predicted, *scores]
                )
    columns = [*ERROR_COLUMNS, f"{score}_label", f"{score}_predicted"]
    table = pd.DataFrame(records, columns=columns)
    # Stable: equal scores stay in file order, val before test.
    return table.sort_values(columns[-1], ascending=False, kind="stable").reset_index(drop=True)


SLICE_COLUMNS = ["slice", "rows", "accuracy"]


def slice_table(values: list[str] | None, rows: Predictions) -> pd.DataFrame:
    """Rows and accuracy per value of the slice column (by value; an empty value is "(empty)"),
    or one slice of all rows when there is no slice column, so that the plot always draws."""
    if values is None:
        values = ["(all rows: no evaluate.slice_column)"] * len(rows.true)
    right = pd.Series(np.array(rows.true) == np.array(rows.predicted))
    names = pd.Series([value or "(empty)" for value in values])
    grouped = right.groupby(names, sort=True)
    return pd.DataFrame(
        {
            "slice": grouped.size().index,
            "rows": grouped.size().to_numpy(),
            "accuracy": [_round(x) for x in grouped.mean()],
        },
        columns=SLICE_COLUMNS,
    )


def write_scores(
    output: Path,
    labels: list[str],
    val: Predictions,
    test: Predictions | None = None,
    name: str | None = None,
    blocks: dict | None = None,
) -> dict:
    """Score the validation rows (and the test rows, if any) and write to `output`:

    - metrics.json: the headline scores only, the test rows' under `test`, and all of them
      under `name` when given: DVC prefixes a metric whose name two files share with the file's
      path in `dvc exp show` (`reports/eval/metrics.json:accuracy`), so the baseline's live
      under `baseline` and the model's keep the short names;
    - per_class.csv and per_class_test.csv (a header only without test rows, as test.csv);
    - confusion.csv of the validation rows.

    `blocks` are more headline numbers of the validation rows (calibration, robustness), merged
    into metrics.json beside the scores. metrics.json last, so that its presence means the
    others are complete. Returns the scores as written, without `name`."""
    metrics = headline_scores(val, labels) | (blocks or {})
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
