"""Tables of (text, label) rows: reading, cleaning and splitting. No torch here, so the
clean and split stages start quickly."""

import codecs
import io
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.config import CleanParams
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.text import clean_text

# Every table after the clean stage has these two columns, whatever the raw CSV called them: the
# cleaned text, the one model input, and the label.
TEXT, LABEL = "text", "label"
# Then, carried beside them for the reports and never read by a model: the text as the raw CSV
# has it (errors.csv, the robustness checks perturb it as a user would write it) and the value
# of evaluate.slice_column when one is set (slices.csv). A table written by hand may lack them.
ORIGINAL, SLICE = "original", "slice"
COLUMNS = [TEXT, LABEL, ORIGINAL, SLICE]

# How pandas reports a row with more fields than the header.
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def read_csv(path: Path, fix: str = "check the path") -> pd.DataFrame:
    """Read a UTF-8 CSV as strings: an empty or missing field is the empty string, never NaN,
    and surrounding spaces are stripped from the column names.

    `fix` tells the user what to do when the file does not exist or is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path} is a directory, not a CSV file; {fix}.")
    if not path.is_file():
        raise PipelineError(f"Input file {path} does not exist; {fix}.")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PipelineError(
            f"Cannot read {path} ({err.strerror}); check its permissions."
        ) from None
    # Text never holds NUL bytes; images, zip (Excel), gzip and UTF-16 files do.
    if b"\0" in data:
        raise PipelineError(
            f"{path} is not a text file (it holds binary data, as images, Excel, zip or gzip "
            "files do); export it as a UTF-8 CSV and run again."
        )
    data = data.removeprefix(codecs.BOM_UTF8)  # Excel writes a byte-order mark
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PipelineError(
            f"{path} is not UTF-8: line {line} has the byte 0x{data[err.start]:02X}, which UTF-8 "
            "cannot decode; save the file again with the UTF-8 encoding."
        ) from None
    try:
        # header=None: pandas then reports a row with more fields than the header as an error
        # instead of silently using the first column as an index or dropping the extra field.
        rows = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path} is empty; it needs a header row and data rows.") from None
    except pd.errors.ParserError as err:
        found = _FIELDS.search(str(err))
        if found:
            expected, line, seen = found.groups()
            raise PipelineError(
                f"{path} line {line} has {seen} fields but the header has {expected}; "
                "put quotes around fields that contain commas."
            ) from None
        reason = str(err).strip().split("C error: ")[-1]
        raise PipelineError(
            f"{path} is not a valid CSV file ({reason}); check its quotes."
        ) from None
    table = rows.iloc[1:].reset_index(drop=True)
    table.columns = [name.strip() for name in rows.iloc[0]]
    return table


def read_columns(path: Path, columns: list[tuple[str, str]], fix: str) -> pd.DataFrame:
    """Read a user's CSV (see read_csv) that must have each of `columns` exactly once and at
    least one data row: the checks the clean stage and the predict command share.

    `columns` pairs each column name with the setting that chose it (`data.text_column in
    params.yaml`, `--text-column`), which the error names; `fix` is read_csv's.
    """
    table = read_csv(path, fix=fix)
    found = list(table.columns)
    for column, setting in columns:
        if column not in found:
            raise PipelineError(
                f"{path} has no column '{column}' ({setting}); its columns are: {', '.join(found)}."
            )
        # table[column] would then be a table of both, not one column of texts.
        if found.count(column) > 1:
            raise PipelineError(
                f"{path} has {found.count(column)} columns named '{column}' ({setting}); "
                "rename all but one of them."
            )
    if table.empty:
        raise PipelineError(f"{path} has a header but no data rows.")
    return table


def read_raw(
    path: Path,
    text_column: str,
    label_column: str,
    fix: str = "check data.raw in params.yaml",
    slice_column: str = "",
) -> pd.DataFrame:
    """Read the user's CSV and return its text and label columns as `text` and `label` (and
    `slice_column`, when given, as `slice`)."""
    settings = [
        (text_column, "data.text_column in params.yaml"),
        (label_column, "data.label_column in params.yaml"),
    ]
    if slice_column:
        settings.append((slice_column, "evaluate.slice_column in params.yaml"))
    table = read_columns(path, settings, fix)
    out = pd.DataFrame({TEXT: table[text_column], LABEL: table[label_column]})
    if slice_column:
        out[SLICE] = table[slice_column].str.strip()
    return out


def read_table(path: Path, allow_empty: bool = False) -> pd.DataFrame:
    """Read a table written by an earlier stage (columns `text` and `label`, then `original`
    and `slice` if it has them; at least one row unless `allow_empty`, as for the test rows,
    which are a header only when split.test_size is 0)."""
    table = read_csv(path, fix="run `dvc repro` to write it")
    found = list(table.columns)
    if found[:2] != [TEXT, LABEL] or found != [c for c in COLUMNS if c in found]:
        raise PipelineError(f"{path} was not written by this pipeline; run `dvc repro` again.")
    if table.empty and not allow_empty:
        raise PipelineError(f"{path} has no rows; run `dvc repro` again.")
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def originals(table: pd.DataFrame) -> list[str]:
    """Each row's text as the raw CSV has it; a table of cleaned texts alone (written by hand,
    not by the clean stage) has no other."""
    return list(table[ORIGINAL] if ORIGINAL in table else table[TEXT])


def label_counts(table: pd.DataFrame) -> dict[str, int]:
    """Rows per label, labels sorted: for the stages' JSON reports."""
    return {str(k): int(v) for k, v in table[LABEL].value_counts().sort_index().items()}


def clean_table(table: pd.DataFrame, params: CleanParams) -> tuple[pd.DataFrame, dict]:
    """Clean every text, drop rows with no text or no label, and count what was dropped and why.

    Labels lose surrounding spaces but keep their case: " Physics " is "Physics", while
    "physics" is another label. Each kept row keeps its raw text as `original` (and its
    `slice`, if the table has one).
    """
    labels = table[LABEL].str.strip()
    no_label = labels == ""
    no_text = (table[TEXT].str.strip() == "") & ~no_label
    cleaned = table[TEXT].map(lambda text: clean_text(text, params))
    emptied = (cleaned == "") & ~no_label & ~no_text
    keep = ~(no_label | no_text | emptied)
    out = pd.DataFrame({TEXT: cleaned, LABEL: labels, ORIGINAL: table[TEXT]})
    if SLICE in table:
        out[SLICE] = table[SLICE]
    out = out[keep].reset_index(drop=True)
    report = {
        "rows_in": len(table),
        "rows_out": len(out),
        "dropped": {
            "missing_label": int(no_label.sum()),
            "missing_text": int(no_text.sum()),
            "empty_after_cleaning": int(emptied.sum()),
        },
        "labels": label_counts(out),
    }
    if out.empty:
        dropped = report["dropped"]
        raise PipelineError(
            f"No rows are left after cleaning: of {len(table)} rows, {dropped['missing_text']} "
            f"have no text, {dropped['missing_label']} no label and "
            f"{dropped['empty_after_cleaning']} only punctuation, links or LaTeX markup; check "
            "data.text_column, data.label_column and the clean params."
        )
    return out, report


class Split(NamedTuple):
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame  # no rows when test_size is 0
    duplicates: int  # repeated rows dropped before splitting


def split_table(
    table: pd.DataFrame, val_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Drop repeated texts, then split into train and validation rows stratified by label.

    Returns (train, val, number of repeated rows dropped): `split_rows` with no test rows.
    """
    train, val, _, duplicates = split_rows(table, val_size, 0.0, seed)
    return train, val, duplicates


def split_rows(table: pd.DataFrame, val_size: float, test_size: float, seed: int) -> Split:
    """Drop repeated texts, then split into train, validation and test rows stratified by label.

    Duplicates go first: a text in two splits would be scored on rows the model trained on.
    For each label of n rows, round(n * test_size) rows go to test first (none when test_size
    is 0), then round(n * val_size) of the rest to validation, but always at least one row in
    each split, so that every label is learned, scored and tested. With test_size 0 the random
    draws, and so the rows and their order, are those of a train/validation split alone.
    """
    unique = table.drop_duplicates(subset=TEXT, keep="first").reset_index(drop=True)
    counts = unique[LABEL].value_counts()
    if len(counts) < 2:
        raise PipelineError(
            f"The data has only one label ({counts.index[0]!r}), but a classifier needs at least "
            "two; add rows of another label or check data.label_column."
        )
    _require_rows(counts, 2, "only one distinct row", "both train and validation", "")
    if test_size > 0:
        three = "train, validation and test"
        fix = " (or set split.test_size to 0)"
        _require_rows(counts, 3, "fewer than three distinct rows", three, fix)
    rng = np.random.default_rng(seed)
    val_index, test_index = [], []
    for _, rows in unique.groupby(LABEL, sort=True):
        index, n = rows.index.to_numpy(), len(rows)
        if test_size > 0:
            n_test = min(max(round(n * test_size), 1), n - 2)
            order = rng.permutation(index)
            test_index.extend(order[:n_test])
            index = np.sort(order[n_test:])
        n_val = min(max(round(n * val_size), 1), len(index) - 1)
        val_index.extend(rng.permutation(index)[:n_val])
    in_val, in_test = unique.index.isin(val_index), unique.index.isin(test_index)
    return Split(
        train=unique[~in_val & ~in_test].reset_index(drop=True),
        val=unique[in_val].reset_index(drop=True),
        test=unique[in_test].reset_index(drop=True),
        duplicates=len(table) - len(unique),
    )


def _require_rows(counts: pd.Series, least: int, few: str, splits: str, fix: str) -> None:
    """Every label needs `least` distinct rows to be in each of `splits`; name those that don't."""
    rare = sorted(counts[counts < least].index)
    if len(rare) == 1:
        raise PipelineError(
            f"Label {rare[0]!r} has {few}, so it cannot be in {splits}; add rows for it or "
            f"remove it from the data{fix}."
        )
    if rare:
        # Name a few, not thousands: a wrong data.label_column can make every row its own label.
        names = ", ".join(map(repr, rare[:3]))
        raise PipelineError(
            f"{len(rare)} labels ({names}, ...) have {few} each, so they cannot be in {splits}; "
            f"add rows for them, remove them or check data.label_column{fix}."
        )
