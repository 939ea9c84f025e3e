"""The classical baseline every run is compared with: TF-IDF features + a linear SVM."""

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.config import BaselineParams
from pipeline.data import LABEL, TEXT

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def fit_baseline(train: pd.DataFrame, params: BaselineParams) -> "Pipeline":
    """Fit TF-IDF (sublinear tf) + LinearSVC on the training rows; deterministic."""
    # sklearn loads here, not at the top: it pulls in scipy (~0.8 s), which the baseline
    # stage's `--help` and usage errors need not wait for.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    model = make_pipeline(
        TfidfVectorizer(
            analyzer=params.analyzer,
            ngram_range=(params.ngram_min, params.ngram_max),
            sublinear_tf=True,
        ),
        LinearSVC(C=params.C, random_state=0),  # liblinear shuffles: fix its seed
    )
    return model.fit(train[TEXT], train[LABEL])


def predict_baseline(model: "Pipeline", table: pd.DataFrame) -> list[str]:
    return [str(label) for label in model.predict(table[TEXT])]


def baseline_scores(model: "Pipeline", texts: list[str]) -> np.ndarray:
    """Decision scores (rows, labels in sorted order, as model.classes_): the top one is the
    prediction. With two labels LinearSVC gives one score, for the second: the first gets its
    negative."""
    scores = model.decision_function(texts)
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores
