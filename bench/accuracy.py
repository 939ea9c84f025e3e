"""Accuracy of the pipeline's model on a CSV given by path, over several seeds.

    python bench/accuracy.py ../shared/data/kaggle_subjects_1741.csv
    python bench/accuracy.py ../shared/data/mmlu_science_2265.csv --seeds 42,43,44
    python bench/accuracy.py FILE.csv --set train.lr=1e-3 --set train.epochs=20

Runs the library in-process (clean -> split -> vocab -> train -> evaluate) with the repo's
params.yaml, changed by any --set, for each seed (the seed of both split and train), and
prints one table row per positional encoding: mean +- sd of accuracy and macro-F1, the
accuracy of the transformer alone and of the n-gram path alone (train.ngram_path), and
training seconds. Nothing is written to the repository.
"""

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import click
import pandas as pd
import yaml
from reference import train_reference  # bench/reference.py, beside this script

from pipeline.baseline import fit_baseline, predict_baseline
from pipeline.config import PATHS, Params, load_params, with_overrides
from pipeline.data import LABEL, TEXT, clean_table, read_raw, split_table
from pipeline.evaluation import accuracy, classification_metrics
from pipeline.predict import predict_labels
from pipeline.training import train_model
from pipeline.vocab import build_vocab

ROOT = Path(__file__).resolve().parents[1]


def with_changes(params: Params, changes: list[str]) -> Params:
    """Apply `section.key=value` changes, each value read as YAML like `dvc exp run -S`."""
    pairs = (change.partition("=") for change in changes)
    return with_overrides(params, {key: yaml.safe_load(value) for key, _, value in pairs})


def split_rows(params: Params, csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = read_raw(csv, params.data.text_column, params.data.label_column)
    table, _ = clean_table(raw, params.clean)
    train, val, _ = split_table(table, params.split.val_size, params.split.seed)
    return train, val


def run_baseline(params: Params, csv: Path) -> dict:
    train, val = split_rows(params, csv)
    start = time.perf_counter()
    model = fit_baseline(train, params.baseline)
    seconds = time.perf_counter() - start
    labels = sorted(set(train[LABEL]))
    metrics = classification_metrics(list(val[LABEL]), predict_baseline(model, val), labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "seconds": seconds}


def run_reference(params: Params, csv: Path) -> dict:
    """The original notebook's recipe (bench/reference.py) on the same rows."""
    train, val = split_rows(params, csv)
    return train_reference(
        list(train[TEXT]),
        list(train[LABEL]),
        list(val[TEXT]),
        list(val[LABEL]),
        epochs=30,
        seed=params.train.seed,
        threads=params.train.threads,  # as the pipeline: torch's default oversubscribes here
    )


def run_transformer(params: Params, csv: Path) -> dict:
    train, val = split_rows(params, csv)
    vocab = build_vocab(train[TEXT], train[LABEL], params.vocab.min_freq, params.vocab.max_size)
    start = time.perf_counter()
    checkpoint = train_model(train, val, vocab, params.train, params.clean, lambda *_: None)
    seconds = time.perf_counter() - start
    y_true = list(val[LABEL])
    alone = PATHS if checkpoint.model.ngrams is not None else ()
    predicted = predict_labels(checkpoint, list(val[TEXT]), ("both", *alone))
    metrics = classification_metrics(y_true, predicted["both"], vocab.labels)
    result = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "seconds": seconds}
    return result | {part: accuracy(y_true, predicted[part]) for part in alone}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


@click.command()
@click.argument("csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--seeds", default="42,43,44", show_default=True, help="Comma-separated seeds.")
@click.option(
    "--encodings",
    default="learned,sinusoidal,none",
    show_default=True,
    help="Comma-separated train.pos_encoding values to compare.",
)
@click.option(
    "--reference",
    is_flag=True,
    help="Add the original notebook's recipe (30 epochs; slow: ~15 min per seed).",
)
@click.option("--set", "changes", multiple=True, help="A param change, e.g. train.lr=1e-3.")
def main(
    csv: Path,
    text_column: str,
    label_column: str,
    seeds: str,
    encodings: str,
    reference: bool,
    changes: tuple[str, ...],
) -> None:
    """Print accuracy and macro-F1 (mean ± sd over seeds) for each positional encoding."""
    base = with_changes(
        load_params(ROOT / "params.yaml"),
        [f"data.text_column={text_column}", f"data.label_column={label_column}", *changes],
    )
    click.echo(f"{csv.name}  changes: {' '.join(changes) or '(none)'}  seeds: {seeds}")
    click.echo(
        "| model | accuracy | macro-F1 | transformer alone | n-grams alone | train s |\n"
        "|---|---|---|---|---|---|"
    )
    seed_list = [int(seed) for seed in seeds.split(",")]

    def row(name: str, run: Callable[[Params, Path], dict], changes: list[str]) -> None:
        per_seed = ["split.seed={}", "train.seed={}"]
        runs = [
            run(with_changes(base, [c.format(seed) for c in per_seed] + changes), csv)
            for seed in seed_list
        ]
        # Accuracy of each of the model's paths alone, where it has both (train.ngram_path).
        alone = [mean_sd([r[part] for r in runs]) if part in runs[0] else "-" for part in PATHS]
        click.echo(
            f"| {name} | {mean_sd([r['accuracy'] for r in runs])} | "
            f"{mean_sd([r['macro_f1'] for r in runs])} | {' | '.join(alone)} | "
            f"{statistics.mean(r['seconds'] for r in runs):.1f} |"
        )

    row(f"baseline: TF-IDF {base.baseline.analyzer} + LinearSVC", run_baseline, [])
    if reference:
        row("original recipe (bench/reference.py)", run_reference, [])
    for encoding in filter(None, encodings.split(",")):  # --encodings "" runs none
        row(f"model, {encoding} PE", run_transformer, [f"train.pos_encoding={encoding}"])


if __name__ == "__main__":
    main()
