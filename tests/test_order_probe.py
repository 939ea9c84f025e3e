"""The order probe (the `order` block of evaluate's and baseline's metrics.json) finds order
where a model uses it and nothing where it cannot: a model trained on a task that only word
order decides drops far when each text's words are shuffled; one with no positional encoding
and mean pooling, and the baseline's character n-grams within words, drop 0."""

import importlib.util
import random
from types import ModuleType

import pandas as pd
import pytest
import torch

from pipeline.checkpoint import Checkpoint
from pipeline.config import load_params
from pipeline.data import LABEL, TEXT, split_table
from pipeline.evaluation import headline_scores, shuffle_words
from pipeline.predict import predict_proba
from pipeline.training import train_model
from pipeline.vocab import build_vocab
from tests.conftest import ROOT, synthetic_table, tiny_params

FILLER = ["the", "a", "of", "what", "is", "find", "which", "value"]


def order_table(rows: int, seed: int) -> pd.DataFrame:
    """Texts that hold the same two words, `alpha` and `beta`, in either order, then up to
    three filler words: the label says which of the two comes first, so every label has the
    same words and only their order tells them apart."""
    rng = random.Random(seed)
    table = []
    for _ in range(rows):
        first, second = rng.sample(["alpha", "beta"], 2)
        words = [first, second, *rng.choices(FILLER, k=rng.randint(0, 3))]
        table.append((" ".join(words), f"{first} first"))
    return pd.DataFrame(table, columns=[TEXT, LABEL])


def trained(train: pd.DataFrame, val: pd.DataFrame, **overrides) -> Checkpoint:
    """The tiny model of conftest (both paths), trained on `train`."""
    vocab = build_vocab(train[TEXT], train[LABEL], min_freq=1, max_size=100)
    params = tiny_params(**overrides)
    return train_model(
        train, val, vocab, params.model, params.train, params.clean, lambda e, m: None
    )


def stage(name: str) -> ModuleType:
    """A stage script as a module: its `predictions` is what the stage scores."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_model_that_reads_order_drops_far():
    train, val = order_table(100, seed=0), order_table(60, seed=1)
    checkpoint = trained(train, val)
    rows = stage("evaluate").predictions(checkpoint, val)
    scores = headline_scores(rows, checkpoint.vocab.labels)
    assert scores["accuracy"] >= 0.9  # measured 1.0 (train.seed 42, 1 and 2)
    assert scores["accuracy_ngrams_only"] <= 0.7  # a bag of the same words: about chance
    # A shuffle leaves about half the texts' two words in order: a perfect reader of order
    # drops about 0.5 (measured 0.53-0.58 over train.seed 42, 1, 2).
    assert scores["order"]["drop"] >= 0.3
    assert scores["order"]["transformer_only_shuffled"] <= 0.7


def test_without_positions_and_with_mean_pooling_the_drop_is_zero():
    """Without positions the encoder is permutation-equivariant and mean pooling forgets the
    order; the n-gram path is a bag. The same labels exactly; the probabilities the same up to
    float rounding (attention and pooling add the same numbers in another order)."""
    train, val, _ = split_table(synthetic_table(["A", "B", "C"], 40), 0.3, seed=0)
    checkpoint = trained(train, val, pos_encoding="none", pooling="mean")
    rows = stage("evaluate").predictions(checkpoint, val)
    assert rows.shuffled == rows.predicted
    scores = headline_scores(rows, checkpoint.vocab.labels)
    assert scores["accuracy"] >= 0.9
    assert scores["order"]["drop"] == 0.0
    assert scores["order"]["transformer_only_shuffled"] == scores["accuracy_transformer_only"]
    texts = list(val[TEXT])
    shuffled = shuffle_words(texts, checkpoint.config.max_seq_len)
    assert shuffled != texts
    written, mixed = predict_proba(checkpoint, texts), predict_proba(checkpoint, shuffled)
    torch.testing.assert_close(written, mixed, atol=1e-6, rtol=0)  # measured 5e-7 apart


@pytest.mark.parametrize("table", [order_table(60, seed=2), synthetic_table(["A", "B"], 30)])
def test_the_baselines_character_ngrams_within_words_drop_nothing(table):
    """char_wb n-grams never cross a word boundary: a bag of each word's n-grams, the same in
    any order of the words (so the baseline is at chance on the order task)."""
    baseline = stage("baseline")
    params = load_params(ROOT / "params.yaml").baseline
    assert params.analyzer == "char_wb"
    model = baseline.fit_baseline(table, params)
    rows = baseline.predictions(model, table)
    assert rows.shuffled == rows.predicted
    assert headline_scores(rows, sorted(set(table[LABEL])))["order"]["drop"] == 0.0
