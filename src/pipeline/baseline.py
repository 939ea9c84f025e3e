"""The classical baseline every run is compared with: TF-IDF features + a linear SVM."""

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import LinearSVC

from pipeline.config import BaselineParams
from pipeline.data import LABEL, TEXT


def fit_baseline(train: pd.DataFrame, params: BaselineParams) -> Pipeline:
    """Fit TF-IDF (sublinear tf) + LinearSVC on the training rows; deterministic."""
    model = make_pipeline(
        TfidfVectorizer(
            analyzer=params.analyzer,
            ngram_range=(params.ngram_min, params.ngram_max),
            sublinear_tf=True,
        ),
        LinearSVC(C=params.C, random_state=0),  # liblinear shuffles: fix its seed
    )
    return model.fit(train[TEXT], train[LABEL])


def predict_baseline(model: Pipeline, table: pd.DataFrame) -> list[str]:
    return [str(label) for label in model.predict(table[TEXT])]
