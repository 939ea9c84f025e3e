"""Rows whose given label the model contradicts with confidence: candidates for relabelling.

Confident learning (Northcutt et al., 2021), as cleanlab's `find_label_issues` does with
`filter_by="confident_learning"` (the off-diagonal of the confident joint): the threshold of
label j is the model's mean probability of j over the rows labelled j, so a label the model is
shy of gets a lower bar; each row goes to the most probable of the labels whose threshold it
reaches, and a row that goes to another label than its own is an issue, with that label
suggested. Issues are ranked by the probability of the given label, lowest first (cleanlab's
"self_confidence"). The rule is a few lines of numpy: cleanlab (and its dependencies) would
bring nothing more for it.

It needs probabilities of rows the model was not trained on, so evaluate gives it the
validation and test rows (training rows would need out-of-fold models: k more trainings).
"""

import numpy as np
import pandas as pd

from pipeline.data import LABEL, TEXT, originals

COLUMNS = ["split", "row", "original", "text", "label", "suggested", "p_label", "p_suggested"]


def class_thresholds(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Per label j, the mean probability of j over the rows labelled j; a label with no rows
    here gets 1 (no row can be moved to it with more confidence than certainty)."""
    return np.array(
        [probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(probs.shape[1])]
    )


def find_issues(probs: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the label issues, ranked (lowest probability of the given label first,
    then by row), and the label id suggested for each."""
    above = probs >= class_thresholds(probs, given)
    assigned = np.where(above, probs, -1.0).argmax(axis=1)
    rows = np.flatnonzero(above.any(axis=1) & (assigned != given))
    order = np.lexsort((rows, probs[rows, given[rows]]))
    return rows[order], assigned[rows][order]


def label_issue_table(
    parts: dict[str, tuple[pd.DataFrame, np.ndarray]], labels: list[str]
) -> pd.DataFrame:
    """The issues of each named set of rows ("val", "test": its table and the probabilities of
    its rows), thresholds from all of them together, as one table ranked as find_issues does;
    `row` is the row's place in its split's CSV (from 0, after the header)."""
    names = [name for name, (table, _) in parts.items() for _ in range(len(table))]
    places = np.concatenate([np.arange(len(table)) for table, _ in parts.values()])
    texts = [t for table, _ in parts.values() for t in table[TEXT]]
    raw = [t for table, _ in parts.values() for t in originals(table)]
    index = {label: i for i, label in enumerate(labels)}
    given = np.array([index[v] for table, _ in parts.values() for v in table[LABEL]])
    probs = np.concatenate([p for _, p in parts.values()])
    rows, suggested = find_issues(probs, given)
    return pd.DataFrame(
        {
            "split": [names[r] for r in rows],
            "row": places[rows],
            "original": [raw[r] for r in rows],
            "text": [texts[r] for r in rows],
            "label": [labels[given[r]] for r in rows],
            "suggested": [labels[s] for s in suggested],
            "p_label": probs[rows, given[rows]].round(4),
            "p_suggested": probs[rows, suggested].round(4),
        },
        columns=COLUMNS,
    )
