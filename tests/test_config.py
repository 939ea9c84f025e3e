"""Loading and checking params.yaml."""

import dataclasses
import re

import pytest
import yaml

from pipeline.config import ModelParams, Params, TrainParams, load_params, with_overrides
from pipeline.errors import PipelineError
from tests.conftest import ROOT

REPO_PARAMS = ROOT / "params.yaml"


def repo_dict() -> dict:
    return yaml.safe_load(REPO_PARAMS.read_text(encoding="utf-8"))


def write_params(tmp_path, raw: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def with_value(tmp_path, section: str, key: str, value):
    raw = repo_dict()
    raw[section][key] = value
    return write_params(tmp_path, raw)


def load_error(path) -> str:
    with pytest.raises(PipelineError) as info:
        load_params(path)
    return str(info.value)


def test_repo_params_load_typed():
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert isinstance(params.train.lr, float)
    assert isinstance(params.train.epochs, int)
    # The README's first experiment, `dvc exp run -S train.lr=1e-3`, must change something.
    assert params.train.lr != 1e-3


def test_params_are_frozen():
    params = load_params(REPO_PARAMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("written", "expected"), [("1e-4", 1e-4), ("1e-05", 1e-5)])
def test_lr_in_exponent_notation_becomes_a_float(tmp_path, written, expected):
    text = REPO_PARAMS.read_text(encoding="utf-8")
    # PyYAML reads an unquoted 1e-4 as the string '1e-4'.
    assert yaml.safe_load(f"lr: {written}")["lr"] == written
    path = tmp_path / "params.yaml"
    path.write_text(re.sub(r"(?m)^  lr: \S+", f"  lr: {written}", text), encoding="utf-8")
    lr = load_params(path).train.lr
    assert type(lr) is float
    assert lr == expected


def test_integer_for_a_float_key_becomes_a_float(tmp_path):
    params = load_params(with_value(tmp_path, "train", "weight_decay", 0))
    assert type(params.train.weight_decay) is float


def test_unknown_key_is_named_with_the_nearest_suggestion(tmp_path):
    raw = repo_dict()
    raw["train"]["lrr"] = 0.1
    message = load_error(write_params(tmp_path, raw))
    assert "train.lrr" in message
    assert "'train.lr'" in message


def test_unknown_section_is_named(tmp_path):
    raw = repo_dict()
    raw["deploy"] = {"foo": 1}
    assert "'deploy'" in load_error(write_params(tmp_path, raw))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "lr", "fast"),
        ("train", "epochs", 2.5),
        ("train", "epochs", True),
        ("train", "epochs", "3"),
        ("clean", "lowercase", "yes"),
        ("clean", "lowercase", 1),
        ("train", "lr", float("nan")),
        ("data", "raw", ""),
        ("data", "text_column", 3),
    ],
)
def test_wrong_type_is_rejected_naming_the_key(tmp_path, section, key, value):
    message = load_error(with_value(tmp_path, section, key, value))
    assert f"{section}.{key}" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("epochs", -1),
        ("batch_size", 0),
        ("batch_size", -8),
        ("lr", 0),
        ("lr", -0.001),
        ("warmup_share", 1.0),
        ("warmup_share", -0.1),
        ("position_loss", -0.1),
    ],
)
def test_impossible_train_value_is_rejected_naming_the_key(tmp_path, key, value):
    assert f"train.{key}" in load_error(with_value(tmp_path, "train", key, value))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dropout", 1.0),
        ("transformer_dropout", 1.0),
        ("transformer_dropout", -0.1),
        ("attention_dropout", 1.0),
        ("attention_dropout", -0.1),
        ("num_layers", 0),
    ],
)
def test_impossible_model_value_is_rejected_naming_the_key(tmp_path, key, value):
    assert f"model.{key}" in load_error(with_value(tmp_path, "model", key, value))


def test_ngram_path_needs_subword_buckets(tmp_path):
    raw = repo_dict()
    raw["model"]["subword_buckets"] = 0
    raw["model"]["ngram_path"] = True
    assert "model.ngram_path" in load_error(write_params(tmp_path, raw))
    raw["model"]["ngram_path"] = False
    assert load_params(write_params(tmp_path, raw)).model.subword_buckets == 0


def test_d_model_not_divisible_by_num_heads(tmp_path):
    raw = repo_dict()
    raw["model"]["d_model"] = 60
    raw["model"]["num_heads"] = 8
    message = load_error(write_params(tmp_path, raw))
    assert "model.d_model" in message
    assert "model.num_heads" in message


@pytest.mark.parametrize("val_size", [0, 0.0, 1, 1.5, -0.2])
def test_val_size_outside_zero_one(tmp_path, val_size):
    assert "split.val_size" in load_error(with_value(tmp_path, "split", "val_size", val_size))


@pytest.mark.parametrize("test_size", [1, 1.5, -0.1])
def test_test_size_outside_zero_one(tmp_path, test_size):
    message = load_error(with_value(tmp_path, "split", "test_size", test_size))
    assert "'split.test_size' must be in [0, 1)" in message


def test_test_size_and_val_size_must_leave_training_rows(tmp_path):
    raw = repo_dict()
    raw["split"].update(val_size=0.6, test_size=0.4)
    message = load_error(write_params(tmp_path, raw))
    assert "'split.test_size' plus split.val_size (0.6) must be below 1" in message


def test_test_size_zero_is_off_and_the_default():
    assert load_params(REPO_PARAMS).split.test_size == 0.0


def test_position_loss_is_off_by_default_and_a_negative_weight_is_one_sentence(tmp_path):
    assert load_params(REPO_PARAMS).train.position_loss == 0.0
    message = load_error(with_value(tmp_path, "train", "position_loss", -1))
    assert message.endswith("'train.position_loss' must not be negative (0 = off).")
    assert "train.position_loss" in load_error(with_value(tmp_path, "train", "position_loss", "x"))


@pytest.mark.parametrize("key", ["min_freq", "max_size"])
def test_vocab_sizes_must_be_positive(tmp_path, key):
    assert f"vocab.{key}" in load_error(with_value(tmp_path, "vocab", key, 0))


def test_unknown_pos_encoding_lists_the_choices(tmp_path):
    message = load_error(with_value(tmp_path, "model", "pos_encoding", "rotary"))
    assert "model.pos_encoding" in message
    assert "rotary" in message
    for choice in ("learned", "sinusoidal", "none"):
        assert choice in message


def test_unknown_pooling_and_device_are_rejected(tmp_path):
    assert "model.pooling" in load_error(with_value(tmp_path, "model", "pooling", "max"))
    assert "train.device" in load_error(with_value(tmp_path, "train", "device", "tpu"))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.1\n   epochs: 3\n", encoding="utf-8")
    message = load_error(path)
    assert "not valid YAML" in message
    assert "line" in message


def test_missing_section_is_named(tmp_path):
    raw = repo_dict()
    del raw["vocab"]
    message = load_error(write_params(tmp_path, raw))
    assert "'vocab'" in message
    assert "missing" in message


def test_missing_key_is_named(tmp_path):
    raw = repo_dict()
    del raw["train"]["warmup_share"]
    message = load_error(write_params(tmp_path, raw))
    assert "train.warmup_share" in message
    assert "missing" in message


def test_a_moved_key_names_its_new_place(tmp_path):
    raw = repo_dict()
    raw["train"]["warmup_epochs"] = raw["train"].pop("warmup_share")
    message = load_error(write_params(tmp_path, raw))
    assert "'train.warmup_epochs' is no longer a parameter: use train.warmup_share" in message


@pytest.mark.parametrize("key", ["pos_encoding", "d_model", "ngram_path", "dropout"])
def test_a_model_key_left_in_train_names_its_new_section(tmp_path, key):
    raw = repo_dict()
    raw["train"][key] = raw["model"][key]
    message = load_error(write_params(tmp_path, raw))
    assert f"'train.{key}' is no longer a parameter: use model.{key}." in message


def test_section_that_is_not_a_mapping(tmp_path):
    raw = repo_dict()
    raw["train"] = [1, 2]
    assert "train" in load_error(write_params(tmp_path, raw))


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n", ""])
def test_file_that_is_not_a_mapping(tmp_path, content):
    path = tmp_path / "params.yaml"
    path.write_text(content, encoding="utf-8")
    assert "mapping" in load_error(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = load_error(path)
    assert str(path) in message
    assert "does not exist" in message


def test_error_message_names_the_file(tmp_path):
    path = with_value(tmp_path, "train", "epochs", 0)
    assert str(path) in load_error(path)


def test_params_checks_run_on_direct_construction():
    params = load_params(REPO_PARAMS)
    with pytest.raises(PipelineError, match=r"model\.num_heads"):
        ModelParams(**{**dataclasses.asdict(params.model), "num_heads": 0})
    with pytest.raises(PipelineError, match=r"train\.epochs"):
        TrainParams(**{**dataclasses.asdict(params.train), "epochs": 0})


def test_with_overrides_converts_like_params_yaml():
    base = load_params(REPO_PARAMS)
    original_lr = base.train.lr
    params = with_overrides(base, {"train.lr": "1e-3", "split.seed": 7})
    assert params.train.lr == 1e-3
    assert type(params.train.lr) is float
    assert params.split.seed == 7
    assert params.train.epochs == base.train.epochs
    assert base.train.lr == original_lr != 1e-3  # the original is untouched


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"train.lrr": 0.1}, "train.lrr"),
        ({"nosection.lr": 0.1}, "nosection.lr"),
        ({"train.epochs": 2.5}, "train.epochs"),
        ({"model.d_model": 60}, "model.d_model"),
    ],
)
def test_with_overrides_rejects_bad_changes_naming_the_key(overrides, key):
    with pytest.raises(PipelineError) as info:
        with_overrides(load_params(REPO_PARAMS), overrides)
    assert key in str(info.value)


@pytest.mark.parametrize(("section", "seed"), [("split", -1), ("train", -1), ("split", 2**32)])
def test_seed_outside_numpy_range_is_rejected(tmp_path, section, seed):
    path = with_value(tmp_path, section, "seed", seed)
    with pytest.raises(PipelineError, match=rf"{section}\.seed"):
        load_params(path)
