"""Tables turned into tensors: token ids (and the words whose hashed n-grams feed the model)
per row, computed once, and padded batches of them."""

import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
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
# N-gram ids and a row's word numbers are kept as int32, which embeddings and indexing accept:
# half the memory of int64, and a batch's tensors are what the model has always been given.
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


class Ragged:
    """Rows of different lengths in one flat tensor: row i is values[starts[i]:starts[i + 1]].

    One tensor for a whole table, not one per row: a small tensor costs a few hundred bytes
    beyond its data, and a table held several of them per row (gigabytes at a million rows).
    """

    def __init__(self, values: torch.Tensor, starts: torch.Tensor) -> None:
        self.values = values
        self.starts = starts  # (rows + 1,), int64
        self._bounds = starts.numpy()  # the same memory: numpy's scalars slice faster

    @classmethod
    def of(cls, rows: Iterable[list[int]], dtype: torch.dtype) -> "Ragged":
        values, starts = array("q"), array("q", [0])  # compact while they grow
        for row in rows:
            values.extend(row)
            starts.append(len(values))
        flat = torch.from_numpy(np.array(values, dtype=np.int64))
        return cls(flat.to(dtype), torch.from_numpy(np.array(starts, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.values[self._bounds[i] : self._bounds[i + 1]]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(len(self)))

    def lengths(self) -> list[int]:
        return np.diff(self._bounds).tolist()

    def take(self, index: list[int]) -> "Ragged":
        """The rows `index`, in that order."""
        rows = np.asarray(index, dtype=np.int64)
        sizes = self._bounds[rows + 1] - self._bounds[rows]
        starts = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        values = torch.cat([self[i] for i in index]) if index else self.values[:0]
        return Ragged(values, starts)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The values of `rows` (a tensor of row numbers), one row after the other, and the
        length of each."""
        first = self.starts[rows]
        sizes = self.starts[rows + 1] - first
        offsets = torch.repeat_interleave(first - (sizes.cumsum(0) - sizes), sizes)
        return self.values[offsets + torch.arange(len(offsets))], sizes


@dataclass(frozen=True)
class Encoded:
    """A table tokenised once: token ids and a label id per row; with n-grams, each row's
    words (per token, an index into `word_grams`) and every distinct word's n-gram ids. Words
    repeat: a row holds one number per token, not the dozen n-gram ids of each, and batches
    gather the n-grams (and the row's bag of them, for the n-gram path) when they are made."""

    ids: Ragged  # int64, a row's tokens
    labels: torch.Tensor
    words: Ragged | None = None  # int32, a row's: 0 for CLS, padding and an empty text
    word_grams: Ragged | None = None  # int32, a word's n-gram ids (1..buckets); word 0 none
    per_token: bool = False  # each token's n-grams also feed its embedding (scratch encoder)

    def __len__(self) -> int:
        return len(self.ids)


def _row_words(
    text: str,
    length: int,
    add_cls: bool,
    spec: Subwords,
    known: dict[str, int],
    grams: list[list[int]],
) -> list[int]:
    """The row's words aligned with its `length` token ids (CLS and <unk>-for-empty get word 0,
    which has no n-grams). A word seen for the first time gets the next number and its n-gram
    ids are appended to `grams`: hashing each n-gram again was most of the encoding time."""
    row = [0] * add_cls
    for token in tokenize(text)[: length - add_cls]:
        if token not in known:
            known[token] = len(grams)
            grams.append(subword_ids(token, spec))
        row.append(known[token])
    return row + [0] * (length - len(row))


def encode_table(
    table: pd.DataFrame,
    vocab: Vocab,
    max_len: int,
    add_cls: bool,
    subwords: Subwords | None = None,
    word_pieces: Callable[[str, int], list[int]] | None = None,
) -> Encoded:
    """Token ids of every row (at most max_len), its words' n-grams, and label ids.

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
    ids = Ragged.of(encoded, torch.long)
    labels = torch.tensor(vocab.label_ids(table[LABEL]), dtype=torch.long)
    if subwords is None:
        return Encoded(ids, labels)
    if word_pieces is None:
        lengths = [(length, add_cls) for length in ids.lengths()]
    else:
        lengths = [(max(1, min(len(tokenize(text)), max_len)), False) for text in table[TEXT]]
    known: dict[str, int] = {}
    grams: list[list[int]] = [[]]
    words = Ragged.of(
        (
            _row_words(text, length, cls, subwords, known, grams)
            for text, (length, cls) in zip(table[TEXT], lengths, strict=True)
        ),
        SUBWORD_DTYPE,
    )
    word_grams = Ragged.of(grams, SUBWORD_DTYPE)
    return Encoded(ids, labels, words, word_grams, per_token=word_pieces is None)


def row_ngrams(
    data: Encoded, index: list[int]
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The n-gram ids of rows `index` (at least one) of `data`, flat: row after row, token
    after token; how many each token has, one tensor per row; and how many each row has."""
    assert data.words is not None and data.word_grams is not None
    rows = [data.words[i] for i in index]
    lengths = [len(row) for row in rows]
    grams, per_word = data.word_grams.gather(torch.cat(rows).long())
    row_of_word = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(lengths))
    per_row = torch.zeros(len(rows), dtype=torch.long).index_add_(0, row_of_word, per_word)
    return grams, list(per_word.to(SUBWORD_DTYPE).split(lengths)), per_row


def _distinct(
    grams: torch.Tensor, per_row: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Each row's distinct n-gram ids (ascending, row after row), how often each occurs, and
    how many distinct ids each row has; `grams` is the rows' n-gram ids, flat."""
    rows = torch.repeat_interleave(torch.arange(len(per_row)), per_row)
    # One sort for all the rows: (row, id) as one key; ids are below 2**31.
    keys, counts = (rows * 2**31 + grams.long()).unique(return_counts=True)
    distinct = torch.bincount(keys // 2**31, minlength=len(per_row)).tolist()
    return (keys % 2**31).to(SUBWORD_DTYPE), counts.to(torch.float32), distinct


def ngram_bags(grams: torch.Tensor, per_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' bags of n-grams for the n-gram path: distinct ids and their counts, (rows,
    most distinct ids), padded with 0."""
    ids, counts, distinct = _distinct(grams, per_row)
    return (
        pad_sequence(list(ids.split(distinct)), batch_first=True),
        pad_sequence(list(counts.split(distinct)), batch_first=True),
    )


IDF_ROWS = 4096  # rows whose distinct n-grams are found at once, for the document frequencies


def ngram_idf(data: Encoded, buckets: int) -> torch.Tensor:
    """Smoothed inverse document frequency of every n-gram bucket over the rows of `data`,
    as scikit-learn's TfidfVectorizer computes it: ln((1 + rows) / (1 + df)) + 1."""
    documents = torch.zeros(buckets + 1, dtype=torch.long)
    for start in range(0, len(data), IDF_ROWS) if data.words is not None else ():
        grams, _, per_row = row_ngrams(data, list(range(start, min(start + IDF_ROWS, len(data)))))
        ids, _, _ = _distinct(grams, per_row)
        documents += torch.bincount(ids.long(), minlength=buckets + 1)
    return torch.log((1 + len(data)) / (1 + documents.to(torch.float32))) + 1


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
    for index in batch_indices(data.ids.lengths(), batch_size, generator):
        tokens = pad_sequence([data.ids[i] for i in index], batch_first=True, padding_value=PAD_ID)
        subwords = subword_counts = bag_ids = counts = None
        if data.words is not None:
            grams, per_token, per_row = row_ngrams(data, index)
            if data.per_token:
                subwords, subword_counts = grams, pad_sequence(per_token, batch_first=True)
            bag_ids, counts = ngram_bags(grams, per_row)
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
