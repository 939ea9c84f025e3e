"""Stage `evaluate`: model + val.csv (+ test.csv, train.csv) -> reports/eval (metrics with the
calibration and robustness blocks, confusion, per-class, errors, label issues, reliability,
slices, accuracy by length, PE plots)."""

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
import pandas as pd
from click.core import ParameterSource

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import portable
from pipeline.cli import params_option, test_option, user_errors, val_option
from pipeline.config import PATHS, Part, load_params
from pipeline.data import LABEL, SLICE, TEXT, originals, read_table, write_table
from pipeline.errors import PipelineError
from pipeline.evaluation import (
    Predictions,
    accuracy,
    errors_table,
    length_edges,
    length_table,
    shuffle_words,
    slice_table,
    summary_of_test,
    write_scores,
)
from pipeline.text import clean_text

if TYPE_CHECKING:
    from pipeline.checkpoint import Checkpoint  # loads torch


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
    help="Directory to write metrics.json, confusion.csv, per_class.csv, per_class_test.csv, "
    "errors.csv, label_issues.csv, reliability.csv, slices.csv, length.csv and PNGs to.",
)
@test_option
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    help="Training rows written by the split stage; when given, length.csv gets the accuracy "
    "on the validation rows in each quartile of the training rows' lengths, and the directional "
    "check takes each label's typical word from them.",
)
@params_option
def main(
    model_path: Path,
    val_path: Path,
    output: Path,
    test_path: Path | None,
    train_path: Path | None,
    params_path: Path,
) -> None:
    """Score the model on the validation rows (and the test rows, if any), also with each
    text's words shuffled (the `order` block: how much it uses word order), how well its
    probabilities fit (`calibration`) and how its predictions hold up under label-preserving
    changes to the texts (`robustness`); list its mistakes and the rows whose label it
    contradicts; draw its positional encoding. With the CPU kernels train.portable chose for
    training."""
    # Outside a project (no params.yaml, none passed) the kernels are pinned, as predict's are.
    source = click.get_current_context().get_parameter_source("params_path")
    with user_errors(output):
        if source == ParameterSource.DEFAULT and not params_path.exists():
            pinned = True
        else:
            pinned = load_params(params_path).train.portable
    portable.apply(pinned)  # before torch loads
    # torch and the model's code load here, not at the top: ~1.2 s that `--help` and usage
    # errors need not wait for.
    import torch

    from pipeline.calibration import reliability_table
    from pipeline.checkpoint import load_checkpoint
    from pipeline.label_issues import label_issue_table
    from pipeline.plots import positional_encoding_plots

    with user_errors(output):
        checkpoint = load_checkpoint(model_path)
        # As in training: a fixed count keeps results identical, and more threads than
        # cores (or busy cores) makes small matrices far slower, not faster.
        torch.set_num_threads(checkpoint.threads)
        labels = checkpoint.vocab.labels
        val = read_known(val_path, model_path, labels)
        test = read_known(test_path, model_path, labels, allow_empty=True) if test_path else None
        train = read_known(train_path, model_path, labels) if train_path is not None else None
        on_val = predictions(checkpoint, val)
        # Rows that neither training nor any choice of params has seen.
        on_test = predictions(checkpoint, test) if test is not None and not test.empty else None
        if train is not None:
            edges = length_edges(train[TEXT])
            write_table(length_table(edges, val[TEXT], on_val), output / "length.csv")
        parts = {"val": (val, on_val)} | ({"test": (test, on_test)} if on_test else {})
        write_table(errors_table(parts, labels, "p"), output / "errors.csv")
        issues = label_issue_table({k: (t, rows.scores) for k, (t, rows) in parts.items()}, labels)
        write_table(issues, output / "label_issues.csv")
        true = np.array([labels.index(label) for label in on_val.true])
        write_table(reliability_table(on_val.scores, true), output / "reliability.csv")
        slices = list(val[SLICE]) if SLICE in val else None
        write_table(slice_table(slices, on_val), output / "slices.csv")
        blocks = {
            "calibration": calibration(checkpoint, val, on_val),
            "robustness": robustness(checkpoint, val, on_val, train),
        }
        metrics = write_scores(output, labels, on_val, on_test, blocks=blocks)
        config = checkpoint.config
        table = checkpoint.model.position_table()
        positional_encoding_plots(
            config.pos_encoding,
            None if table is None else table[: config.max_seq_len],  # the positions it can use
            checkpoint.initial_positions,
            checkpoint.trained_positions,
            output,
            pretrained=config.pretrained if config.encoder == "pretrained" else None,
        )
    paths = "".join(f", {key} {value:.4f}" for key, value in on_val.extra.items())
    click.echo(
        f"evaluate: accuracy {metrics['accuracy']:.4f}, macro_f1 "
        f"{metrics['macro_f1']:.4f}{paths}, drop with words shuffled "
        f"{metrics['order']['drop']:.4f}, ECE {metrics['calibration']['ece']:.4f}, "
        f"{len(issues)} label issues on {len(on_val.true)} validation rows"
        f"{summary_of_test(metrics, on_test)} -> {output}"
    )


def predictions(checkpoint: "Checkpoint", table: pd.DataFrame) -> Predictions:
    """The model's labels and probabilities for `table`'s rows, as written and with each text's
    words shuffled, with the accuracy of each of its two paths alone: the transformer is the
    part the positional encoding acts on, the n-gram path the part a linear model could do."""
    # These load torch: after portable.apply, as main's.
    from pipeline.predict import logits_by_part, predict_labels, probabilities

    alone = PATHS if checkpoint.model.ngrams is not None else ()
    true, texts = list(table[LABEL]), list(table[TEXT])
    logits = logits_by_part(checkpoint, texts, ("both", *alone))
    labels = checkpoint.vocab.labels
    by_path = {part: [labels[i] for i in values.argmax(dim=1)] for part, values in logits.items()}
    scores = {f"accuracy_{path}_only": accuracy(true, by_path[path]) for path in alone}
    # Only the words the model reads change places: its first max_seq_len (all it reads with
    # the scratch encoder and mean pooling; CLS or word pieces take some places). The n-gram
    # path is a bag of them, blind to their order: of the paths alone, the transformer is scored.
    shuffled_texts = shuffle_words(texts, checkpoint.config.max_seq_len)
    parts: tuple[Part, ...] = ("both", "transformer") if alone else ("both",)
    shuffled = predict_labels(checkpoint, shuffled_texts, parts)
    order = {"transformer_only_shuffled": accuracy(true, shuffled["transformer"])} if alone else {}
    proba = probabilities(checkpoint, logits["both"]).numpy()
    return Predictions(true, by_path["both"], shuffled["both"], scores, order, proba)


def calibration(checkpoint: "Checkpoint", val: pd.DataFrame, rows: Predictions) -> dict:
    """ECE, NLL and Brier score of the probabilities the model predicts with, and its
    temperature; with one fitted (train.calibrate), the same scores without it under
    `uncalibrated`, so that one run shows what the temperature changed."""
    from pipeline.calibration import calibration_scores
    from pipeline.predict import predict_proba

    labels = checkpoint.vocab.labels
    true = np.array([labels.index(label) for label in rows.true])
    block = calibration_scores(rows.scores, true) | {"temperature": checkpoint.temperature}
    if checkpoint.temperature != 1.0:
        as_trained = dataclasses.replace(checkpoint, temperature=1.0)
        raw = predict_proba(as_trained, list(val[TEXT])).numpy()
        block["uncalibrated"] = calibration_scores(raw, true)
    return block


def robustness(
    checkpoint: "Checkpoint", val: pd.DataFrame, rows: Predictions, train: pd.DataFrame | None
) -> dict:
    """The robustness block of the validation rows: the raw texts perturbed, cleaned as the
    model's training rows were; the directional check (with the training rows, which give each
    label its typical word) appends the word of each row's true label."""
    from pipeline.predict import predict_proba
    from pipeline.robustness import robustness_scores, typical_words

    labels = checkpoint.vocab.labels
    predicted = np.array([labels.index(label) for label in rows.predicted])
    targets = [labels.index(label) for label in rows.true]
    directional = None
    if train is not None:
        words = typical_words(list(train[TEXT]), list(train[LABEL]), labels)
        directional = (targets, [words[label] for label in rows.true])
    return robustness_scores(
        lambda texts: predict_proba(checkpoint, texts).numpy(),
        lambda text: clean_text(text, checkpoint.clean),
        originals(val),
        predicted,
        rows.scores,
        directional,
    )


def read_known(
    path: Path, model_path: Path, labels: list[str], allow_empty: bool = False
) -> pd.DataFrame:
    """Rows to score, all of labels the model was trained on (test rows may be none)."""
    table = read_table(path, allow_empty=allow_empty)
    unknown = sorted(set(table[LABEL]) - set(labels))
    if unknown:
        names = ", ".join(unknown[:5])
        raise PipelineError(
            f"{path} has labels that {model_path} was not trained on ({names}); "
            "run `dvc repro` so that the model and the split come from the same data."
        )
    return table


if __name__ == "__main__":
    main()
