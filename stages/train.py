"""Stage `train`: train.csv, val.csv, vocab.json (and models/pretrained/) -> models/model.pt and
dvclive metrics."""

import sys
from contextlib import nullcontext
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import portable
from pipeline.cli import params_option, train_option, user_errors, val_option
from pipeline.config import load_params
from pipeline.data import read_table
from pipeline.early_stop import STOP_FILE, STOPPED_AT, stop_file
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
@click.option(
    "--pretrained",
    "pretrained_dir",
    type=click.Path(path_type=Path),
    help="The pretrained encoder's files (the pretrained stage's output); read only with "
    "model.encoder 'pretrained'.",
)
@click.option("--quiet", is_flag=True, help="Print only the final summary line.")
def main(
    params_path: Path,
    train_path: Path,
    val_path: Path,
    vocab_path: Path,
    model_path: Path,
    live_dir: Path,
    pretrained_dir: Path | None,
    quiet: bool,
) -> None:
    """Train the network the `model` params describe as the `train` params say, logging
    per-epoch loss and accuracy of both splits with dvclive.

    With train.processes N > 1 this command starts itself as N data-parallel processes (see
    pipeline.distributed); started by torchrun, it is one of them. Rank 0 writes the outputs.

    With the environment variable PIPELINE_STOP_FILE set (stages/tune.py sets it for each
    trial), training stops after any epoch at whose end that file exists; the model and
    metrics are those of the epochs done, and metrics.json gets stopped_at_epoch.
    """
    # First of all: no worker outlives its launcher, no stage outlives DVC (when killed).
    from pipeline import distributed

    distributed.end_with_starter()
    with user_errors():
        params = load_params(params_path)
    # Before torch loads: train.portable pins the kernels, for the same bytes on any x86-64 CPU.
    portable.apply(params.train.portable)
    # torch, dvclive and the training code load here, not at the top: ~1.5 s that `--help`
    # and usage errors need not wait for.
    from dvclive import Live

    from pipeline import calibration
    from pipeline.checkpoint import save_checkpoint
    from pipeline.training import train_model

    main_rank = distributed.is_main()
    # Other ranks write nothing, so they have nothing to remove if they fail.
    with user_errors(*((model_path, live_dir) if main_rank else ())):
        if params.train.processes > 1 and not distributed.launched():
            distributed.launch(params.train.processes, Path(__file__).resolve(), sys.argv[1:])
            return
        train, val = read_table(train_path), read_table(val_path)
        vocab = load_vocab(vocab_path)
        epochs = params.train.epochs
        stop_at = stop_file()
        done = 0  # the last epoch trained: below `epochs` once stopped early
        # dvcyaml=False: dvc.yaml declares the metrics and plots by hand.
        live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False) if main_rank else None
        with live if live is not None else nullcontext():

            def log(epoch: int, metrics: dict[str, float]) -> bool:
                nonlocal done
                done = epoch
                distributed.fail_if_testing(epoch)
                if main_rank:
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
                distributed.pause_if_testing(epoch)
                return stop_at is not None and stop_at.exists()

            # train.calibrate: the temperature is fitted on training rows held out of training,
            # not on the validation rows, which choose the encoder share and which every
            # reported score (calibration included) is measured on.
            held_out = None
            if params.train.calibrate:
                train, held_out = calibration.hold_out(train, params.train.seed)
            checkpoint = train_model(
                train, val, vocab, params.model, params.train, params.clean, log, pretrained_dir
            )
            if main_rank and done < epochs:
                # Written into metrics.json as the `with` ends: `dvc exp show` shows the column
                # for this run alone (a run of every epoch has no such key, as before).
                live.summary[STOPPED_AT] = done
        if not main_rank:
            return
        fitted = ""
        if held_out is not None:
            checkpoint.temperature = calibration.fit_on(checkpoint, held_out)
            fitted = f", temperature {checkpoint.temperature:.4f} on {len(held_out)} held-out rows"
        save_checkpoint(model_path, checkpoint)
    trained = f"{epochs} epochs"
    if done < epochs:
        trained = f"{done} of {epochs} epochs (stopped: {STOP_FILE})"
    click.echo(
        f"train: {trained} on {len(train)} rows, final val_accuracy "
        f"{live.summary['val_accuracy']:.4f}{fitted} -> {model_path}"
    )


if __name__ == "__main__":
    main()
