"""Labelling texts with a trained checkpoint: the model's inference, apart from training."""

import pandas as pd
import torch
from torch import nn

from pipeline.checkpoint import Checkpoint
from pipeline.config import Part
from pipeline.data import LABEL, TEXT
from pipeline.encoding import Encoded, batches, encode_table, subwords_of
from pipeline.errors import PipelineError
from pipeline.text import clean_text

BATCH_SIZE = 64


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: Encoded,
    batch_size: int,
    device: torch.device,
    part: Part = "both",
) -> torch.Tensor:
    """Logits for every row of `data`, in order, on the CPU (of one path alone if `part` says)."""
    model.eval()
    rows, logits = [], []
    for batch in batches(data, batch_size):
        batch = batch.to(device)
        rows += batch.index
        logits.append(model(**batch.inputs(), part=part).cpu())
    # Batches come sorted by length: put the rows back in the table's order.
    return torch.cat(logits)[torch.tensor(rows).argsort()]


def _encode(checkpoint: Checkpoint, cleaned: list[str]) -> Encoded:
    config = checkpoint.config
    table = pd.DataFrame({TEXT: cleaned, LABEL: checkpoint.vocab.labels[0]})
    add_cls = config.pooling == "cls"
    subwords = subwords_of(config, checkpoint.max_token_chars)
    return encode_table(
        table, checkpoint.vocab, config.max_seq_len, add_cls, subwords, checkpoint.word_pieces()
    )


def logits_by_part(
    checkpoint: Checkpoint, cleaned: list[str], parts: tuple[Part, ...] = ("both",)
) -> dict[Part, torch.Tensor]:
    """Logits (rows, labels) of texts already cleaned like the training rows, by the whole model
    and/or by one of its paths alone, for each of `parts`; the texts are encoded once for all."""
    data = _encode(checkpoint, cleaned)
    cpu = torch.device("cpu")
    return {part: predict_logits(checkpoint.model, data, BATCH_SIZE, cpu, part) for part in parts}


def probabilities(checkpoint: Checkpoint, logits: torch.Tensor) -> torch.Tensor:
    """The whole model's class probabilities from its logits: scaled by the checkpoint's
    temperature (1 unless train.calibrate fitted one), as predict prints them."""
    return (logits / checkpoint.temperature).softmax(dim=1)


def predict_proba(checkpoint: Checkpoint, cleaned: list[str]) -> torch.Tensor:
    """Class probabilities (rows, labels) for texts already cleaned like the training rows."""
    return probabilities(checkpoint, logits_by_part(checkpoint, cleaned)["both"])


def predict_labels(
    checkpoint: Checkpoint, cleaned: list[str], parts: tuple[Part, ...] = ("both",)
) -> dict[Part, list[str]]:
    """The most probable label of each cleaned text, by the whole model and/or by one of its
    paths alone, for each of `parts` (a temperature never changes which label is on top)."""
    labels = checkpoint.vocab.labels
    return {
        part: [labels[i] for i in logits.argmax(dim=1)]
        for part, logits in logits_by_part(checkpoint, cleaned, parts).items()
    }


def predict_texts(
    checkpoint: Checkpoint, texts: list[str], min_confidence: float = 0.0
) -> pd.DataFrame:
    """Label raw texts: one row per text with its label and a column `p_<label>` per label.

    A text with no words left after cleaning cannot be labelled: its label is "" and its
    probabilities are missing (NaN). A text whose top probability is below `min_confidence`
    is left unlabelled too (label "", probabilities kept), as Made With ML's "other". Raises
    PipelineError only if no text can be labelled.
    """
    cleaned = [clean_text(text, checkpoint.clean) for text in texts]
    keep = [i for i, text in enumerate(cleaned) if text]
    if not keep:
        raise PipelineError(
            "None of the texts has any words left after cleaning (only punctuation, links or "
            "markup); give each text at least one word."
        )
    labels = checkpoint.vocab.labels
    probs = torch.full((len(texts), len(labels)), float("nan"))
    probs[keep] = predict_proba(checkpoint, [cleaned[i] for i in keep])
    predicted = [""] * len(texts)
    for i in keep:
        if probs[i].max() >= min_confidence:
            predicted[i] = labels[int(probs[i].argmax())]
    out = pd.DataFrame({"text": texts, "label": predicted})
    for i, label in enumerate(labels):
        out[f"p_{label}"] = probs[:, i].numpy().round(4)
    return out
