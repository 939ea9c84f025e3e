"""How far the model's probabilities can be trusted, and a temperature that makes them fit.

Scores of class probabilities against the true labels: expected calibration error (ECE, over
equal-width bins of the top probability), negative log-likelihood and the Brier score, and the
reliability table a diagram draws (accuracy and rows per confidence bin). Temperature scaling
(Guo et al., 2017): one number T divides the logits before the softmax, fitted by minimising the
NLL on rows that neither trained the model nor are scored in the reports.
"""

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.data import LABEL, TEXT, split_table

if TYPE_CHECKING:
    from pipeline.checkpoint import Checkpoint  # loads torch

BINS = 10  # equal-width bins of the top probability, [0, 0.1), ..., [0.9, 1.0]
# Probabilities are clipped here before the log: a wrong label at probability 0 is a large,
# finite NLL rather than infinity.
EPSILON = 1e-12
# train.calibrate holds out this share of each label's training rows to fit the temperature.
HELD_OUT_SHARE = 0.15
# The temperature is searched in log space between these bounds (golden-section search).
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))
RELIABILITY_COLUMNS = ["bin", "low", "high", "rows", "confidence", "accuracy"]


def _round(x: float) -> float:
    return round(float(x), 6)


def _bin_of(top: np.ndarray, bins: int) -> np.ndarray:
    # The top probability 1.0 belongs to the last bin, not to a bin of its own.
    return np.minimum((top * bins).astype(int), bins - 1)


def calibration_scores(probs: np.ndarray, true: np.ndarray, bins: int = BINS) -> dict:
    """ECE (with its bin count), NLL and Brier score of `probs` (rows, labels) against the true
    label ids `true` (rows,). ECE: the row-weighted mean gap between accuracy and mean top
    probability in each bin; Brier: the mean over rows of the squared distance to the one-hot
    label, summed over labels (0 is perfect, 2 the worst)."""
    top, predicted = probs.max(axis=1), probs.argmax(axis=1)
    right = predicted == true
    which = _bin_of(top, bins)
    ece = sum(
        abs(right[which == b].mean() - top[which == b].mean()) * (which == b).mean()
        for b in range(bins)
        if (which == b).any()
    )
    nll = -np.log(np.clip(probs[np.arange(len(true)), true], EPSILON, 1.0)).mean()
    onehot = np.eye(probs.shape[1])[true]
    brier = ((probs - onehot) ** 2).sum(axis=1).mean()
    return {"bins": bins, "ece": _round(ece), "nll": _round(nll), "brier": _round(brier)}


def reliability_table(probs: np.ndarray, true: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """One row per confidence bin that holds rows (empty bins have no accuracy to draw): its
    range, rows, mean top probability and accuracy. A calibrated model has accuracy equal to
    confidence in every bin."""
    top, right = probs.max(axis=1), probs.argmax(axis=1) == true
    which = _bin_of(top, bins)
    records = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            low, high = b / bins, (b + 1) / bins
            records.append(
                {
                    "bin": f"{low:.2f}-{high:.2f}",
                    "low": _round(low),
                    "high": _round(high),
                    "rows": int(inside.sum()),
                    "confidence": _round(top[inside].mean()),
                    "accuracy": _round(right[inside].mean()),
                }
            )
    return pd.DataFrame(records, columns=RELIABILITY_COLUMNS)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, true: np.ndarray, temperature: float) -> float:
    probs = softmax(logits.astype(np.float64), temperature)
    return float(-np.log(np.clip(probs[np.arange(len(true)), true], EPSILON, 1.0)).mean())


def fit_temperature(logits: np.ndarray, true: np.ndarray, steps: int = 60) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on these rows.

    The NLL is convex in 1/T, so unimodal in log T: a golden-section search over LOG_T_BOUNDS
    finds it, deterministically, with no optimiser state (60 steps narrow the bracket to about
    1e-12 of its width)."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = LOG_T_BOUNDS
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, true, np.exp(a)), nll(logits, true, np.exp(b))
    for _ in range(steps):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, true, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, true, np.exp(b))
    return round(float(np.exp((low + high) / 2.0)), 6)


def hold_out(train: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows to train on and the rows held out to fit the temperature on:
    HELD_OUT_SHARE of each label's rows (at least one), drawn with the training seed."""
    rest, held_out, _ = split_table(train, HELD_OUT_SHARE, seed)
    return rest, held_out


def fit_on(checkpoint: "Checkpoint", rows: pd.DataFrame) -> float:
    """The temperature of `checkpoint`'s model fitted on `rows` (cleaned text and label)."""
    from pipeline.predict import logits_by_part  # loads torch

    logits = logits_by_part(checkpoint, list(rows[TEXT]))["both"].double().numpy()
    true = np.array(checkpoint.vocab.label_ids(rows[LABEL]))
    return fit_temperature(logits, true)
