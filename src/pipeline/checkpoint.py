"""One checkpoint file holds everything predict needs: weights, params, vocabulary and labels.

It contains tensors and plain lists/dicts only, so it loads with `weights_only=True` and
loading a file never runs code from it.
"""

import dataclasses
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import CleanParams, ModelParams
from pipeline.encoding import MAX_TOKEN_CHARS
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.model import TextClassifier
from pipeline.pretrained import MissingExtra, WordPieces
from pipeline.text import CLEANING_RULES
from pipeline.vocab import Vocab

# Raised whenever what a checkpoint holds, or how its inputs are made, changes. Format 2 added
# the input constants below and uncapped the n-grams per token; format 3 holds the `model`
# params section instead of the whole `train` section; format 4 the pretrained encoder's
# config.json and tokenizer.json (None for the from-scratch encoder); format 5 the
# model.attention_dropout param; format 6 holds every weight of the encoder under `encoder.`
# (model.ScratchEncoder's `encoder.embedding.weight`, `encoder.transformer.layers.0. ...`;
# model.PretrainedEncoder's `encoder.bert. ...`); format 7 the `encoder_share` of a model with
# an n-gram path (it predicts with a mixture of the two paths' probabilities); format 8 a
# `temperature` (train.calibrate) that divides the logits before the softmax.
FORMAT = 8
# A checkpoint without a temperature (train.calibrate false, the default) is still written as
# format 7, byte for byte as before; this version reads it with temperature 1. A calibrated one
# is format 8, which older versions refuse instead of printing uncalibrated probabilities.
UNCALIBRATED_FORMAT = 7


@dataclass
class Checkpoint:
    model: TextClassifier
    vocab: Vocab
    config: ModelParams  # what the network is: enough to rebuild it
    clean: CleanParams  # new texts must be cleaned exactly as the training rows were
    threads: int  # CPU threads to score with: as in training, for the same results every time
    initial_positions: torch.Tensor | None  # the learned encoding before training, for plots
    trained_positions: int  # length of the longest training row: later positions never trained
    max_token_chars: int = MAX_TOKEN_CHARS  # n-grams are taken from this many chars of a token
    # The pretrained encoder's config.json and tokenizer.json as plain dicts, so that the
    # checkpoint alone rebuilds it and its tokenizer; None for the from-scratch encoder.
    pretrained: dict | None = None
    # Divides the logits before the softmax (pipeline.calibration): 1 = as trained.
    temperature: float = 1.0

    def word_pieces(self) -> WordPieces | None:
        """The pretrained encoder's tokenizer, or None (the vocabulary's words are the ids)."""
        return None if self.pretrained is None else WordPieces(self.pretrained["tokenizer"])


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    calibrated = checkpoint.temperature != 1.0
    payload = {
        "format": FORMAT if calibrated else UNCALIBRATED_FORMAT,
        # Constants of the code that shape the model's inputs: a model keeps its own.
        "inputs": {
            "cleaning_rules": CLEANING_RULES,
            "max_token_chars": checkpoint.max_token_chars,
            "ngram_scale": checkpoint.model.ngram_scale,
        },
        "model": dataclasses.asdict(checkpoint.config),
        "threads": checkpoint.threads,
        "clean": dataclasses.asdict(checkpoint.clean),
        "tokens": checkpoint.vocab.tokens,
        "labels": checkpoint.vocab.labels,
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.model.state_dict().items()},
        "initial_positions": checkpoint.initial_positions,
        "trained_positions": checkpoint.trained_positions,
        "pretrained": checkpoint.pretrained,
    }
    if calibrated:
        payload["temperature"] = float(checkpoint.temperature)
    # Through a buffer: torch.save names the zip's inner folder after the file, and the
    # temporary file's random name would make equal checkpoints differ in their bytes.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint written by save_checkpoint onto the CPU, in eval mode."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path} is a directory, not a checkpoint; pass the .pt file.")
    if not path.is_file():
        raise PipelineError(f"Model file {path} does not exist; run `dvc repro train` first.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        _check_version(path, payload)
        inputs = payload["inputs"]
        config = ModelParams(**payload["model"])
        vocab = Vocab(tokens=list(payload["tokens"]), labels=list(payload["labels"]))
        encoder = payload["pretrained"]
        model = TextClassifier(
            len(vocab.tokens),
            len(vocab.labels),
            config,
            ngram_scale=float(inputs["ngram_scale"]),
            encoder_config=None if encoder is None else encoder["config"],
        )
        model.load_state_dict(payload["state_dict"])
        checkpoint = Checkpoint(
            model,
            vocab,
            config,
            CleanParams(**payload["clean"]),
            int(payload["threads"]),
            payload["initial_positions"],
            int(payload["trained_positions"]),
            int(inputs["max_token_chars"]),
            encoder,
            _temperature(payload),
        )
    except OlderCheckpoint as err:
        raise PipelineError(str(err)) from None
    except MissingExtra:
        raise  # a pretrained encoder's checkpoint without the extra: say what to install
    # Whatever a damaged or foreign file makes torch.load or the model raise.
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        OSError,
        RuntimeError,
        EOFError,
        KeyError,
        TypeError,
        AttributeError,
        ValueError,
        PipelineError,
    ):
        raise PipelineError(
            f"{path} is not a complete checkpoint of this pipeline; run `dvc repro train` again."
        ) from None
    model.eval()
    return checkpoint


class OlderCheckpoint(Exception):
    """A checkpoint this version of the pipeline cannot read, with what to do about it."""


def _check_version(path: Path, payload: object) -> None:
    """Refuse checkpoints of another format or cleaning rules, saying which way to go."""
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise KeyError("not a checkpoint")
    found = payload.get("format", 1)
    rules = payload.get("inputs", {}).get("cleaning_rules")
    if isinstance(found, int) and found > FORMAT:
        raise OlderCheckpoint(
            f"{path} was written by a newer version of this pipeline (checkpoint format "
            f"{found}, this version reads {FORMAT}); update the code (`git pull`) to use it."
        )
    if found not in (UNCALIBRATED_FORMAT, FORMAT) or rules != CLEANING_RULES:
        raise OlderCheckpoint(
            f"{path} was trained by an older version of this pipeline (checkpoint format {found},"
            f" this version reads {UNCALIBRATED_FORMAT} and {FORMAT}); retrain it with "
            "`dvc repro train`."
        )


def _temperature(payload: dict) -> float:
    """Format 8 holds a positive temperature; format 7 has none (1)."""
    if payload["format"] == UNCALIBRATED_FORMAT:
        if "temperature" in payload:
            raise KeyError("a format-7 checkpoint with a temperature")
        return 1.0
    temperature = float(payload["temperature"])
    if not temperature > 0:
        raise ValueError("temperature must be positive")
    return temperature
