"""Labelling new texts with a trained checkpoint."""

import pytest
import torch

from pipeline.checkpoint import Checkpoint
from pipeline.data import split_table
from pipeline.errors import PipelineError
from pipeline.model import TextClassifier
from pipeline.predict import predict_proba, predict_texts
from pipeline.training import train_model
from pipeline.vocab import build_vocab
from tests.conftest import synthetic_table, tiny_params

LABELS = ["Chemistry", "Maths", "Physics"]
PROBS = [f"p_{label}" for label in LABELS]


@pytest.fixture(scope="module")
def checkpoint():
    train, val, _ = split_table(synthetic_table(LABELS, 40), 0.3, seed=0)
    vocab = build_vocab(train["text"], train["label"], min_freq=1, max_size=1000)
    params = tiny_params(epochs=10, lr=1e-2, batch_size=8)
    return train_model(
        train, val, vocab, params.model, params.train, params.clean, lambda e, m: None
    )


def untrained(labels, **overrides) -> Checkpoint:
    torch.manual_seed(0)
    params = tiny_params(**overrides)
    vocab = build_vocab(["alpha beta gamma"], labels, min_freq=1, max_size=100)
    model = TextClassifier(len(vocab.tokens), len(vocab.labels), params.model).eval()
    return Checkpoint(model, vocab, params.model, params.clean, 1, None, 3)


def test_obvious_texts_get_their_labels(checkpoint):
    texts = [
        "What is the VALUE of physics0, physics3?",
        "Find chemistry1 chemistry4 when chemistry2 is given.",
        "maths5 maths0 maths2 \\( \\frac{1}{2} \\) https://example.com",
    ]
    out = predict_texts(checkpoint, texts)
    assert out["label"].tolist() == ["Physics", "Chemistry", "Maths"]
    assert out["text"].tolist() == texts


def test_one_row_per_text_and_probabilities_sum_to_one(checkpoint):
    texts = ["physics1", "the a of", "maths3 chemistry3", "unknownword", "physics1"]
    out = predict_texts(checkpoint, texts)
    assert list(out.columns) == ["text", "label", *PROBS]
    assert len(out) == len(texts)
    sums = out[PROBS].sum(axis=1)
    assert ((sums - 1.0).abs() < 1e-3).all()
    assert ((out[PROBS] >= 0) & (out[PROBS] <= 1)).all().all()
    # The label is the most probable column, and equal texts get equal rows.
    assert (out[PROBS].idxmax(axis=1) == "p_" + out["label"]).all()
    assert out.iloc[0].tolist() == out.iloc[4].tolist()


def test_a_text_empty_after_cleaning_is_marked_and_the_others_labelled(checkpoint):
    out = predict_texts(checkpoint, ["physics1", "?! ...", "maths2"])
    alone = predict_texts(checkpoint, ["physics1", "maths2"])
    assert out["label"].tolist() == [alone["label"][0], "", alone["label"][1]]
    assert out.loc[1, PROBS].isna().all()
    assert out.loc[[0, 2], PROBS].values.tolist() == alone[PROBS].values.tolist()


def test_no_labelable_text_is_an_error(checkpoint):
    with pytest.raises(PipelineError, match="None of the texts has any words left"):
        predict_texts(checkpoint, ["?! ...", "http://x.org"])


def test_texts_are_cleaned_like_the_training_rows(checkpoint):
    raw = predict_texts(checkpoint, ["PHYSICS2, Physics4!! http://x.org/maths1"])
    clean = predict_texts(checkpoint, ["physics2 physics4"])
    assert raw[PROBS].values.tolist() == clean[PROBS].values.tolist()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_predict_proba_shape_and_rows(pooling):
    proba = predict_proba(untrained(["X", "Y", "Z"], pooling=pooling), ["alpha", "beta gamma"])
    assert proba.shape == (2, 3)
    assert torch.allclose(proba.sum(dim=1), torch.ones(2), atol=1e-6)


def test_a_label_named_label_does_not_overwrite_the_label_column():
    out = predict_texts(untrained(["label", "other"]), ["alpha beta"])
    assert out["label"].tolist()[0] in {"label", "other"}
