"""Stage `split`: clean.csv -> train.csv and val.csv, stratified by label and seeded."""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import params_option, user_errors
from pipeline.config import load_params
from pipeline.data import label_counts, read_table, split_table, write_table
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
    "--report",
    type=click.Path(path_type=Path),
    required=True,
    help="JSON summary to write: duplicates removed, rows per label in each split.",
)
def main(
    params_path: Path, input_path: Path, train_path: Path, val_path: Path, report: Path
) -> None:
    """Remove repeated texts, then split the rest into train and validation rows
    (share split.val_size, seed split.seed), keeping the label proportions."""
    with user_errors(train_path, val_path, report):
        params = load_params(params_path)
        train, val, duplicates = split_table(
            read_table(input_path), params.split.val_size, params.split.seed
        )
        write_table(train, train_path)
        write_table(val, val_path)
        write_json(
            report,
            {
                "duplicates_removed": duplicates,
                "train": label_counts(train),
                "val": label_counts(val),
            },
        )
    click.echo(
        f"split: {len(train)} train and {len(val)} validation rows, "
        f"{duplicates} repeated texts removed"
    )


if __name__ == "__main__":
    main()
