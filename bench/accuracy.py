"""Accuracy on held-out test rows, the model and the baseline tuned with the same budget.

    python bench/accuracy.py ../shared/data/kaggle_subjects_1741.csv
    python bench/accuracy.py ../shared/data/mmlu_science_2265.csv --seeds 42,43,44
    python bench/accuracy.py FILE.csv --grid default --seeds 42 --encodings ''   # smoke run
    python bench/accuracy.py FILE.csv --model-grid train.lr=1e-3,2e-3 \
        --baseline-grid baseline.C=0.3,1

For each seed (the seed of the split and of the model) the rows are cleaned, repeated texts
removed, and each label split into test rows (--test-size), validation rows (--val-size) and
training rows, as the split stage does with `split.test_size`. Then:

1. Tuning, on the validation rows only. Every config of the model's grid (--model-grid, the
   product of the values given) and of the baseline's (--baseline-grid) is trained on the
   training rows of every seed and scored on the validation rows; each model takes the config
   with the best mean validation accuracy (macro-F1, then grid order, break ties). The two
   grids have the same size by default: the same tuning budget.
2. Reporting, on the test rows, which no choice has seen: the chosen configs, the untuned
   defaults (params.yaml with any --set), and the chosen model config with each positional
   encoding (--encodings), with the accuracy of each of the model's paths alone. The test
   scores of every config are printed in the tuning table too, for reading, never for
   choosing. `--encoder-alone` adds the same rows with `model.ngram_path: false`.

Mean ± sd over the seeds; the runs run in this process, one after the other, with the repo's
params.yaml (`train.threads` threads). Nothing is written to the repository.
"""

import datetime
import itertools
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch
import yaml
from reference import train_reference  # bench/reference.py, beside this script

from pipeline.baseline import fit_baseline, predict_baseline
from pipeline.config import PATHS, Params, load_params, with_overrides
from pipeline.data import LABEL, TEXT, Split, clean_table, read_raw, split_rows
from pipeline.errors import PipelineError
from pipeline.evaluation import accuracy, classification_metrics
from pipeline.predict import predict_labels
from pipeline.pretrained import source_dir
from pipeline.training import train_model
from pipeline.vocab import build_vocab

ROOT = Path(__file__).resolve().parents[1]

# Four configs each: the same tuning budget. The model's two knobs are the ones today's
# defaults were chosen by (on kaggle's validation rows); C is the baseline's main knob.
MODEL_GRID = ("model.transformer_dropout=0.0,0.5", "train.lr=1.0e-3,2.0e-3")
BASELINE_GRID = ("baseline.C=0.1,0.3,1.0,3.0",)

Config = tuple[tuple[str, object], ...]  # (("train.lr", 0.001), ...): one point of a grid


def with_changes(params: Params, changes: dict[str, object]) -> Params:
    """`params` with `{"section.key": value}` changes, checked like params.yaml."""
    return with_overrides(params, changes)


def parse_set(changes: tuple[str, ...]) -> dict[str, object]:
    """`section.key=value` strings, each value read as YAML like `dvc exp run -S`."""
    pairs = (change.partition("=") for change in changes)
    return {key: yaml.safe_load(value) for key, _, value in pairs}


def parse_grid(axes: tuple[str, ...], allowed: Callable[[str], bool], option: str) -> list[Config]:
    """`key=v1,v2` axes -> every combination, in order (the first axis varies slowest)."""
    keys, values = [], []
    for axis in axes:
        key, sep, listed = axis.partition("=")
        if not sep or not listed:
            raise click.BadParameter(f"{axis!r} is not key=value,value", param_hint=option)
        if not allowed(key):
            raise click.BadParameter(f"{key} cannot be tuned here", param_hint=option)
        keys.append(key)
        values.append([yaml.safe_load(value) for value in listed.split(",")])
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def describe(config: Config, base: Params) -> str:
    """A config as `lr=0.001, transformer_dropout=0.5`, and whether it is the defaults."""
    if not config:
        return "defaults"
    text = ", ".join(f"{key.split('.', 1)[1]}={value}" for key, value in config)
    return f"{text} (defaults)" if with_changes(base, dict(config)) == base else text


class Bench:
    """Splits per seed and runs per (kind, params), each computed once."""

    def __init__(self, csv: Path, base: Params, seeds: list[int], sizes: dict[str, float]):
        self.csv, self.base, self.seeds, self.sizes = csv, base, seeds, sizes
        self.raw = read_raw(csv, base.data.text_column, base.data.label_column)
        self.splits: dict[int, Split] = {}
        self.runs: dict[tuple[str, Params], dict] = {}

    def params(self, config: Config, seed: int) -> Params:
        seeded = {"split.seed": seed, "train.seed": seed, **self.sizes}
        return with_changes(self.base, dict(config) | seeded)

    def split(self, params: Params) -> Split:
        seed = params.split.seed
        if seed not in self.splits:
            table, _ = clean_table(self.raw, params.clean)
            self.splits[seed] = split_rows(
                table, params.split.val_size, params.split.test_size, seed
            )
        return self.splits[seed]

    def run(self, kind: str, config: Config) -> list[dict]:
        """One run per seed of `kind` (model, baseline, reference) with `config`."""
        results = []
        for seed in self.seeds:
            params = self.params(config, seed)
            if (kind, params) not in self.runs:
                start = time.perf_counter()
                result = RUNNERS[kind](params, self.split(params))
                self.runs[kind, params] = result
                click.echo(
                    f"  {kind} [{describe(config, self.base)}] seed {seed}: val "
                    f"{result.get('val_accuracy', float('nan')):.3f}, test "
                    f"{result['test_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)",
                    err=True,
                )
            results.append(self.runs[kind, params])
        return results


def run_model(params: Params, split: Split) -> dict:
    vocab = build_vocab(
        split.train[TEXT], split.train[LABEL], params.vocab.min_freq, params.vocab.max_size
    )
    # The pretrained encoder's files straight from where model.pretrained points (the pipeline
    # copies them into models/pretrained/ first).
    files = source_dir(params.model.pretrained) if params.model.encoder == "pretrained" else None
    start = time.perf_counter()
    checkpoint = train_model(
        split.train, split.val, vocab, params.model, params.train, params.clean, noop, files
    )
    seconds = time.perf_counter() - start
    alone = PATHS if checkpoint.model.ngrams is not None else ()
    val = predict_labels(checkpoint, list(split.val[TEXT]), ("both",))
    test = predict_labels(checkpoint, list(split.test[TEXT]), ("both", *alone))
    y_test = list(split.test[LABEL])
    return (
        scores("val", list(split.val[LABEL]), val["both"], vocab.labels)
        | scores("test", y_test, test["both"], vocab.labels)
        | {f"test_{part}": accuracy(y_test, test[part]) for part in alone}
        | {"seconds": seconds}
    )


def run_baseline(params: Params, split: Split) -> dict:
    start = time.perf_counter()
    model = fit_baseline(split.train, params.baseline)
    seconds = time.perf_counter() - start
    labels = sorted(set(split.train[LABEL]))
    return (
        scores("val", list(split.val[LABEL]), predict_baseline(model, split.val), labels)
        | scores("test", list(split.test[LABEL]), predict_baseline(model, split.test), labels)
        | {"seconds": seconds}
    )


def run_reference(params: Params, split: Split) -> dict:
    """The original notebook's recipe (bench/reference.py), final epoch, on the test rows. It
    builds its vocabulary from all the rows it is given, test rows included: the original's
    leak, kept on purpose."""
    result = train_reference(
        list(split.train[TEXT]),
        list(split.train[LABEL]),
        list(split.test[TEXT]),
        list(split.test[LABEL]),
        epochs=30,
        seed=params.train.seed,
        threads=params.train.threads,  # as the pipeline: torch's default oversubscribes here
    )
    return {
        "test_accuracy": result["accuracy"],
        "test_macro_f1": result["macro_f1"],
        "seconds": result["seconds"],
    }


RUNNERS: dict[str, Callable[[Params, Split], dict]] = {
    "model": run_model,
    "baseline": run_baseline,
    "reference": run_reference,
}


def noop(*_: object) -> None:
    """No per-epoch output: one line per run goes to stderr instead."""


def scores(prefix: str, y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    metrics = classification_metrics(y_true, y_pred, labels)
    return {f"{prefix}_accuracy": metrics["accuracy"], f"{prefix}_macro_f1": metrics["macro_f1"]}


def mean_sd(runs: list[dict], key: str) -> str:
    if key not in runs[0]:
        return "-"
    values = [run[key] for run in runs]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def mean(runs: list[dict], key: str) -> float:
    return statistics.mean(run[key] for run in runs)


def choose(bench: Bench, kind: str, grid: list[Config]) -> tuple[Config, dict[Config, list]]:
    """Run every config of `grid`; the best by mean validation accuracy, then macro-F1, then
    the first in grid order."""
    runs = {config: bench.run(kind, config) for config in grid}
    best = max(
        grid,
        key=lambda c: (
            mean(runs[c], "val_accuracy"),
            mean(runs[c], "val_macro_f1"),
            -grid.index(c),
        ),
    )
    return best, runs


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def header(csv: Path) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"date {datetime.datetime.now().isoformat(timespec='seconds')}; machine: "
        f"{os.cpu_count()} CPUs ({cpu_model()}), load average {load} at start; "
        f"torch {torch.__version__}, Python {platform.python_version()}\n"
        f"command: `python {shlex.join(['bench/accuracy.py', *sys.argv[1:]])}`; data: {csv}"
    )


@click.command()
@click.argument("csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--seeds", default="42,43,44", show_default=True, help="Comma-separated seeds.")
@click.option(
    "--test-size",
    default=0.2,
    show_default=True,
    help="Share of each label's rows held out as test rows (split.test_size).",
)
@click.option(
    "--val-size",
    default=0.2,
    show_default=True,
    help="Share of each label's rows for validation, the rows the tuning sees (split.val_size).",
)
@click.option(
    "--grid",
    type=click.Choice(["tune", "default"]),
    default="tune",
    show_default=True,
    help="tune: the grids below; default: no tuning, params.yaml's values only.",
)
@click.option(
    "--model-grid",
    multiple=True,
    default=MODEL_GRID,
    show_default=True,
    help="One axis of the model's grid, key=value,value (repeat for more axes).",
)
@click.option(
    "--baseline-grid",
    multiple=True,
    default=BASELINE_GRID,
    show_default=True,
    help="One axis of the baseline's grid, baseline.key=value,value (repeat for more).",
)
@click.option(
    "--encodings",
    default="learned,sinusoidal,none",
    show_default=True,
    help="model.pos_encoding values to score with the chosen model config ('' for none).",
)
@click.option(
    "--encoder-alone",
    is_flag=True,
    help="Add each encoding with model.ngram_path false (one more training run per seed each).",
)
@click.option(
    "--reference",
    is_flag=True,
    help="Add the original notebook's recipe (30 epochs; slow: ~15 min per seed).",
)
@click.option(
    "--set", "changes", multiple=True, help="A param change for all runs, e.g. train.epochs=20."
)
def main(
    csv: Path,
    text_column: str,
    label_column: str,
    seeds: str,
    test_size: float,
    val_size: float,
    grid: str,
    model_grid: tuple[str, ...],
    baseline_grid: tuple[str, ...],
    encodings: str,
    encoder_alone: bool,
    reference: bool,
    changes: tuple[str, ...],
) -> None:
    """Tune the model and the baseline on validation rows, with grids of the same size, and
    report both on held-out test rows (mean ± sd over seeds)."""
    started = time.perf_counter()
    try:
        columns = {"data.text_column": text_column, "data.label_column": label_column}
        base = with_changes(load_params(ROOT / "params.yaml"), columns | parse_set(changes))
        sizes = {"split.test_size": test_size, "split.val_size": val_size}
        with_changes(base, sizes)  # check the sizes before any work
        seed_list = [int(seed) for seed in seeds.split(",")]
        fixed = ("data.", "split.", "clean.")  # the same rows for every config of a seed
        models = [()]
        baselines = [()]
        if grid == "tune":
            models = parse_grid(
                model_grid,
                lambda key: not key.startswith((*fixed, "baseline.")),
                "--model-grid",
            )
            baselines = parse_grid(
                baseline_grid, lambda key: key.startswith("baseline."), "--baseline-grid"
            )
        for config in (*models, *baselines):
            with_changes(base, dict(config))  # a wrong key or value stops here, not mid-run
        bench = Bench(csv, base, seed_list, sizes)
        report(bench, models, baselines, encodings, encoder_alone, reference, changes)
    except PipelineError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"\ntook {time.perf_counter() - started:.0f} s")


def report(
    bench: Bench,
    models: list[Config],
    baselines: list[Config],
    encodings: str,
    encoder_alone: bool,
    reference: bool,
    changes: tuple[str, ...],
) -> None:
    base, seeds = bench.base, bench.seeds
    first = bench.split(bench.params((), seeds[0]))
    click.echo(header(bench.csv))
    click.echo(
        f"{bench.csv.name}: {len(bench.raw)} rows; per seed {len(first.train)} train / "
        f"{len(first.val)} validation / {len(first.test)} test rows after "
        f"{first.duplicates} repeated texts are removed (test_size "
        f"{bench.sizes['split.test_size']}, val_size {bench.sizes['split.val_size']}); "
        f"seeds {','.join(map(str, seeds))}; changes to params.yaml: "
        f"{' '.join(changes) or '(none)'}"
    )
    budget = f"model {len(models)} configs, baseline {len(baselines)} configs"
    if len(models) != len(baselines):
        budget += " — NOT the same tuning budget"
    click.echo(f"tuning budget: {budget}; the choice: best mean validation accuracy\n")

    baseline_choice, baseline_runs = choose(bench, "baseline", baselines)
    model_choice, model_runs = choose(bench, "model", models)

    click.echo(
        "Tuning on the validation rows (test columns for reading only: no choice uses them)\n\n"
        "| model | config | val accuracy | val macro-F1 | test accuracy | test macro-F1 |"
        " train s |\n|---|---|---|---|---|---|---|"
    )
    for kind, runs, chosen in (
        ("baseline", baseline_runs, baseline_choice),
        ("model", model_runs, model_choice),
    ):
        for config, results in runs.items():
            mark = " **chosen**" if config == chosen else ""
            click.echo(
                f"| {kind} | {describe(config, base)}{mark} | {mean_sd(results, 'val_accuracy')} "
                f"| {mean_sd(results, 'val_macro_f1')} | {mean_sd(results, 'test_accuracy')} | "
                f"{mean_sd(results, 'test_macro_f1')} | {mean(results, 'seconds'):.1f} |"
            )

    click.echo(
        "\nHeld-out test rows (mean ± sd over seeds)\n\n"
        "| model | config | test accuracy | test macro-F1 | transformer alone | n-grams alone |"
        " train s |\n|---|---|---|---|---|---|---|"
    )

    def row(name: str, kind: str, config: Config) -> list[dict]:
        results = bench.run(kind, config)
        click.echo(
            f"| {name} | {describe(config, base)} | {mean_sd(results, 'test_accuracy')} | "
            f"{mean_sd(results, 'test_macro_f1')} | {mean_sd(results, 'test_transformer')} | "
            f"{mean_sd(results, 'test_ngrams')} | {mean(results, 'seconds'):.1f} |"
        )
        return results

    tuned_baseline = row("**baseline, tuned on validation**", "baseline", baseline_choice)
    pe = dict(model_choice).get("model.pos_encoding", base.model.pos_encoding)
    tuned_model = row(f"**model, tuned on validation** ({pe} PE)", "model", model_choice)
    row("baseline, defaults (untuned)", "baseline", ())
    row(f"model, defaults (untuned; {base.model.pos_encoding} PE)", "model", ())
    variants = [(encoding, True) for encoding in filter(None, encodings.split(","))]
    if encoder_alone:
        variants += [(encoding, False) for encoding in filter(None, encodings.split(","))]
    for encoding, ngram_path in variants:
        changed = dict(model_choice) | {"model.pos_encoding": encoding}
        config = tuple((changed | ({} if ngram_path else {"model.ngram_path": False})).items())
        name = "model, tuned config" if ngram_path else "encoder alone, tuned config"
        row(f"{name}, {encoding} PE", "model", config)
    if reference:
        row("original recipe (bench/reference.py)", "reference", ())

    gaps = [
        m["test_accuracy"] - b["test_accuracy"]
        for m, b in zip(tuned_model, tuned_baseline, strict=True)
    ]
    sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    click.echo(
        f"\nmodel minus baseline, both tuned on validation, test accuracy per seed: "
        f"{', '.join(f'{gap:+.3f}' for gap in gaps)} (mean {statistics.mean(gaps):+.3f} ± "
        f"{sd:.3f})"
    )


if __name__ == "__main__":
    main()
