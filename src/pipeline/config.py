"""Typed parameters: params.yaml is loaded into frozen dataclasses and checked before any work.

params.yaml is the single source of defaults, so the dataclasses below have none: a key
missing from the file is an error that names it, as is an unknown key, a value of the wrong
type or an impossible combination.
"""

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NewType, get_args, get_origin

import yaml

from pipeline.errors import PipelineError

Encoder = Literal["scratch", "pretrained"]
PosEncoding = Literal["learned", "sinusoidal", "none"]
Pooling = Literal["mean", "cls"]
Device = Literal["auto", "cpu", "cuda"]
Analyzer = Literal["word", "char_wb"]
Part = Literal["both", "transformer", "ngrams"]  # which of the model's paths gives the logits
PATHS: tuple[Part, ...] = ("transformer", "ngrams")  # each scored alone where the model has both
# A column name of the raw CSV, or "" for none: the one kind of string param that may be empty.
OptionalColumn = NewType("OptionalColumn", str)


@dataclass(frozen=True)
class DataParams:
    raw: str  # path of the input CSV
    text_column: str
    label_column: str


@dataclass(frozen=True)
class CleanParams:
    lowercase: bool
    remove_links: bool
    remove_latex: bool
    remove_punctuation: bool


@dataclass(frozen=True)
class SplitParams:
    val_size: float  # share of each label's rows for validation
    test_size: float  # share of each label's rows held out for a final test; 0 = no test rows
    seed: int

    def __post_init__(self) -> None:
        _require(0.0 < self.val_size < 1.0, "split.val_size", "must be between 0 and 1")
        _require(0.0 <= self.test_size < 1.0, "split.test_size", "must be in [0, 1)")
        _require(
            self.val_size + self.test_size < 1.0,
            "split.test_size",
            f"plus split.val_size ({self.val_size}) must be below 1, to leave training rows",
        )
        _require_seed(self.seed, "split.seed")


@dataclass(frozen=True)
class VocabParams:
    min_freq: int
    max_size: int

    def __post_init__(self) -> None:
        _require(self.min_freq >= 1, "vocab.min_freq", "must be at least 1")
        _require(self.max_size >= 1, "vocab.max_size", "must be at least 1")


@dataclass(frozen=True)
class ModelParams:
    """The network: everything needed to rebuild it, stored in the checkpoint.

    encoder 'scratch' is the from-scratch Transformer that d_model ... norm_first and the
    sub-word embeddings describe; 'pretrained' fine-tunes the BERT-family encoder that
    `pretrained` names (its sizes come from its own config.json, kept in the checkpoint).
    """

    encoder: Encoder
    pretrained: str  # a directory of the encoder's files, or a package file (models/sources/)
    pos_encoding: PosEncoding
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    dropout: float
    attention_dropout: float  # on the attention weights (dropout covers the rest)
    max_seq_len: int
    subword_buckets: int  # hashed character n-gram embeddings; 0 = word embeddings only
    subword_min_n: int
    subword_max_n: int
    ngram_path: bool  # add a linear path on the row's TF-IDF-weighted n-grams to the logits
    transformer_dropout: float  # share of training rows whose transformer logits are dropped
    pooling: Pooling
    norm_first: bool

    def __post_init__(self) -> None:
        for key in ("d_model", "num_heads", "num_layers", "dim_feedforward", "max_seq_len"):
            _require(getattr(self, key) >= 1, f"model.{key}", "must be at least 1")
        _require(
            self.d_model % self.num_heads == 0,
            "model.d_model",
            f"({self.d_model}) must be divisible by model.num_heads ({self.num_heads})",
        )
        _require(self.subword_buckets >= 0, "model.subword_buckets", "must not be negative")
        _require(self.subword_min_n >= 1, "model.subword_min_n", "must be at least 1")
        _require(
            self.subword_max_n >= self.subword_min_n,
            "model.subword_max_n",
            f"must be at least model.subword_min_n ({self.subword_min_n})",
        )
        _require(
            self.subword_buckets > 0 or not self.ngram_path,
            "model.ngram_path",
            "needs model.subword_buckets above 0 (the n-grams are hashed into those buckets)",
        )
        _require(
            0.0 <= self.transformer_dropout < 1.0, "model.transformer_dropout", "must be in [0, 1)"
        )
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _require(
            0.0 <= self.attention_dropout < 1.0, "model.attention_dropout", "must be in [0, 1)"
        )


@dataclass(frozen=True)
class TrainParams:
    """The optimisation: how the network is trained, not what it is."""

    seed: int
    batch_size: int
    epochs: int
    lr: float
    encoder_lr: float  # peak rate of a pretrained encoder's weights (model.encoder pretrained)
    weight_decay: float
    warmup_share: float  # share of all training steps spent warming up the learning rate
    label_smoothing: float
    device: Device
    threads: int
    portable: bool  # pin CPU kernels (pipeline.portable): the same bytes on any x86-64 CPU
    processes: int  # data-parallel training processes (torch.distributed); 1 = one process
    position_loss: float  # weight of the shuffle-detection loss (pipeline.position_loss); 0 = off
    calibrate: bool  # fit a temperature on held-out training rows (pipeline.calibration)

    def __post_init__(self) -> None:
        _require_seed(self.seed, "train.seed")
        for key in ("batch_size", "epochs", "threads", "processes"):
            _require(getattr(self, key) >= 1, f"train.{key}", "must be at least 1")
        _require(self.lr > 0, "train.lr", "must be greater than 0")
        _require(self.encoder_lr > 0, "train.encoder_lr", "must be greater than 0")
        _require(self.weight_decay >= 0, "train.weight_decay", "must not be negative")
        _require(self.position_loss >= 0, "train.position_loss", "must not be negative (0 = off)")
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        _require(0.0 <= self.warmup_share < 1.0, "train.warmup_share", "must be in [0, 1)")


@dataclass(frozen=True)
class BaselineParams:
    analyzer: Analyzer
    ngram_min: int
    ngram_max: int
    C: float

    def __post_init__(self) -> None:
        _require(self.ngram_min >= 1, "baseline.ngram_min", "must be at least 1")
        _require(
            self.ngram_max >= self.ngram_min,
            "baseline.ngram_max",
            f"must be at least baseline.ngram_min ({self.ngram_min})",
        )
        _require(self.C > 0, "baseline.C", "must be greater than 0")


@dataclass(frozen=True)
class EvaluateParams:
    slice_column: OptionalColumn  # a raw CSV column to score per value of; "" = none


@dataclass(frozen=True)
class Params:
    data: DataParams
    clean: CleanParams
    split: SplitParams
    vocab: VocabParams
    model: ModelParams
    train: TrainParams
    baseline: BaselineParams
    evaluate: EvaluateParams


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml and return it typed and checked, or raise PipelineError naming the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(
            f"Parameter file {path} does not exist; run from the project root or pass --params."
        ) from None
    except IsADirectoryError:
        raise PipelineError(f"{path} is a directory, not a YAML file; check --params.") from None
    except OSError as err:
        raise PipelineError(f"Cannot read parameter file {path} ({err.strerror}).") from None
    except UnicodeDecodeError:
        raise PipelineError(f"Parameter file {path} is not UTF-8; save it as UTF-8.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise PipelineError(f"{path} is not valid YAML{line}; check the indentation.") from None
    if raw is None:
        raise PipelineError(
            f"{path} is empty; it must be a mapping of the sections data, clean, split, vocab, "
            "model, train, baseline and evaluate."
        )
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections (data, clean, ...).")
    try:
        return _build(Params, raw, prefix="")
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from None


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of `params` with `{"section.key": value}` changes, converted and checked the same
    way as params.yaml (so "1e-3" becomes a float and a bad value raises PipelineError)."""
    raw = dataclasses.asdict(params)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in raw or key not in raw[section]:
            raise PipelineError(f"unknown parameter '{dotted}'.")
        raw[section][key] = value
    return _build(Params, raw, prefix="")


# Keys that were renamed or replaced: a params.yaml that still has one gets told where it went.
MOVED = {
    **{f"train.{f.name}": f"model.{f.name}" for f in dataclasses.fields(ModelParams)},
    "train.warmup_epochs": "train.warmup_share (the share of all training steps spent warming "
    "up, e.g. 0.067 for 2 of 30 epochs), so that a short run never warms up for longer than it "
    "lasts",
}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from the mapping `raw`, converting and checking every field."""
    name = prefix.rstrip(".") or "the file"
    if not isinstance(raw, dict):
        raise PipelineError(f"{name} must be a mapping of keys to values.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if f"{prefix}{key}" in MOVED:
            raise PipelineError(
                f"'{prefix}{key}' is no longer a parameter: use {MOVED[prefix + key]}."
            )
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else "."
            raise PipelineError(f"unknown key '{prefix}{key}'{suggestion}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key in fields:
        if key not in raw:
            kind = "section" if dataclasses.is_dataclass(hints[key]) else "key"
            raise PipelineError(f"{kind} '{prefix}{key}' is missing; every key must be given.")
        values[key] = _convert(hints[key], raw[key], f"{prefix}{key}")
    return cls(**values)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _convert(kind: Any, value: Any, key: str) -> Any:
    """Convert one YAML value to the field's type, or raise PipelineError naming the key."""
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, prefix=f"{key}.")
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        if value not in choices:
            options = ", ".join(choices)
            raise PipelineError(f"'{key}' is {value!r}; choose one of: {options}.")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise PipelineError(f"'{key}' must be true or false, not {value!r}.")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineError(f"'{key}' must be a whole number, not {value!r}.")
        return value
    if kind is float:
        # PyYAML (YAML 1.1) reads 1e-4 as the string '1e-4'; DVC's -S writes such values.
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(f"'{key}' must be a number, not {value!r}.")
        if not math.isfinite(value):
            raise PipelineError(f"'{key}' must be a finite number, not {value!r}.")
        return float(value)
    if kind is OptionalColumn:
        if value is None:  # `slice_column:` with nothing after it
            return ""
        if not isinstance(value, str):
            raise PipelineError(f"'{key}' must be a column name or empty, not {value!r}.")
        return value.strip()
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            raise PipelineError(f"'{key}' must be a non-empty string, not {value!r}.")
        return value
    raise TypeError(f"unsupported parameter type {kind} for {key}")  # a bug, not user input


def _require_seed(seed: int, key: str) -> None:
    # numpy's legacy seeding takes 0 <= seed < 2**32.
    _require(0 <= seed < 2**32, key, "must be between 0 and 4294967295")


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise PipelineError(f"'{key}' {message}.")
