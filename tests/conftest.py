"""Shared test helpers: the repo's own params, and small synthetic CSVs the tests write."""

import dataclasses
import os
import random
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import ModelParams, Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than there are CPUs, at most 4. The end-to-end tests spend
    much of their time waiting (on DVC's queue, on a killed stage staying quiet), and the
    extra worker fills those gaps."""
    return min((os.cpu_count() or 1) + 1, 4)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with end-to-end tests first (each takes minutes): started last, one of them would
    leave a single worker running alone at the end. A file's tests keep their order."""
    slow = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in slow)


# Words that mark each synthetic class, plus words every class shares.
_COMMON = ["the", "a", "of", "what", "is", "find", "which", "value", "given", "when", "how"]


def synthetic_table(labels: list[str], rows_per_label: int, seed: int = 0) -> pd.DataFrame:
    """Rows whose text mixes shared filler with words owned by the row's label, so a small
    model can learn them in a few epochs."""
    rng = random.Random(seed)
    rows = []
    for label in labels:
        own = [f"{label.lower()}{i}" for i in range(6)]
        for _ in range(rows_per_label):
            words = rng.choices(_COMMON, k=rng.randint(3, 8)) + rng.choices(own, k=3)
            rng.shuffle(words)
            rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return pd.DataFrame(rows, columns=["text", "label"])


def write_csv(
    path: Path,
    labels: list[str],
    rows_per_label: int,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
) -> Path:
    table = synthetic_table(labels, rows_per_label, seed)
    table.columns = [text_column, label_column]
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


# A model small enough to train in about a second on a few hundred rows, by params section.
TINY = {
    "model": dict(d_model=16, num_heads=2, num_layers=1, dim_feedforward=32, max_seq_len=32),
    "train": dict(epochs=8, batch_size=8, lr=1e-2, warmup_share=0.1, threads=1),
}
MODEL_KEYS = {field.name for field in dataclasses.fields(ModelParams)}


def tiny_params(**overrides) -> Params:
    """The repository's params.yaml with the tiny model and training, and `overrides` (keys of
    the model or the train section, each put where it belongs)."""
    base = load_params(ROOT / "params.yaml")
    changes = {**TINY["model"], **TINY["train"], **overrides}
    model = {k: v for k, v in changes.items() if k in MODEL_KEYS}
    train = {k: v for k, v in changes.items() if k not in MODEL_KEYS}
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, **model),
        train=dataclasses.replace(base.train, **train),
    )


@pytest.fixture
def params() -> Params:
    """The repository's params.yaml, with a tiny model."""
    return tiny_params()
