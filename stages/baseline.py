"""Stage `baseline`: train.csv, val.csv (+ test.csv) -> reports/baseline (TF-IDF + linear SVM)."""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.baseline import fit_baseline, predict_baseline
from pipeline.cli import params_option, test_option, train_option, user_errors, val_option
from pipeline.config import load_params
from pipeline.data import LABEL, read_table
from pipeline.evaluation import Predictions, summary_of_test, write_scores


@click.command()
@params_option
@train_option
@val_option
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write metrics.json, confusion.csv, per_class.csv and per_class_test.csv to.",
)
@test_option
def main(
    params_path: Path, train_path: Path, val_path: Path, output: Path, test_path: Path | None
) -> None:
    """Fit TF-IDF + LinearSVC on the same training rows as the Transformer and score it on
    the same validation (and test) rows, with the same scores (under `baseline` in
    metrics.json), so that every experiment shows how the model compares with a strong
    classical baseline."""
    with user_errors(output):
        params = load_params(params_path)
        train, val = read_table(train_path), read_table(val_path)
        test = read_table(test_path, allow_empty=True) if test_path else None
        model = fit_baseline(train, params.baseline)
        labels = sorted(set(train[LABEL]))
        on_val = Predictions(list(val[LABEL]), predict_baseline(model, val))
        on_test = None
        if test is not None and not test.empty:
            on_test = Predictions(list(test[LABEL]), predict_baseline(model, test))
        metrics = write_scores(output, labels, on_val, on_test, name="baseline")
    click.echo(
        f"baseline: accuracy {metrics['accuracy']:.4f}, macro_f1 "
        f"{metrics['macro_f1']:.4f}{summary_of_test(metrics, on_test)} "
        f"({params.baseline.analyzer} TF-IDF + LinearSVC) -> {output}"
    )


if __name__ == "__main__":
    main()
