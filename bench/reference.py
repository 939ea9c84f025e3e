"""The original notebook's recipe, rewritten as a few functions: a yardstick, not a product.

    python bench/reference.py ../shared/data/kaggle_subjects_1741.csv --epochs 30

It keeps what the original did, on purpose, including what the pipeline fixed:
whitespace tokens of the cleaned text; a vocabulary of every token of ALL rows, built before
the split (validation words leak in); a Dataset that looks the row up in the vocabulary on
every __getitem__ and pads EVERY row to 128; batches of 32; two
`nn.TransformerEncoderLayer(d_model=64, nhead=8, batch_first=True)` with PyTorch's default
feed-forward of 2048 and dropout 0.1; a learned (128 x 64) positional encoding; no padding
mask; the mean over all 128 positions, padding included; one linear head; Adam at 1e-4;
cross-entropy. bench/speed.py times it against the pipeline; bench/accuracy.py can call
`train_reference` for an "original recipe" row.

The training functions use nothing from the pipeline. Only the CLI does: it cleans with the
repo's params.yaml `clean` section and splits with the pipeline's split (duplicates removed,
stratified), so the reference trains and is scored on the very rows the pipeline uses.
"""

import random
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.config import load_params
from pipeline.data import LABEL, TEXT, clean_table, read_raw, split_table

MAX_LEN = 128
D_MODEL = 64
NUM_HEADS = 8
NUM_LAYERS = 2
BATCH_SIZE = 32
LR = 1e-4
PAD_ID, UNK_ID = 0, 1


def build_vocab_all_rows(texts: list[str]) -> dict[str, int]:
    """Every whitespace token of every row, in order of first appearance; 0 pads, 1 is unknown."""
    vocab = {"<pad>": PAD_ID, "<unk>": UNK_ID}
    for text in texts:
        for token in text.split():
            vocab.setdefault(token, len(vocab))
    return vocab


class PaddedTexts(Dataset):
    """Texts kept as strings: every access splits, looks up and pads the row to MAX_LEN again."""

    def __init__(self, texts: list[str], labels: list[int], vocab: dict[str, int]) -> None:
        self.texts, self.labels, self.vocab = texts, labels, vocab

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self.vocab.get(token, UNK_ID) for token in self.texts[i].split()][:MAX_LEN]
        ids += [PAD_ID] * (MAX_LEN - len(ids))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(self.labels[i])


class OriginalClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, D_MODEL)
        self.positions = nn.Parameter(torch.randn(1, MAX_LEN, D_MODEL))
        layer = nn.TransformerEncoderLayer(d_model=D_MODEL, nhead=NUM_HEADS, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=NUM_LAYERS)
        self.head = nn.Linear(D_MODEL, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens) + self.positions
        x = self.encoder(x)  # no mask: padding is attended to like any token
        return self.head(x.mean(dim=1))  # padding counts in the mean too


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> list[int]:
    model.eval()
    return [p for tokens, _ in loader for p in model(tokens.to(device)).argmax(dim=1).tolist()]


def train_reference(
    train_texts: list[str],
    train_labels: list[str],
    val_texts: list[str],
    val_labels: list[str],
    epochs: int,
    seed: int = 42,
    device: str = "cpu",
    threads: int | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train the original recipe on cleaned texts; score the final epoch on the validation rows.

    Returns accuracy and macro_f1 of the final epoch, seconds (all epochs, each one training
    pass plus one validation pass, as the notebook printed validation accuracy every epoch)
    and rows_per_s (training rows per second of that). `threads` None keeps torch's default.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    target = torch.device(device)
    vocab = build_vocab_all_rows(train_texts + val_texts)  # all rows: the original's leak
    names = sorted(set(train_labels) | set(val_labels))
    index = {name: i for i, name in enumerate(names)}
    train_set = PaddedTexts(train_texts, [index[y] for y in train_labels], vocab)
    val_set = PaddedTexts(val_texts, [index[y] for y in val_labels], vocab)
    shuffle = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True, generator=shuffle)
    val_loader = DataLoader(val_set, batch_size=BATCH_SIZE)
    model = OriginalClassifier(len(vocab), len(names)).to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    y_true = val_set.labels
    seconds = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        for tokens, labels in train_loader:
            loss = loss_fn(model(tokens.to(target)), labels.to(target))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        y_pred = predict(model, val_loader, target)
        epoch_seconds = time.perf_counter() - start
        seconds += epoch_seconds
        if on_epoch is not None:
            accuracy = accuracy_score(y_true, y_pred)
            on_epoch(epoch, {"val_accuracy": accuracy, "seconds": epoch_seconds})
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "seconds": seconds,
        "rows_per_s": len(train_texts) * epochs / seconds,
    }


@click.command()
@click.argument("csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--epochs", default=30, show_default=True)
@click.option("--seed", default=42, show_default=True, help="Seed of the split and the training.")
def main(csv: Path, text_column: str, label_column: str, epochs: int, seed: int) -> None:
    """Train the original recipe on CSV and print its final-epoch scores."""
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    table, _ = clean_table(read_raw(csv, text_column, label_column), params.clean)
    train, val, _ = split_table(table, params.split.val_size, seed)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        click.echo(
            f"epoch {epoch:>3}/{epochs}  val_accuracy {metrics['val_accuracy']:.4f}  "
            f"{metrics['seconds']:.1f}s"
        )

    result = train_reference(
        list(train[TEXT]),
        list(train[LABEL]),
        list(val[TEXT]),
        list(val[LABEL]),
        epochs,
        seed,
        on_epoch=report,
    )
    click.echo(
        f"{csv.name}: {len(train)} train / {len(val)} val rows  "
        + "  ".join(f"{k} {v:.4f}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
