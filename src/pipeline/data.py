"""Tables of (text, label) rows: reading, cleaning and splitting. No torch here, so the
clean and split stages start quickly."""

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import CleanParams
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.text import clean_text

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

    Returns (train, val, number of repeated rows dropped). Duplicates go first: a text in both
    splits would be scored on rows the model trained on. Each label puts round(n * val_size)
    of its n rows in validation, but always at least one in each split, so every label is
    both learned and scored.
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
    rng = np.random.default_rng(seed)
    val_index = []
    for _, rows in unique.groupby(LABEL, sort=True):
        n_val = min(max(round(len(rows) * val_size), 1), len(rows) - 1)
        val_index.extend(rng.permutation(rows.index.to_numpy())[:n_val])
    in_val = unique.index.isin(val_index)
    train = unique[~in_val].reset_index(drop=True)
    val = unique[in_val].reset_index(drop=True)
    return train, val, len(table) - len(unique)
