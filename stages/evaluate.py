"""Stage `evaluate`: model + val.csv -> reports/eval (metrics, confusion, per-class, PE plots)."""

import sys
from pathlib import Path

import click
import torch

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.checkpoint import load_checkpoint
from pipeline.cli import user_errors, val_option
from pipeline.config import PATHS
from pipeline.data import LABEL, TEXT, read_table
from pipeline.errors import PipelineError
from pipeline.evaluation import accuracy, write_scores
from pipeline.plots import positional_encoding_plots
from pipeline.predict import predict_labels


@click.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint written by the train stage.",
)
@val_option
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write metrics.json, confusion.csv, per_class.csv and PNGs to.",
)
def main(model_path: Path, val_path: Path, output: Path) -> None:
    """Score the model on the validation rows and draw its positional encoding."""
    with user_errors(output):
        checkpoint = load_checkpoint(model_path)
        # As in training: a fixed count keeps results identical, and more threads than
        # cores (or busy cores) makes small matrices far slower, not faster.
        torch.set_num_threads(checkpoint.params.threads)
        val = read_table(val_path)
        unknown = sorted(set(val[LABEL]) - set(checkpoint.vocab.labels))
        if unknown:
            names = ", ".join(unknown[:5])
            raise PipelineError(
                f"{val_path} has labels that {model_path} was not trained on ({names}); "
                "run `dvc repro` so that the model and the split come from the same data."
            )
        y_true = list(val[LABEL])
        # What each of the model's two paths scores alone: the transformer is the part the
        # positional encoding acts on, the n-gram path the part a linear model could do.
        alone = PATHS if checkpoint.model.ngrams is not None else ()
        predicted = predict_labels(checkpoint, list(val[TEXT]), ("both", *alone))
        parts = {f"accuracy_{part}_only": accuracy(y_true, predicted[part]) for part in alone}
        metrics = write_scores(output, y_true, predicted["both"], checkpoint.vocab.labels, parts)
        positional_encoding_plots(
            checkpoint.params.pos_encoding,
            checkpoint.model.positions.table,
            checkpoint.initial_positions,
            checkpoint.trained_positions,
            output,
        )
    alone = "".join(f", {key} {value:.4f}" for key, value in parts.items())
    click.echo(
        f"evaluate: accuracy {metrics['accuracy']:.4f}, macro_f1 "
        f"{metrics['macro_f1']:.4f}{alone} on {metrics['rows']} validation rows -> {output}"
    )


if __name__ == "__main__":
    main()
