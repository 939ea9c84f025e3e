"""The quality report's parts, on numbers worked out by hand: errors.csv, calibration scores and
the temperature, label issues (confident learning), robustness perturbations and the
directional check, slices."""

import numpy as np
import pandas as pd
import pytest

from pipeline.calibration import (
    calibration_scores,
    fit_temperature,
    hold_out,
    reliability_table,
    softmax,
)
from pipeline.data import LABEL, ORIGINAL, TEXT
from pipeline.evaluation import Predictions, errors_table, slice_table
from pipeline.label_issues import class_thresholds, find_issues, label_issue_table
from pipeline.robustness import (
    MAX_ROWS,
    PERTURBATIONS,
    checked_rows,
    perturb,
    robustness_scores,
    typical_words,
)
from tests.conftest import synthetic_table

# --- calibration ----------------------------------------------------------------------------

# Four rows, two labels. Top probabilities 0.95, 0.85, 0.55, 0.65; rows 0, 1, 3 right.
PROBS = np.array([[0.95, 0.05], [0.15, 0.85], [0.55, 0.45], [0.35, 0.65]])
TRUE = np.array([0, 1, 1, 1])


def test_calibration_scores_by_hand():
    scores = calibration_scores(PROBS, TRUE, bins=10)
    # Bins: 0.9 {0.95 right}, 0.8 {0.85 right}, 0.5 {0.55 wrong}, 0.6 {0.65 right}:
    # gaps 0.05, 0.15, 0.55, 0.35, each a quarter of the rows.
    assert scores["ece"] == pytest.approx((0.05 + 0.15 + 0.55 + 0.35) / 4, abs=1e-6)
    nll = -(np.log(0.95) + np.log(0.85) + np.log(0.45) + np.log(0.65)) / 4
    assert scores["nll"] == pytest.approx(nll, abs=1e-6)
    brier = (2 * 0.05**2 + 2 * 0.15**2 + 2 * 0.55**2 + 2 * 0.35**2) / 4
    assert scores["brier"] == pytest.approx(brier, abs=1e-6)
    assert scores["bins"] == 10
    # Two bins of 0.5 each: 0.5-1.0 holds every row, accuracy 3/4, confidence 0.75.
    assert calibration_scores(PROBS, TRUE, bins=2)["ece"] == pytest.approx(0.0, abs=1e-6)


def test_a_top_probability_of_one_is_in_the_last_bin():
    table = reliability_table(np.array([[1.0, 0.0], [0.92, 0.08]]), np.array([0, 1]))
    assert table.to_dict("records") == [
        {"bin": "0.90-1.00", "low": 0.9, "high": 1.0, "rows": 2, "confidence": 0.96,
         "accuracy": 0.5}
    ]  # fmt: skip


def test_reliability_table_leaves_out_empty_bins_and_counts_every_row():
    table = reliability_table(PROBS, TRUE)
    assert table["bin"].tolist() == ["0.50-0.60", "0.60-0.70", "0.80-0.90", "0.90-1.00"]
    assert table["rows"].sum() == len(TRUE)
    assert table["accuracy"].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_the_fitted_temperature_undoes_a_known_one():
    """Labels drawn from softmax(z), logits shown as z * 3: the NLL-optimal temperature is
    near 3, and it beats T = 1 on the rows it was fitted on."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 3)) * 2
    true = np.array([rng.choice(3, p=p) for p in softmax(z)])
    t = fit_temperature(z * 3, true)
    assert t == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z * 3, true) == t  # deterministic
    before = calibration_scores(softmax(z * 3), true)
    after = calibration_scores(softmax(z * 3, t), true)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]


def test_hold_out_takes_a_share_of_each_label_and_no_row_twice():
    train = synthetic_table(["A", "B"], 40)
    rest, held = hold_out(train, seed=1)
    assert held[LABEL].value_counts().to_dict() == {"A": 6, "B": 6}  # 15 % of 40
    assert len(rest) + len(held) == len(train)
    assert not set(rest[TEXT]) & set(held[TEXT])
    assert hold_out(train, seed=1)[1].equals(held)


# --- errors.csv -----------------------------------------------------------------------------


def test_errors_are_the_wrong_rows_most_confident_first():
    labels = ["A", "B"]
    val = pd.DataFrame({TEXT: ["a", "b", "c"], LABEL: ["A", "B", "A"], ORIGINAL: ["A!", "B", "C"]})
    test = pd.DataFrame({TEXT: ["d"], LABEL: ["B"]})  # no `original`: its text is its own
    on_val = Predictions(
        ["A", "B", "A"], ["B", "B", "B"], [], scores=np.array([[0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])
    )
    on_test = Predictions(["B"], ["A"], [], scores=np.array([[0.7, 0.3]]))
    table = errors_table({"val": (val, on_val), "test": (test, on_test)}, labels, "p")
    assert list(table.columns) == [
        "split", "row", "original", "text", "label", "predicted", "p_label", "p_predicted"
    ]  # fmt: skip
    assert table.values.tolist() == [
        ["val", 2, "C", "c", "A", "B", 0.2, 0.8],
        ["test", 0, "d", "d", "B", "A", 0.3, 0.7],
        ["val", 0, "A!", "a", "A", "B", 0.4, 0.6],
    ]


# --- label issues ---------------------------------------------------------------------------


def test_confident_learning_by_hand():
    # Thresholds: A = mean p_A over rows labelled A = (0.9 + 0.2 + 0.7) / 3 = 0.6;
    #             B = mean p_B over rows labelled B = (0.8 + 0.35) / 2 = 0.575.
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.2, 0.8], [0.65, 0.35]])
    given = np.array([0, 0, 0, 1, 1])
    assert class_thresholds(probs, given) == pytest.approx([0.6, 0.575])
    rows, suggested = find_issues(probs, given)
    # Row 1 (A, p_B 0.8 >= 0.575) and row 4 (B, p_A 0.65 >= 0.6); row 1's given label is the
    # less probable (0.2 against 0.35), so it comes first.
    assert rows.tolist() == [1, 4] and suggested.tolist() == [1, 0]


def test_a_row_above_both_thresholds_stays_with_the_more_probable_label():
    # Thresholds A 0.5, B 0.35: row 0 (labelled A, 0.55 / 0.45) reaches both, and A is the
    # more probable: no issue. Row 2 (labelled B) reaches both too, but A is more probable.
    probs = np.array([[0.55, 0.45], [0.45, 0.55], [0.65, 0.35]])
    given = np.array([0, 0, 1])
    assert class_thresholds(probs, given) == pytest.approx([0.5, 0.35])
    rows, suggested = find_issues(probs, given)
    assert rows.tolist() == [2, 1] and suggested.tolist() == [0, 1]  # p given: 0.35, 0.45


def test_label_issue_table_names_split_and_row():
    # Thresholds over both splits: A (0.8 + 0.8) / 2 = 0.8, B (0.15 + 0.9) / 2 = 0.525.
    val = pd.DataFrame({TEXT: ["a", "b", "e"], LABEL: ["A", "B", "B"]})
    test = pd.DataFrame({TEXT: ["c"], LABEL: ["A"]})
    parts = {
        "val": (val, np.array([[0.8, 0.2], [0.85, 0.15], [0.1, 0.9]])),
        "test": (test, np.array([[0.8, 0.2]])),
    }
    table = label_issue_table(parts, ["A", "B"])
    assert table[["split", "row", "label", "suggested"]].values.tolist() == [["val", 1, "B", "A"]]


# --- robustness -----------------------------------------------------------------------------


def test_perturbations_are_seeded_and_preserve_what_they_should():
    texts = ["What is the Velocity of 12 balls?", "Photosynthesis needs light in 2024"]
    for name in PERTURBATIONS:
        assert perturb(texts, name) == perturb(texts, name), name
    upper, typo, numbers, prefix = (
        perturb(texts, n) for n in ("upper_case", "typo", "numbers", "prefix")
    )
    assert upper[0] == texts[0].upper()
    assert prefix[1] == "Q1. " + texts[1]
    # One swap of two inner letters in each word of 6+ letters, the rest as written.
    for before, after in zip(texts[1].split(), typo[1].split(), strict=True):
        assert sorted(before) == sorted(after) and before[0] + before[-1] == after[0] + after[-1]
        assert (before != after) <= (len(before) >= 6)
    assert typo[1] != texts[1]
    # Numbers change, keep their digit count; words do not change.
    assert numbers[0].split()[:4] == texts[0].split()[:4]
    assert numbers[0].split()[4] != "12" and len(numbers[0].split()[4]) == 2
    assert numbers[1].split()[-1] != "2024" and len(numbers[1].split()[-1]) == 4


def test_typical_words_are_the_most_particular_common_words():
    texts = ["force mass the"] * 5 + ["cell the"] * 5 + ["force cell"]
    labels = ["P"] * 5 + ["B"] * 6
    # force: 5 of 6 rows P; mass: 5 of 5 P; cell: 6 of 6 B; the: 5 of 10.
    assert typical_words(texts, labels, ["B", "P"]) == {"B": "cell", "P": "mass"}


def test_flip_rates_and_directional_share_from_a_scorer():
    """A scorer that says B when a text holds a digit or 'bee' and A otherwise, and that lowers
    A's score when the text gets longer."""

    def score(texts: list[str]) -> np.ndarray:
        b = np.array([any(c.isdigit() for c in t) or "bee" in t.split() for t in texts], float)
        a = 1.0 - b - 0.01 * np.array([len(t.split()) for t in texts])
        return np.column_stack([a, b])

    originals = ["one apple", "two 2 apples"]
    as_written = score(originals)
    result = robustness_scores(
        score,
        str.lower,  # cleaning: lower case only
        originals,
        as_written.argmax(axis=1),
        as_written,
        ([0, 1], ["ant", "bee"]),  # row 0 appends A's word, row 1 B's
    )
    assert result["upper_case"] == 0.0  # cleaning undoes it
    assert result["numbers"] == 0.0  # still a digit: still B
    assert result["prefix"] == 0.5  # "q1." holds a digit: row 0 becomes B
    # Row 0: A's score falls by 0.01 with one more word (fails); row 1: B's stays 1 (passes).
    assert result["directional"] == 0.5
    no_direction = robustness_scores(
        score, str.lower, originals, as_written.argmax(1), as_written, None
    )
    assert "directional" not in no_direction


def test_beyond_max_rows_a_seeded_sample_of_rows_is_checked():
    rows = MAX_ROWS + 100
    sample = checked_rows(rows)
    assert len(set(sample)) == MAX_ROWS and list(sample) == sorted(sample) and sample[-1] < rows
    assert np.array_equal(sample, checked_rows(rows))  # the same rows every run
    assert list(checked_rows(3)) == [0, 1, 2]
    seen = []

    def score(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return np.column_stack([np.ones(len(texts)), np.zeros(len(texts))])

    originals = [f"row {i}" for i in range(rows)]
    as_written = score(originals)
    result = robustness_scores(score, str.lower, originals, np.zeros(rows, int), as_written, None)
    assert result["rows"] == MAX_ROWS
    prefixed = {int(text.split()[-1]) for text in seen if text.startswith("q1. ")}
    assert prefixed == set(sample.tolist())


# --- slices ---------------------------------------------------------------------------------


def test_slice_table_counts_and_scores_each_value():
    rows = Predictions(["A", "A", "B", "B"], ["A", "B", "B", "B"], [])
    table = slice_table(["x", "x", "", "y"], rows)
    assert table.values.tolist() == [["(empty)", 1, 1.0], ["x", 2, 0.5], ["y", 1, 1.0]]
    whole = slice_table(None, rows)
    assert whole["rows"].tolist() == [4] and whole["accuracy"].tolist() == [0.75]
