"""The token vocabulary and the label set, both learned from the training rows only."""

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.files import atomic_write_text
from pipeline.text import tokenize

PAD = "<pad>"  # index 0: padding, masked out of attention and pooling
UNK = "<unk>"  # index 1: any token not in the vocabulary
CLS = "<cls>"  # index 2: prepended when pooling is "cls"
SPECIALS = (PAD, UNK, CLS)
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]  # index -> token, the specials first
    labels: list[str]  # index -> label name, sorted

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    def encode(self, text: str, max_len: int, add_cls: bool = False) -> list[int]:
        """Token ids of a cleaned text, truncated to `max_len` (CLS included), at least one id."""
        ids = [self._index.get(t, UNK_ID) for t in tokenize(text)]
        if add_cls:
            ids = [CLS_ID, *ids]
        return ids[:max_len] or [UNK_ID]

    def label_ids(self, labels: Iterable[str]) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[label] for label in labels]


def build_vocab(texts: Iterable[str], labels: Iterable[str], min_freq: int, max_size: int) -> Vocab:
    """Keep tokens seen at least `min_freq` times, the `max_size` most frequent of them.

    Ties are broken alphabetically so the vocabulary never depends on row order.
    """
    counts = Counter(token for text in texts for token in tokenize(text))
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    return Vocab(tokens=[*SPECIALS, *kept[:max_size]], labels=sorted(set(labels)))


def save_vocab(vocab: Vocab, path: Path) -> None:
    payload = {"labels": vocab.labels, "tokens": vocab.tokens}
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False, indent=1) + "\n")


def load_vocab(path: Path) -> Vocab:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        vocab = Vocab(tokens=list(payload["tokens"]), labels=list(payload["labels"]))
    except FileNotFoundError:
        raise PipelineError(f"Vocabulary {path} does not exist; run `dvc repro vocab`.") from None
    except OSError as err:  # a directory, no permission
        raise PipelineError(
            f"Cannot read vocabulary {path} ({err.strerror}); run `dvc repro vocab`."
        ) from None
    except (ValueError, KeyError, TypeError):
        raise PipelineError(f"{path} is not a vocabulary written by the vocab stage.") from None
    if tuple(vocab.tokens[: len(SPECIALS)]) != SPECIALS:
        raise PipelineError(f"{path} is not a vocabulary written by the vocab stage.")
    return vocab
