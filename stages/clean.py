"""Stage `clean`: raw CSV -> data/interim/clean.csv with columns text,label,original (and slice)."""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import params_option, user_errors
from pipeline.config import load_params
from pipeline.data import clean_table, read_raw, write_table
from pipeline.files import write_json


@click.command()
@params_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    help="The raw CSV; default: data.raw of the params file. Its columns are named by "
    "data.text_column and data.label_column.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Cleaned table to write, with columns text,label,original (the raw text) and, when "
    "evaluate.slice_column is set, slice.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    required=True,
    help="JSON summary to write: rows in and out, rows dropped and why, label counts.",
)
def main(params_path: Path, input_path: Path | None, output: Path, report: Path) -> None:
    """Lower-case, strip links, LaTeX markup and punctuation as the `clean` params say;
    drop rows whose text or label is empty. Labels lose surrounding spaces but keep their
    case ("physics" and "Physics" are two labels)."""
    with user_errors(output, report):
        params = load_params(params_path)
        # dvc.yaml gives no --input: data.raw is read here, not passed through the shell, so
        # a path with spaces, quotes, `$` or `;` reaches us as written.
        if input_path is None:
            input_path, fix = Path(params.data.raw), "check data.raw in params.yaml"
        else:
            fix = "check the --input path"
        data = params.data
        slices = params.evaluate.slice_column  # carried beside the rows for evaluate's slices
        raw = read_raw(input_path, data.text_column, data.label_column, fix, slices)
        table, summary = clean_table(raw, params.clean)
        write_table(table, output)
        write_json(report, summary)
    dropped = sum(summary["dropped"].values())
    click.echo(
        f"clean: {summary['rows_in']} rows in, {summary['rows_out']} out, {dropped} dropped"
        f" -> {output}"
    )


if __name__ == "__main__":
    main()
