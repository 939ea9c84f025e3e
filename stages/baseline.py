"""Stage `baseline`: train.csv, val.csv (+ test.csv) -> reports/baseline (TF-IDF + linear SVM)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pandas as pd

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.baseline import fit_baseline, predict_baseline
from pipeline.cli import params_option, test_option, train_option, user_errors, val_option
from pipeline.config import load_params
from pipeline.data import LABEL, TEXT, read_table, write_table
from pipeline.evaluation import (
    Predictions,
    length_edges,
    length_table,
    shuffle_words,
    summary_of_test,
    write_scores,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline  # loads scipy


@click.command()
@params_option
@train_option
@val_option
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write metrics.json, confusion.csv, per_class.csv, per_class_test.csv and "
    "length.csv to.",
)
@test_option
def main(
    params_path: Path, train_path: Path, val_path: Path, output: Path, test_path: Path | None
) -> None:
    """Fit TF-IDF + LinearSVC on the same training rows as the Transformer and score it on
    the same validation (and test) rows, with the same scores (under `baseline` in
    metrics.json), order probe and length buckets, so that every experiment shows how the
    model compares with a strong classical baseline."""
    with user_errors(output):
        params = load_params(params_path)
        train, val = read_table(train_path), read_table(val_path)
        test = read_table(test_path, allow_empty=True) if test_path else None
        model = fit_baseline(train, params.baseline)
        labels = sorted(set(train[LABEL]))
        on_val = predictions(model, val)
        on_test = predictions(model, test) if test is not None and not test.empty else None
        edges = length_edges(train[TEXT])
        write_table(length_table(edges, val[TEXT], on_val), output / "length.csv")
        metrics = write_scores(output, labels, on_val, on_test, name="baseline")
    click.echo(
        f"baseline: accuracy {metrics['accuracy']:.4f}, macro_f1 "
        f"{metrics['macro_f1']:.4f}, drop with words shuffled {metrics['order']['drop']:.4f}"
        f"{summary_of_test(metrics, on_test)} "
        f"({params.baseline.analyzer} TF-IDF + LinearSVC) -> {output}"
    )


def predictions(model: "Pipeline", table: pd.DataFrame) -> Predictions:
    """The baseline's labels for `table`'s rows, as written and with all of each text's words
    shuffled (it reads every word)."""
    shuffled = table.assign(**{TEXT: shuffle_words(list(table[TEXT]))})
    return Predictions(
        list(table[LABEL]), predict_baseline(model, table), predict_baseline(model, shuffled)
    )


if __name__ == "__main__":
    main()
