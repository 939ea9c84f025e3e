"""Stage `evaluate`: model + val.csv -> reports/eval (metrics, confusion, per-class, PE plots)."""

from pathlib import Path

import click

from pipeline.checkpoint import load_checkpoint
from pipeline.cli import user_errors
from pipeline.data import LABEL, TEXT, read_table, write_table
from pipeline.evaluation import classification_metrics, confusion_table, per_class_table
from pipeline.files import write_json
from pipeline.plots import positional_encoding_plots
from pipeline.predict import predict_proba


@click.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint written by the train stage.",
)
@click.option(
    "--val",
    "val_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Validation rows written by the split stage.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write metrics.json, confusion.csv, per_class.csv and PNGs to.",
)
def main(model_path: Path, val_path: Path, output: Path) -> None:
    """Score the model on the validation rows and draw its positional encoding."""
    with user_errors():
        checkpoint = load_checkpoint(model_path)
        val = read_table(val_path)
        probs = predict_proba(checkpoint, list(val[TEXT]))
        labels = checkpoint.vocab.labels
        y_true = list(val[LABEL])
        y_pred = [labels[i] for i in probs.argmax(dim=1)]
        metrics = classification_metrics(y_true, y_pred, labels)
        write_table(confusion_table(y_true, y_pred), output / "confusion.csv")
        write_table(per_class_table(metrics), output / "per_class.csv")
        table = checkpoint.model.positions.table
        positional_encoding_plots(
            checkpoint.params.pos_encoding,
            table,
            checkpoint.initial_positions,
            checkpoint.trained_positions,
            output,
        )
        write_json(output / "metrics.json", metrics)  # last: its presence means all is written
    click.echo(
        f"evaluate: accuracy {metrics['accuracy']:.4f}, macro_f1 "
        f"{metrics['macro_f1']:.4f} on {metrics['rows']} validation rows -> {output}"
    )


if __name__ == "__main__":
    main()
