"""Stage `split`: clean.csv -> train.csv, val.csv and test.csv, stratified by label and seeded."""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import params_option, user_errors
from pipeline.config import load_params
from pipeline.data import label_counts, read_table, split_rows, write_table
from pipeline.errors import PipelineError
from pipeline.files import write_json


@click.command()
@params_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Cleaned table written by the clean stage.",
)
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Training rows to write.",
)
@click.option(
    "--val",
    "val_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Validation rows to write.",
)
@click.option(
    "--test",
    "test_path",
    type=click.Path(path_type=Path),
    help="Test rows to write: a header only when split.test_size is 0, so that the file always "
    "exists. Needed when split.test_size is above 0.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    required=True,
    help="JSON summary to write: duplicates removed, rows per label in each split.",
)
def main(
    params_path: Path,
    input_path: Path,
    train_path: Path,
    val_path: Path,
    test_path: Path | None,
    report: Path,
) -> None:
    """Remove repeated texts, then split the rest into train, validation and (optionally) test
    rows (shares split.val_size and split.test_size, seed split.seed), keeping the label
    proportions."""
    outputs = (train_path, val_path, report, *([test_path] if test_path else []))
    with user_errors(*outputs):
        params = load_params(params_path)
        if params.split.test_size > 0 and test_path is None:
            raise PipelineError(
                f"split.test_size is {params.split.test_size}, but no --test path was given "
                "to write the test rows to; pass --test or set split.test_size to 0."
            )
        train, val, test, duplicates = split_rows(
            read_table(input_path),
            params.split.val_size,
            params.split.test_size,
            params.split.seed,
        )
        write_table(train, train_path)
        write_table(val, val_path)
        if test_path is not None:
            write_table(test, test_path)
        write_json(
            report,
            {
                "duplicates_removed": duplicates,
                "train": label_counts(train),
                "val": label_counts(val),
                "test": label_counts(test),
            },
        )
    click.echo(
        f"split: {len(train)} train, {len(val)} validation and {len(test)} test rows, "
        f"{duplicates} repeated texts removed"
    )


if __name__ == "__main__":
    main()
