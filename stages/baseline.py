"""Stage `baseline`: train.csv, val.csv (+ test.csv) -> reports/baseline (TF-IDF + linear SVM)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pandas as pd

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.baseline import baseline_scores, fit_baseline, predict_baseline
from pipeline.cli import params_option, test_option, train_option, user_errors, val_option
from pipeline.config import CleanParams, load_params
from pipeline.data import LABEL, TEXT, originals, read_table, write_table
from pipeline.evaluation import (
    Predictions,
    errors_table,
    length_edges,
    length_table,
    shuffle_words,
    summary_of_test,
    write_scores,
)
from pipeline.robustness import robustness_scores, typical_words
from pipeline.text import clean_text

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
    help="Directory to write metrics.json, confusion.csv, per_class.csv, per_class_test.csv, "
    "errors.csv and length.csv to.",
)
@test_option
def main(
    params_path: Path, train_path: Path, val_path: Path, output: Path, test_path: Path | None
) -> None:
    """Fit TF-IDF + LinearSVC on the same training rows as the Transformer and score it on
    the same validation (and test) rows, with the same scores (under `baseline` in
    metrics.json), order probe, length buckets, errors.csv (with its decision scores) and
    robustness checks, so that every experiment shows how the model compares with a strong
    classical baseline."""
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
        parts = {"val": (val, on_val)} | ({"test": (test, on_test)} if on_test else {})
        write_table(errors_table(parts, labels, "score"), output / "errors.csv")
        blocks = {"robustness": robustness(model, params.clean, val, on_val, train, labels)}
        metrics = write_scores(output, labels, on_val, on_test, name="baseline", blocks=blocks)
    click.echo(
        f"baseline: accuracy {metrics['accuracy']:.4f}, macro_f1 "
        f"{metrics['macro_f1']:.4f}, drop with words shuffled {metrics['order']['drop']:.4f}"
        f"{summary_of_test(metrics, on_test)} "
        f"({params.baseline.analyzer} TF-IDF + LinearSVC) -> {output}"
    )


def predictions(model: "Pipeline", table: pd.DataFrame) -> Predictions:
    """The baseline's labels and decision scores for `table`'s rows, as written and with all of
    each text's words shuffled (it reads every word)."""
    shuffled = table.assign(**{TEXT: shuffle_words(list(table[TEXT]))})
    return Predictions(
        list(table[LABEL]),
        predict_baseline(model, table),
        predict_baseline(model, shuffled),
        scores=baseline_scores(model, list(table[TEXT])),
    )


def robustness(
    model: "Pipeline",
    clean: CleanParams,
    val: pd.DataFrame,
    rows: Predictions,
    train: pd.DataFrame,
    labels: list[str],
) -> dict:
    """The model's robustness checks, on the baseline's decision scores: the raw texts
    perturbed and cleaned by the clean params, as the training rows were."""
    words = typical_words(list(train[TEXT]), list(train[LABEL]), labels)
    return robustness_scores(
        lambda texts: baseline_scores(model, texts),
        lambda text: clean_text(text, clean),
        originals(val),
        rows.scores.argmax(axis=1),
        rows.scores,
        ([labels.index(label) for label in rows.true], [words[label] for label in rows.true]),
    )


if __name__ == "__main__":
    main()
