"""Tables turned into tensors: token ids (and hashed sub-word ids) per row, computed once,
and padded batches of them."""

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence

from pipeline.config import ModelParams
from pipeline.data import LABEL, TEXT
from pipeline.errors import PipelineError
from pipeline.text import tokenize
from pipeline.vocab import PAD_ID, Vocab

# Characters of a token whose n-grams are used: only pathological "words" (hashes, long runs
# of digits) are longer; their n-grams past this point would make every batch tensor wider.
# Saved in the checkpoint, so a model keeps the inputs it was trained on.
MAX_TOKEN_CHARS = 40
# Sub-word ids are kept as int32, which embeddings and indexing accept: they are most of an
# encoded table's memory, and int64 would double it (measured on 70k training rows).
SUBWORD_DTYPE = torch.int32


@dataclass(frozen=True)
class Subwords:
    """How tokens are split into hashed character n-grams (fastText-style)."""

    buckets: int  # hash space; 0 turns sub-words off
    min_n: int
    max_n: int
    max_token_chars: int = MAX_TOKEN_CHARS


def subwords_of(params: ModelParams, max_token_chars: int = MAX_TOKEN_CHARS) -> Subwords | None:
    """The n-gram spec, where the model uses n-grams (a pretrained encoder: its n-gram path)."""
    if params.subword_buckets == 0 or (params.encoder == "pretrained" and not params.ngram_path):
        return None
    return Subwords(
        params.subword_buckets, params.subword_min_n, params.subword_max_n, max_token_chars
    )


def char_ngrams(token: str, spec: Subwords) -> list[str]:
    """Every character n-gram (min_n..max_n) of `<token>`, the token cut to max_token_chars."""
    marked = f"<{token[: spec.max_token_chars]}>"
    return [
        marked[i : i + n]
        for n in range(spec.min_n, spec.max_n + 1)
        for i in range(len(marked) - n + 1)
    ]


def subword_ids(token: str, spec: Subwords) -> list[int]:
    """Bucket ids (1..buckets) of the character n-grams of `<token>`; 0 is kept for padding.

    crc32, not hash(): Python salts str hashes per process, which would change the ids.
    """
    return [zlib.crc32(g.encode("utf-8")) % spec.buckets + 1 for g in char_ngrams(token, spec)]


@dataclass(frozen=True)
class Encoded:
    """A table tokenised once: token ids per row, sub-word ids per row (or None), label ids,
    and the row's bag of n-grams (distinct ids and their counts) for the model's n-gram path."""

    ids: list[torch.Tensor]  # each (tokens,)
    # Per row: the n-gram ids of all its tokens, one after the other, and how many each token
    # has (0 for CLS). Flat, not padded per token: a row's memory follows its n-gram count.
    subwords: list[torch.Tensor] | None  # each (n-grams of the row,)
    subword_counts: list[torch.Tensor] | None  # each (tokens,)
    labels: torch.Tensor
    ngram_ids: list[torch.Tensor] | None = None  # each (distinct n-grams,)
    ngram_counts: list[torch.Tensor] | None = None  # each (distinct n-grams,), float

    def __len__(self) -> int:
        return len(self.ids)


def _row_subwords(
    text: str, length: int, add_cls: bool, spec: Subwords, known: dict[str, list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The row's n-gram ids (flat) and the count per token, aligned with its token ids; CLS and
    <unk>-for-empty get none. `known` holds the ids of tokens already seen: words repeat, and
    hashing each of their n-grams again was most of the encoding time."""
    flat: list[int] = []
    counts = [0] * add_cls
    for token in tokenize(text)[: length - add_cls]:
        if token not in known:
            known[token] = subword_ids(token, spec)
        flat += known[token]
        counts.append(len(known[token]))
    counts += [0] * (length - len(counts))
    # Through numpy: torch.tensor reads a long list of ints several times slower.
    return torch.from_numpy(np.array(flat, dtype=np.int32)), torch.tensor(
        counts, dtype=SUBWORD_DTYPE
    )


def encode_table(
    table: pd.DataFrame,
    vocab: Vocab,
    max_len: int,
    add_cls: bool,
    subwords: Subwords | None = None,
    word_pieces: Callable[[str, int], list[int]] | None = None,
) -> Encoded:
    """Token ids of every row (at most max_len), its sub-words and n-gram bag, and label ids.

    With `word_pieces` (a pretrained encoder's tokenizer: text, max_len -> ids) the ids are its
    word pieces and `vocab` gives only the labels; the n-gram bag is still taken from the
    row's words (its first max_len), and there are no per-token sub-words.
    """
    unknown = sorted(set(table[LABEL]) - set(vocab.labels))
    if unknown:
        raise PipelineError(
            f"Labels {unknown[:5]} do not occur in the training rows the model knows "
            f"({', '.join(vocab.labels)}); rerun the whole pipeline with `dvc repro`."
        )
    if word_pieces is None:
        encoded = (vocab.encode(text, max_len, add_cls) for text in table[TEXT])
    else:
        encoded = (word_pieces(text, max_len) for text in table[TEXT])
    ids = [torch.tensor(row, dtype=torch.long) for row in encoded]
    labels = torch.tensor(vocab.label_ids(table[LABEL]), dtype=torch.long)
    if subwords is None:
        return Encoded(ids=ids, subwords=None, subword_counts=None, labels=labels)
    if word_pieces is None:
        lengths = [(len(row), add_cls) for row in ids]
    else:
        lengths = [(max(1, min(len(tokenize(text)), max_len)), False) for text in table[TEXT]]
    known: dict[str, list[int]] = {}
    rows = [
        _row_subwords(text, length, cls, subwords, known)
        for text, (length, cls) in zip(table[TEXT], lengths, strict=True)
    ]
    bags = [_bag(flat) for flat, _ in rows]
    per_token = word_pieces is None  # the scratch encoder's sub-word embeddings
    return Encoded(
        ids=ids,
        subwords=[flat for flat, _ in rows] if per_token else None,
        subword_counts=[counts for _, counts in rows] if per_token else None,
        labels=labels,
        ngram_ids=[bag_ids for bag_ids, _ in bags],
        ngram_counts=[counts for _, counts in bags],
    )


def _bag(subwords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct n-gram ids of a row and how often each occurs."""
    bag_ids, counts = subwords.unique(return_counts=True)
    return bag_ids, counts.to(torch.float32)


def ngram_idf(data: Encoded, buckets: int) -> torch.Tensor:
    """Smoothed inverse document frequency of every n-gram bucket over the rows of `data`,
    as scikit-learn's TfidfVectorizer computes it: ln((1 + rows) / (1 + df)) + 1."""
    frequency = torch.zeros(buckets + 1)
    for bag_ids in data.ngram_ids or []:
        frequency[bag_ids] += 1
    return torch.log((1 + len(data)) / (1 + frequency)) + 1


POOL_BATCHES = 50  # batches per length-sorting pool when shuffling


@dataclass(frozen=True)
class Batch:
    index: list[int]  # the rows of the Encoded table in this batch, in batch order
    tokens: torch.Tensor  # (batch, seq)
    padding_mask: torch.Tensor  # (batch, seq), True on padding, as PyTorch attention expects
    # The batch's n-gram ids, flat: row after row, token after token (padding has none), and
    # how many each token has, (batch, seq): the bags the sub-word EmbeddingBag sums.
    subwords: torch.Tensor | None  # (n-grams of the batch,)
    subword_counts: torch.Tensor | None  # (batch, seq)
    labels: torch.Tensor  # (batch,)
    ngram_ids: torch.Tensor | None = None  # (batch, distinct n-grams), 0 = none
    ngram_counts: torch.Tensor | None = None  # (batch, distinct n-grams), 0 on padding

    def to(self, device: torch.device) -> "Batch":
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return tensor.to(device) if tensor is not None else None

        return Batch(
            self.index,
            self.tokens.to(device),
            self.padding_mask.to(device),
            move(self.subwords),
            move(self.subword_counts),
            self.labels.to(device),
            move(self.ngram_ids),
            move(self.ngram_counts),
        )

    def inputs(self) -> dict[str, torch.Tensor | None]:
        """The model's inputs by name: `model(**batch.inputs())`."""
        return {
            "tokens": self.tokens,
            "padding_mask": self.padding_mask,
            "subwords": self.subwords,
            "subword_counts": self.subword_counts,
            "ngram_ids": self.ngram_ids,
            "ngram_counts": self.ngram_counts,
        }


def batch_indices(
    lengths: list[int], batch_size: int, generator: torch.Generator | None = None
) -> list[list[int]]:
    """Group rows of similar length so that batches carry little padding.

    Without a generator (inference) all rows are sorted by length. With one (training) the rows
    are shuffled, sorted by length within pools of POOL_BATCHES batches, and the batches
    shuffled, so batch contents still vary from epoch to epoch; all of it seeded.
    """
    n = len(lengths)
    if generator is None:
        order = sorted(range(n), key=lengths.__getitem__)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    shuffled = torch.randperm(n, generator=generator).tolist()
    groups = []
    pool = batch_size * POOL_BATCHES
    for start in range(0, n, pool):
        part = sorted(shuffled[start : start + pool], key=lengths.__getitem__)
        groups += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]


def batches(
    data: Encoded, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Yield batches padded only to their longest row, grouped by length (see batch_indices)."""
    for index in batch_indices([len(ids) for ids in data.ids], batch_size, generator):
        tokens = pad_sequence([data.ids[i] for i in index], batch_first=True, padding_value=PAD_ID)
        subwords = subword_counts = bag_ids = counts = None
        if data.subwords is not None and data.subword_counts is not None:
            subwords = torch.cat([data.subwords[i] for i in index])
            subword_counts = pad_sequence([data.subword_counts[i] for i in index], batch_first=True)
        if data.ngram_ids is not None and data.ngram_counts is not None:
            bag_ids = pad_sequence([data.ngram_ids[i] for i in index], batch_first=True)
            counts = pad_sequence([data.ngram_counts[i] for i in index], batch_first=True)
        yield Batch(
            index,
            tokens,
            tokens == PAD_ID,
            subwords,
            subword_counts,
            data.labels[index],
            bag_ids,
            counts,
        )
