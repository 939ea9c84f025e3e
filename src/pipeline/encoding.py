"""Tables turned into tensors: token ids per row, once, and padded batches of them."""

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence

from pipeline.data import LABEL, TEXT
from pipeline.errors import PipelineError
from pipeline.vocab import PAD_ID, Vocab


@dataclass(frozen=True)
class Encoded:
    """A table tokenised once: one tensor of token ids per row, and the label ids."""

    ids: list[torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


def encode_table(table: pd.DataFrame, vocab: Vocab, max_len: int, add_cls: bool) -> Encoded:
    unknown = sorted(set(table[LABEL]) - set(vocab.labels))
    if unknown:
        raise PipelineError(
            f"Labels {unknown[:5]} do not occur in the training rows the model knows "
            f"({', '.join(vocab.labels)}); rerun the whole pipeline with `dvc repro`."
        )
    ids = [torch.tensor(vocab.encode(t, max_len, add_cls), dtype=torch.long) for t in table[TEXT]]
    labels = torch.tensor(vocab.label_ids(table[LABEL]), dtype=torch.long)
    return Encoded(ids=ids, labels=labels)


def batches(
    data: Encoded, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (tokens, padding_mask, labels), each batch padded only to its longest row.

    With a generator the rows are shuffled (seeded, so reproducible); without, kept in order.
    padding_mask is True where a position is padding, as PyTorch attention expects.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        tokens = pad_sequence([data.ids[i] for i in index], batch_first=True, padding_value=PAD_ID)
        yield tokens, tokens == PAD_ID, data.labels[index]
