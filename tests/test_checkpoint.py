"""Saving and loading the one checkpoint file, and refusing anything else."""

import dataclasses
import os
import random

import pytest
import torch

from pipeline.checkpoint import (
    FORMAT,
    UNCALIBRATED_FORMAT,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from pipeline.encoding import encode_table, subwords_of
from pipeline.errors import PipelineError
from pipeline.model import TextClassifier
from pipeline.predict import predict_logits
from pipeline.vocab import build_vocab
from tests.conftest import synthetic_table


def make_checkpoint(params, **model_overrides) -> Checkpoint:
    torch.manual_seed(0)
    table = synthetic_table(["A", "B", "C"], 10)
    vocab = build_vocab(table["text"], table["label"], min_freq=1, max_size=1000)
    config = dataclasses.replace(params.model, **model_overrides)
    model = TextClassifier(len(vocab.tokens), len(vocab.labels), config).eval()
    if model.ngrams is not None:  # as if trained: the idf buffer and weights must round-trip
        with torch.no_grad():
            model.ngrams.idf.uniform_(1.0, 3.0)
            model.ngrams.weight.weight.normal_()
    initial = None
    if config.pos_encoding == "learned":
        initial = model.position_table().detach().clone() + 1.0
    return Checkpoint(model, vocab, config, params.clean, 2, initial, trained_positions=11)


def logits(checkpoint: Checkpoint) -> torch.Tensor:
    table = synthetic_table(["A", "B", "C"], 4, seed=9)
    config = checkpoint.config
    add_cls = config.pooling == "cls"
    subwords = subwords_of(config, checkpoint.max_token_chars)
    data = encode_table(table, checkpoint.vocab, config.max_seq_len, add_cls, subwords)
    return predict_logits(checkpoint.model, data, 5, torch.device("cpu"))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pos_encoding": "sinusoidal", "pooling": "cls"},
        {"pos_encoding": "none", "norm_first": True},
        {"ngram_path": False},
    ],
    ids=["learned", "sinusoidal-cls", "none-prenorm", "no-ngram-path"],
)
def test_round_trip_gives_the_same_model(tmp_path, params, overrides):
    saved = make_checkpoint(params, **overrides)
    path = tmp_path / "models" / "model.pt"
    save_checkpoint(path, saved)
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    assert torch.equal(logits(loaded), logits(saved))
    assert loaded.vocab == saved.vocab
    assert loaded.vocab.labels == ["A", "B", "C"]
    assert loaded.config == saved.config
    assert loaded.threads == 2
    assert loaded.clean == saved.clean
    assert loaded.trained_positions == 11
    if saved.initial_positions is None:
        assert loaded.initial_positions is None
    else:
        assert torch.equal(loaded.initial_positions, saved.initial_positions)


def test_saved_file_loads_with_weights_only(tmp_path, params):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["labels"] == ["A", "B", "C"]
    assert payload["model"]["d_model"] == params.model.d_model


def test_equal_checkpoints_give_equal_bytes_whatever_the_file_name(tmp_path, params):
    checkpoint = make_checkpoint(params)
    save_checkpoint(tmp_path / "a" / "model.pt", checkpoint)
    save_checkpoint(tmp_path / "b" / "other.pt", checkpoint)
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "other.pt").read_bytes()


def test_save_leaves_only_the_checkpoint(tmp_path, params):
    save_checkpoint(tmp_path / "model.pt", make_checkpoint(params))
    assert os.listdir(tmp_path) == ["model.pt"]


def test_load_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_checkpoint(tmp_path / "model.pt")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_load_truncated_file(tmp_path, params, keep):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PipelineError, match="not a complete checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [random.Random(0).randbytes(4096), b"", b"PK\x03\x04 not really a zip"],
    ids=["random", "empty", "fake-zip"],
)
def test_load_garbage_file(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match="not a complete checkpoint"):
        load_checkpoint(path)


class Stowaway:
    """An ordinary class: unpickling it needs arbitrary code, which loading must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_load_does_not_unpickle_arbitrary_objects(tmp_path, params):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    torch.save(Stowaway(marker), path)
    with pytest.raises(PipelineError):
        load_checkpoint(path)
    assert not marker.exists()
    # Control: unpickling it without weights_only would have run the code.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_load_refuses_an_object_hidden_in_a_valid_payload(tmp_path, params):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    payload = torch.load(path, weights_only=True)
    marker = tmp_path / "code-ran"
    payload["extra"] = Stowaway(marker)
    torch.save(payload, path)
    with pytest.raises(PipelineError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.pop("state_dict"),
        lambda p: p["model"].update(d_model=32),  # weights no longer fit the model
        lambda p: p["model"].update(bogus=1),
        lambda p: p["model"].update(num_layers=0),
        lambda p: p.update(tokens=p["tokens"][:-1]),
    ],
    ids=[
        "no-state-dict",
        "shape",
        "unknown-param",
        "bad-param",
        "vocab-size",
    ],
)
def test_load_inconsistent_payload(tmp_path, params, corrupt):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    payload = torch.load(path, weights_only=True)
    corrupt(payload)
    torch.save(payload, path)
    with pytest.raises(PipelineError, match="not a complete checkpoint"):
        load_checkpoint(path)


def test_load_a_list_instead_of_a_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(PipelineError):
        load_checkpoint(path)


@pytest.mark.parametrize("key", ["trained_positions", "initial_positions"])
def test_load_payload_missing_a_late_key(tmp_path, params, key):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    payload = torch.load(path, weights_only=True)
    del payload[key]
    torch.save(payload, path)
    with pytest.raises(PipelineError):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.update(format=1), "trained by an older version"),
        (lambda p: p.update(format=2), "trained by an older version"),
        (lambda p: p.pop("format"), "trained by an older version"),
        (lambda p: p["inputs"].update(cleaning_rules=0), "trained by an older version"),
        (lambda p: p.update(format=99), "written by a newer version"),
    ],
    ids=["format-1", "format-2", "no-format", "other-cleaning-rules", "newer"],
)
def test_a_checkpoint_of_another_version_says_what_to_do(tmp_path, params, change, expected):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=expected) as error:
        load_checkpoint(path)
    assert "dvc repro train" in str(error.value) or "update the code" in str(error.value)


def format_5_name(key: str) -> str:
    """A weight's name before format 6 put every encoder weight under `encoder.`."""
    if key.startswith("encoder.transformer."):
        return key.replace("encoder.transformer.", "encoder.", 1)
    return key.removeprefix("encoder.")


def test_a_format_5_checkpoint_is_one_sentence_asking_to_retrain(tmp_path, params):
    """A model.pt of format 5, its weights under their old names: refused before they
    are read, with what to run: not a key error, nor "not a complete checkpoint"."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_checkpoint(params))
    payload = torch.load(path, weights_only=True)
    payload["format"] = 5
    payload["state_dict"] = {format_5_name(k): v for k, v in payload["state_dict"].items()}
    assert "embedding.weight" in payload["state_dict"]
    assert "encoder.layers.0.linear1.weight" in payload["state_dict"]
    torch.save(payload, path)
    with pytest.raises(PipelineError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"{path} was trained by an older version of this pipeline (checkpoint format 5, this "
        f"version reads {UNCALIBRATED_FORMAT} and {FORMAT}); retrain it with `dvc repro train`."
    )


def test_the_input_constants_travel_with_the_checkpoint(tmp_path, params):
    checkpoint = make_checkpoint(params)
    checkpoint.max_token_chars = 7
    checkpoint.model.ngram_scale = checkpoint.model.ngrams.scale = 3.0
    path = tmp_path / "model.pt"
    save_checkpoint(path, checkpoint)
    loaded = load_checkpoint(path)
    assert loaded.max_token_chars == 7
    assert loaded.model.ngrams.scale == 3.0
    assert torch.equal(logits(loaded), logits(checkpoint))
