"""Tables of (text, label) rows: reading, cleaning, splitting, encoding and batching."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch.nn.utils.rnn import pad_sequence

from pipeline.config import CleanParams
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.text import clean_text
from pipeline.vocab import PAD_ID, Vocab

# Every table after the clean stage has exactly these two columns, whatever the raw CSV called them.
TEXT, LABEL = "text", "label"


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as strings; an empty field is the empty string, never NaN."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"Input file {path} does not exist; check the path in params.yaml.")
    try:
        # utf-8-sig also accepts files that start with a byte-order mark (Excel writes one).
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{path} is not UTF-8 text (bad byte at offset {err.start}); "
            "save it as UTF-8 and run again."
        ) from None
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path} is empty; it needs a header row and data rows.") from None
    except pd.errors.ParserError as err:
        reason = str(err).strip().splitlines()[-1]
        raise PipelineError(f"{path} is not a valid CSV file ({reason}).") from None


def read_raw(path: Path, text_column: str, label_column: str) -> pd.DataFrame:
    """Read the user's CSV and return its text and label columns as `text` and `label`."""
    table = read_csv(path)
    for column, key in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if column not in table.columns:
            found = ", ".join(map(str, table.columns))
            raise PipelineError(
                f"{path} has no column '{column}' ({key} in params.yaml); its columns are: {found}."
            )
    if table.empty:
        raise PipelineError(f"{path} has a header but no data rows.")
    return pd.DataFrame({TEXT: table[text_column], LABEL: table[label_column]})


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written by an earlier stage (columns `text` and `label`)."""
    table = read_csv(path)
    if list(table.columns) != [TEXT, LABEL]:
        raise PipelineError(f"{path} was not written by this pipeline; run `dvc repro` again.")
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def clean_table(table: pd.DataFrame, params: CleanParams) -> tuple[pd.DataFrame, dict]:
    """Clean every text, drop rows with no text or no label, and count what was dropped and why."""
    labels = table[LABEL].str.strip()
    no_label = labels == ""
    no_text = (table[TEXT].str.strip() == "") & ~no_label
    cleaned = table[TEXT].map(lambda text: clean_text(text, params))
    emptied = (cleaned == "") & ~no_label & ~no_text
    keep = ~(no_label | no_text | emptied)
    out = pd.DataFrame({TEXT: cleaned[keep], LABEL: labels[keep]}).reset_index(drop=True)
    report = {
        "rows_in": len(table),
        "rows_out": len(out),
        "dropped": {
            "missing_label": int(no_label.sum()),
            "missing_text": int(no_text.sum()),
            "empty_after_cleaning": int(emptied.sum()),
        },
        "labels": {str(k): int(v) for k, v in out[LABEL].value_counts().sort_index().items()},
    }
    if out.empty:
        raise PipelineError(
            f"No rows are left after cleaning ({len(table)} in, "
            f"{report['dropped']}); check data.text_column and data.label_column."
        )
    return out, report


def split_table(
    table: pd.DataFrame, val_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Drop repeated texts, then split into train and validation rows stratified by label.

    Returns (train, val, number of repeated rows dropped).

    Duplicates go first: a text in both splits would be scored on rows the model trained on.
    """
    unique = table.drop_duplicates(subset=TEXT, keep="first").reset_index(drop=True)
    counts = unique[LABEL].value_counts()
    if len(counts) < 2:
        raise PipelineError(
            f"The data has only one label ({counts.index[0]!r}); a classifier needs at least two."
        )
    rare = counts[counts < 2]
    if len(rare):
        raise PipelineError(
            f"Label {rare.index[0]!r} has only one distinct row, so it cannot be in both "
            "train and validation; add rows for it or remove it from the data."
        )
    n_val = round(len(unique) * val_size)
    if not len(counts) <= n_val <= len(unique) - len(counts):
        raise PipelineError(
            f"split.val_size {val_size} puts {n_val} of {len(unique)} rows in validation, but "
            f"each split needs at least one row of each of the {len(counts)} labels; "
            "change split.val_size or add rows."
        )
    train, val = train_test_split(
        unique, test_size=n_val, stratify=unique[LABEL], random_state=seed
    )
    return train.reset_index(drop=True), val.reset_index(drop=True), len(table) - len(unique)


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
