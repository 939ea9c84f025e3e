"""Stage `train`: train.csv, val.csv, vocab.json -> models/model.pt and dvclive metrics."""

import sys
from pathlib import Path

import click
from dvclive import Live

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.checkpoint import save_checkpoint
from pipeline.cli import params_option, train_option, user_errors, val_option
from pipeline.config import load_params
from pipeline.data import read_table
from pipeline.training import train_model
from pipeline.vocab import load_vocab

LOGGED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@click.command()
@params_option
@train_option
@val_option
@click.option(
    "--vocab",
    "vocab_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Vocabulary written by the vocab stage.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint to write (weights, params, vocabulary, labels).",
)
@click.option(
    "--live-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="dvclive directory for the per-epoch metrics.",
)
@click.option("--quiet", is_flag=True, help="Print only the final summary line.")
def main(
    params_path: Path,
    train_path: Path,
    val_path: Path,
    vocab_path: Path,
    model_path: Path,
    live_dir: Path,
    quiet: bool,
) -> None:
    """Train the Transformer encoder with the `train` params, logging per-epoch loss and
    accuracy of both splits with dvclive."""
    with user_errors(model_path, live_dir):
        params = load_params(params_path)
        train, val = read_table(train_path), read_table(val_path)
        vocab = load_vocab(vocab_path)
        epochs = params.train.epochs
        # dvcyaml=False: dvc.yaml declares the metrics and plots by hand.
        with Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:

            def log(epoch: int, metrics: dict[str, float]) -> None:
                live.step = epoch
                for name in LOGGED:
                    live.log_metric(name, round(metrics[name], 6))
                live.make_summary()
                if not quiet:
                    click.echo(
                        f"epoch {epoch:>3}/{epochs}  "
                        + "  ".join(f"{name} {metrics[name]:.4f}" for name in LOGGED)
                        + f"  {metrics['seconds']:.1f}s"
                    )

            checkpoint = train_model(train, val, vocab, params.train, params.clean, log)
        save_checkpoint(model_path, checkpoint)
    click.echo(
        f"train: {epochs} epochs on {len(train)} rows, final val_accuracy "
        f"{live.summary['val_accuracy']:.4f} -> {model_path}"
    )


if __name__ == "__main__":
    main()
