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

from pipeline.config import CleanParams, TrainParams
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.model import TextClassifier
from pipeline.vocab import Vocab

FORMAT = 1


@dataclass
class Checkpoint:
    model: TextClassifier
    vocab: Vocab
    params: TrainParams
    clean: CleanParams  # new texts must be cleaned exactly as the training rows were
    initial_positions: torch.Tensor | None  # the learned encoding before training, for plots
    trained_positions: int  # length of the longest training row: later positions never trained


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    payload = {
        "format": FORMAT,
        "params": dataclasses.asdict(checkpoint.params),
        "clean": dataclasses.asdict(checkpoint.clean),
        "tokens": checkpoint.vocab.tokens,
        "labels": checkpoint.vocab.labels,
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.model.state_dict().items()},
        "initial_positions": checkpoint.initial_positions,
        "trained_positions": checkpoint.trained_positions,
    }
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
        if payload.get("format") != FORMAT:
            raise KeyError("format")
        params = TrainParams(**payload["params"])
        vocab = Vocab(tokens=list(payload["tokens"]), labels=list(payload["labels"]))
        model = TextClassifier(len(vocab.tokens), len(vocab.labels), params)
        model.load_state_dict(payload["state_dict"])
        checkpoint = Checkpoint(
            model,
            vocab,
            params,
            CleanParams(**payload["clean"]),
            payload["initial_positions"],
            int(payload["trained_positions"]),
        )
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
