"""The search space of stages/tune.py: tune.yaml read into typed dimensions and checked against
params.yaml before any trial runs.

tune.yaml has three sections:

    fixed:  {param: value}          set in every trial (e.g. fewer epochs)
    search: {param: dimension}      float (low, high, log), int (low, high, log) or
                                    categorical (choices), each param named as `dvc exp run -S`
                                    names it (train.lr)
    pruner: {kind: ...}             median (startup_trials, warmup_epochs), halving
                                    (min_epochs, reduction_factor) or none

Nothing here imports Optuna: the space is checked, and each trial's params are checked, with
pipeline.config's own rules (with_overrides), the ones every stage applies.
"""

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config import Params, with_overrides
from pipeline.errors import PipelineError

Value = bool | int | float | str  # what a categorical choice or a fixed value may be


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted params.yaml key
    kind: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Value, ...] = ()


@dataclass(frozen=True)
class Pruner:
    kind: Literal["median", "halving", "none"]
    startup_trials: int = 0  # median: trials that run to the end before any is pruned
    warmup_epochs: int = 0  # median: epochs every trial runs before it can be pruned
    min_epochs: int = 1  # halving: epochs of the first rung
    reduction_factor: int = 3  # halving: share (1/factor) of trials promoted at each rung


@dataclass(frozen=True)
class Space:
    fixed: dict[str, Value]
    search: tuple[Dimension, ...]
    pruner: Pruner


SECTIONS = ("fixed", "search", "pruner")
PRUNER_KEYS = {
    "median": ("startup_trials", "warmup_epochs"),
    "halving": ("min_epochs", "reduction_factor"),
    "none": (),
}
DIMENSION_KEYS = {
    "float": ("type", "low", "high", "log"),
    "int": ("type", "low", "high", "log"),
    "categorical": ("type", "choices"),
}


def param_types(params: Params) -> dict[str, type]:
    """Each dotted params.yaml key and its type (bool, int, float, str; a Literal is str)."""
    types = {}
    for section in dataclasses.fields(params):
        hints = typing.get_type_hints(section.type)
        for field in dataclasses.fields(section.type):
            kind = hints[field.name]
            types[f"{section.name}.{field.name}"] = str if typing.get_origin(kind) else kind
    return types


def load_space(path: Path, params: Params) -> Space:
    """tune.yaml read and checked against `params`: every key exists, every type fits, every
    range's ends and every choice are values the param can take; else one PipelineError."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"Search space {path} does not exist; pass --space.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"Cannot read search space {path} ({err}).") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path} is not valid YAML{line}; check the indentation.") from None
    try:
        return _space(raw, params)
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from None


def _space(raw: Any, params: Params) -> Space:
    if not isinstance(raw, dict):
        raise PipelineError("must be a mapping with the sections fixed, search and pruner.")
    _known(raw, SECTIONS, "section")
    types = param_types(params)
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise PipelineError("'fixed' must be a mapping of params to values.")
    for key in fixed:
        _known_param(key, types)
    try:
        with_overrides(params, fixed)
    except PipelineError as err:
        raise PipelineError(f"fixed: {err}") from None
    search = raw.get("search")
    if not isinstance(search, dict) or not search:
        raise PipelineError("'search' must map at least one param to a dimension.")
    dims = []
    for key, spec in search.items():
        _known_param(key, types)
        if key in fixed:
            raise PipelineError(f"'{key}' is both fixed and searched; keep one.")
        dims.append(_dimension(key, spec, types[key], params, fixed))
    return Space(dict(fixed), tuple(dims), _pruner(raw.get("pruner") or {"kind": "none"}))


def _dimension(key: str, spec: Any, kind: type, params: Params, fixed: dict) -> Dimension:
    if not isinstance(spec, dict) or spec.get("type") not in DIMENSION_KEYS:
        raise PipelineError(
            f"search '{key}' must be a mapping with type float, int or categorical."
        )
    _known(spec, DIMENSION_KEYS[spec["type"]], f"key of search '{key}'")

    def allowed(value: Any) -> Any:
        """`value` as the param takes it (converted by pipeline.config), or an error."""
        try:
            converted = with_overrides(params, {**fixed, key: value})
        except PipelineError as err:
            raise PipelineError(
                f"search '{key}': {value!r} is not a value it can take: {err}"
            ) from None
        section, _, name = key.partition(".")
        return getattr(getattr(converted, section), name)

    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise PipelineError(f"search '{key}' needs a non-empty list of choices.")
        if len(set(map(repr, choices))) < len(choices):
            raise PipelineError(f"search '{key}' lists a choice twice.")
        return Dimension(key, "categorical", choices=tuple(allowed(c) for c in choices))
    wanted = float if spec["type"] == "float" else int
    if kind is not wanted:
        fits = {int: "int", float: "float"}.get(kind, "categorical")
        raise PipelineError(
            f"search '{key}' is type {spec['type']}, but params.yaml holds a "
            f"{kind.__name__} there; use type {fits}."
        )
    if "low" not in spec or "high" not in spec:
        raise PipelineError(f"search '{key}' needs low and high.")
    low, high = allowed(spec["low"]), allowed(spec["high"])
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise PipelineError(f"search '{key}': log must be true or false.")
    if not low < high:
        raise PipelineError(f"search '{key}': low ({low}) must be below high ({high}).")
    if log and low <= 0:
        raise PipelineError(f"search '{key}': a log range needs low above 0, not {low}.")
    return Dimension(key, spec["type"], low, high, log)


def _pruner(raw: Any) -> Pruner:
    if not isinstance(raw, dict) or raw.get("kind") not in PRUNER_KEYS:
        raise PipelineError("'pruner' must be a mapping with kind median, halving or none.")
    _known(raw, ("kind", *PRUNER_KEYS[raw["kind"]]), f"key of a {raw['kind']} pruner")
    values = {k: v for k, v in raw.items() if k != "kind"}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PipelineError(f"pruner {name} must be a whole number, 0 or more.")
    if values.get("reduction_factor", 2) < 2 or values.get("min_epochs", 1) < 1:
        raise PipelineError("pruner reduction_factor must be at least 2, min_epochs at least 1.")
    return Pruner(raw["kind"], **values)


def _known(raw: dict, keys: tuple[str, ...], what: str) -> None:
    for key in raw:
        if key not in keys:
            raise PipelineError(f"unknown {what} '{key}'{_hint(str(key), keys)}")


def _known_param(key: Any, types: dict[str, type]) -> None:
    if key not in types:
        raise PipelineError(f"'{key}' is not a params.yaml key{_hint(str(key), list(types))}")


def _hint(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else "."


def check_trial(params: Params, space: Space, chosen: dict[str, Value]) -> None:
    """Raise PipelineError if the fixed values and `chosen` together are impossible (d_model
    not divisible by num_heads): pipeline.config's own check, before DVC runs anything."""
    with_overrides(params, {**space.fixed, **chosen})


def set_args(values: dict[str, Value]) -> list[str]:
    """`dvc exp run` arguments that set `values` in params.yaml (-S is read as YAML)."""
    args = []
    for key, value in values.items():
        text = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
        args += ["-S", f"{key}={text}"]
    return args
