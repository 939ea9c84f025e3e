"""Scores of predicted against true labels, the order probe's shuffles, the length buckets, and
the files they are written to."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from pipeline.data import write_table
from pipeline.evaluation import (
    Predictions,
    classification_metrics,
    confusion_table,
    label_scores,
    length_edges,
    length_table,
    per_class_table,
    shuffle_words,
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
SHUFFLED = ["A", "A", "B", "A", "C", "C"]  # 3 of 6 right: accuracy 0.5, drop 1/6


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


labelled_rows = st.lists(
    st.tuples(st.sampled_from("ABC"), st.sampled_from("ABC")), min_size=1, max_size=40
)


@given(labelled_rows)
def test_scores_are_sklearns_to_the_last_bit(rows):
    # Counted by hand so that evaluate need not import sklearn; the same floats, unrounded.
    true, pred = [t for t, _ in rows], [p for _, p in rows]
    labels = ["A", "B", "C", "D"]
    ours = label_scores(true, pred, labels)
    theirs = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.tolist() == reference.tolist()
    assert np.mean(np.asarray(true) == np.asarray(pred)) == accuracy_score(true, pred)


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
TEST_SHUFFLED = ["A", "C", "C", "C"]  # accuracy 0.5, drop 0.25


@pytest.mark.parametrize("name", [None, "baseline"])
def test_metrics_json_holds_headline_scalars_and_the_csvs_each_class(tmp_path, name):
    """metrics.json: the headline numbers only, each a plain number (every per-class number
    would be a column of `dvc exp show`), with the order probe's under `order`; per_class.csv
    and per_class_test.csv: every class."""
    extra = {"accuracy_ngrams_only": 0.5}
    order = {"transformer_only_shuffled": 0.25}
    val = Predictions(TRUE, PRED, SHUFFLED, extra, order)
    test = Predictions(TEST_TRUE, TEST_PRED, TEST_SHUFFLED, {"accuracy_ngrams_only": 0.25}, order)
    returned = write_scores(tmp_path, LABELS, val, test, name=name)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == ({name: returned} if name else returned)
    prefix = f"{name}." if name else ""
    headline = {"accuracy", "macro_f1", "accuracy_ngrams_only"}
    headline |= {"order.accuracy_shuffled", "order.drop", "order.transformer_only_shuffled"}
    expected = {f"{prefix}{key}" for key in headline} | {f"{prefix}test.{k}" for k in headline}
    flat = leaves(written)
    assert set(flat) == expected
    assert all(type(value) is float for value in flat.values()), flat
    assert flat[f"{prefix}accuracy_ngrams_only"] == 0.5
    assert flat[f"{prefix}test.accuracy"] == 0.75
    assert flat[f"{prefix}order.accuracy_shuffled"] == 0.5
    assert flat[f"{prefix}order.drop"] == 0.166667  # 0.666667 - 0.5, rounded as they are
    assert flat[f"{prefix}order.transformer_only_shuffled"] == 0.25
    assert flat[f"{prefix}test.order.drop"] == 0.25
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
    metrics = write_scores(tmp_path, LABELS, Predictions(TRUE, PRED, PRED))
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"accuracy", "macro_f1", "order"}
    assert metrics["order"] == {"accuracy_shuffled": 0.666667, "drop": 0.0}
    assert (tmp_path / "per_class_test.csv").read_text() == "label,precision,recall,f1,support\n"
    assert len(pd.read_csv(tmp_path / "per_class.csv")) == len(LABELS)


# --- the order probe's shuffles -------------------------------------------------------------

TEXTS = ["one two three four five six", "a b", "alone", "x y z x y z w v"]


def test_shuffles_are_permutations_and_the_same_every_run():
    shuffled = shuffle_words(TEXTS)
    assert shuffled == shuffle_words(TEXTS)
    for text, mixed in zip(TEXTS, shuffled, strict=True):
        assert sorted(mixed.split()) == sorted(text.split())
    assert shuffled[0] != TEXTS[0] and shuffled[3] != TEXTS[3]
    assert shuffled[2] == "alone"


def test_a_rows_shuffle_depends_only_on_its_place_and_its_words():
    """Each row draws from its own generator: other rows, and any random draws before, leave
    its shuffle as it is."""
    alone = shuffle_words(TEXTS)[3]
    np.random.seed(1)
    np.random.default_rng().random(5)
    assert shuffle_words(["other", "rows", "here", TEXTS[3]])[3] == alone


def test_only_the_window_is_shuffled():
    words = [f"w{i}" for i in range(12)]
    mixed = shuffle_words([" ".join(words)], window=5)[0].split()
    assert mixed[5:] == words[5:]
    assert sorted(mixed[:5]) == sorted(words[:5]) and mixed[:5] != words[:5]


# --- length buckets -------------------------------------------------------------------------


def texts_of(counts: list[int]) -> list[str]:
    return [" ".join(["w"] * n) for n in counts]


def test_length_edges_are_the_training_quartiles_rounded_down():
    # Counts 1..8: quartiles 2.75, 4.5, 6.25.
    assert length_edges(texts_of(list(range(1, 9)))) == [2, 4, 6]
    # Equal quartiles are one edge: two buckets.
    assert length_edges(texts_of([2] * 7 + [9])) == [2]


def test_length_table_puts_a_row_at_an_edge_in_the_bucket_it_closes():
    counts = [1, 2, 3, 4, 20]  # buckets 1, 1, 2, 2, 4 (none of 5-6 tokens)
    rows = Predictions(
        true=["A", "A", "A", "A", "A"],
        predicted=["A", "B", "A", "A", "A"],
        shuffled=["A", "B", "B", "A", "B"],
    )
    table = length_table([2, 4, 6], texts_of(counts), rows)
    assert table["bucket"].tolist() == [
        "1: 1-2 tokens", "2: 3-4 tokens", "3: 5-6 tokens", "4: 7+ tokens"
    ]  # fmt: skip
    assert table["min_tokens"].tolist() == [1, 3, 5, 7]
    assert table["max_tokens"].tolist()[:3] == [2, 4, 6] and pd.isna(table["max_tokens"].iloc[3])
    assert table["rows"].tolist() == [2, 2, 0, 1]
    assert table["accuracy"].tolist()[:2] == [0.5, 1.0] and table["accuracy"].iloc[3] == 1.0
    assert table["accuracy_shuffled"].tolist()[:2] == [0.5, 0.5]
    assert table["drop"].tolist()[:2] == [0.0, 0.5] and table["drop"].iloc[3] == 1.0
    assert table.iloc[2][["accuracy", "accuracy_shuffled", "drop"]].isna().all()
    one = length_table([3], texts_of([3]), Predictions(["A"], ["A"], ["A"]))
    assert one["bucket"].tolist() == ["1: 1-3 tokens", "2: 4+ tokens"]


def test_length_csv_reads_back_with_whole_token_counts(tmp_path):
    rows = Predictions(["A", "B"], ["A", "A"], ["A", "A"])
    write_table(length_table([1], texts_of([1, 5]), rows), tmp_path / "length.csv")
    text = (tmp_path / "length.csv").read_text()
    assert text.splitlines() == [
        "bucket,min_tokens,max_tokens,rows,accuracy,accuracy_shuffled,drop",
        "1: 1 tokens,1,1,1,1.0,1.0,0.0",
        "2: 2+ tokens,2,,1,0.0,0.0,0.0",
    ]
