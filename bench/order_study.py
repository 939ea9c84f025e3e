"""Validation accuracy of the model's two paths, and of the baseline, on any (text, label) CSV:
the measurements of the positional-encoding control (bench/order_task.py).

    python bench/order_task.py ../shared/data/mmlu_science_2265.csv /tmp/order_mmlu.csv \
        --text-column eng --label-column Subject
    python bench/order_study.py /tmp/order_mmlu.csv --seeds 42,43,44 \
        --encodings learned,sinusoidal,none --baseline
    python bench/order_study.py /tmp/order_mmlu.csv --seeds 42 --encodings learned \
        --set model.ngram_path=false --set train.portable=false     # one diagnosis run

Each run is what `dvc repro -S data.raw=CSV` with the --set changes trains and scores, with
split.seed and train.seed set to each seed: the clean, split and vocab stages' rows (params.yaml's
split sizes), pipeline.training.train_model, and the validation rows scored by the whole model,
by each of its paths alone and, for a look at fitting, the training rows too. `train.portable`
pins the kernels as the train stage does (set in this process's environment before torch loads,
so it is one value for all runs of a call). One JSON line per run on stdout, then a table of
mean ± sd over the seeds; nothing is written to the repository.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import click
import yaml

# This work tree's library first, whatever pip installed (as the stage scripts do).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import portable
from pipeline.config import PATHS, Params, load_params, with_overrides
from pipeline.data import LABEL, TEXT, Split, clean_table, read_raw, split_rows
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


def parse_set(changes: tuple[str, ...]) -> dict[str, object]:
    """`section.key=value` strings, each value read as YAML like `dvc exp run -S`."""
    pairs = (change.partition("=") for change in changes)
    return {key: yaml.safe_load(value) for key, _, value in pairs}


def accuracy_of(y_true: list[str], y_pred: list[str]) -> float:
    return sum(a == b for a, b in zip(y_true, y_pred, strict=True)) / len(y_true)


def split_of(params: Params, csv: Path) -> Split:
    """The rows the clean and split stages would write for `csv` under `params`."""
    raw = read_raw(csv, params.data.text_column, params.data.label_column)
    return split_rows(
        clean_table(raw, params.clean)[0],
        params.split.val_size,
        params.split.test_size,
        params.split.seed,
    )


def run_model(params: Params, split: Split, csv: Path, pictures: Path | None = None) -> dict:
    from pipeline.evaluation import shuffle_words
    from pipeline.plots import positional_encoding_plots
    from pipeline.predict import predict_labels  # torch: after portable.apply
    from pipeline.training import train_model
    from pipeline.vocab import build_vocab

    vocab = build_vocab(
        split.train[TEXT], split.train[LABEL], params.vocab.min_freq, params.vocab.max_size
    )
    start = time.perf_counter()
    checkpoint = train_model(
        split.train, split.val, vocab, params.model, params.train, params.clean, lambda *_: None
    )
    seconds = time.perf_counter() - start
    positions = checkpoint.model.position_table()
    if pictures is not None:  # the evaluate stage's three pictures of the encoding
        out = pictures / f"{csv.stem}-{params.model.pos_encoding}-seed{params.train.seed}"
        out.mkdir(parents=True, exist_ok=True)
        positional_encoding_plots(
            params.model.pos_encoding,
            None if positions is None else positions[: params.model.max_seq_len].detach(),
            checkpoint.initial_positions,
            checkpoint.trained_positions,
            out,
        )
    parts = ("both", *PATHS) if checkpoint.model.ngrams is not None else ("both",)
    result = {}
    for name, table in (("val", split.val), ("train", split.train)):
        labels = predict_labels(checkpoint, list(table[TEXT]), parts)
        for part in parts:
            result[f"{name}_{part}"] = accuracy_of(list(table[LABEL]), labels[part])
    # The order probe of the evaluate stage: the validation rows with their words shuffled.
    shuffled = shuffle_words(list(split.val[TEXT]), params.model.max_seq_len)
    labels = predict_labels(checkpoint, shuffled, ("both",))["both"]
    result["val_drop"] = result["val_both"] - accuracy_of(list(split.val[LABEL]), labels)
    if checkpoint.model.ngrams is not None:
        result["encoder_share"] = checkpoint.model.encoder_share.item()
    if checkpoint.initial_positions is not None:  # a learned table: how far training moved it
        start = checkpoint.initial_positions[: checkpoint.trained_positions]
        moved = positions[: len(start)].detach() - start
        result["table_change"] = (moved.norm() / start.norm()).item()
    return result | {"seconds": seconds}


def run_baseline(params: Params, split: Split, csv: Path, pictures: Path | None = None) -> dict:
    from pipeline.baseline import fit_baseline, predict_baseline
    from pipeline.evaluation import shuffle_words

    model = fit_baseline(split.train, params.baseline)
    shuffled = split.val.assign(**{TEXT: shuffle_words(list(split.val[TEXT]))})
    val = accuracy_of(list(split.val[LABEL]), list(predict_baseline(model, split.val)))
    return {
        "val_both": val,
        "val_drop": val
        - accuracy_of(list(split.val[LABEL]), list(predict_baseline(model, shuffled))),
        "train_both": accuracy_of(
            list(split.train[LABEL]), list(predict_baseline(model, split.train))
        ),
    }


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


@click.command()
@click.argument("csvs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--seeds", default="42,43,44", show_default=True)
@click.option(
    "--encodings",
    default="learned,sinusoidal,none",
    show_default=True,
    help="model.pos_encoding values ('' for none: the baseline alone).",
)
@click.option("--baseline", is_flag=True, help="Add the TF-IDF + LinearSVC baseline.")
@click.option(
    "--pictures",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each model run's positional-encoding pictures into a folder here.",
)
@click.option("--set", "changes", multiple=True, help="A param change for all runs (repeat).")
def main(
    csvs: tuple[Path, ...],
    text_column: str,
    label_column: str,
    seeds: str,
    encodings: str,
    baseline: bool,
    changes: tuple[str, ...],
    pictures: Path | None,
) -> None:
    """Train and score the model (one run per CSV, encoding and seed) and the baseline."""
    started = time.perf_counter()
    try:
        columns = {"data.text_column": text_column, "data.label_column": label_column}
        base = with_overrides(load_params(ROOT / "params.yaml"), columns | parse_set(changes))
        portable.apply(base.train.portable)  # before torch loads, as the train stage
        kinds = [("baseline", None)] if baseline else []
        kinds += [("model", e) for e in filter(None, encodings.split(","))]
        rows: dict[tuple[str, str], list[dict]] = {}
        splits: dict[tuple[Path, int], Split] = {}  # one per file and seed, for every run
        for csv in csvs:
            for kind, encoding in kinds:
                for seed in (int(s) for s in seeds.split(",")):
                    change = {"data.raw": str(csv), "split.seed": seed, "train.seed": seed}
                    if encoding:
                        change["model.pos_encoding"] = encoding
                    params = with_overrides(base, change)
                    if (csv, seed) not in splits:
                        splits[csv, seed] = split_of(params, csv)
                    runner = run_model if kind == "model" else run_baseline
                    result = runner(params, splits[csv, seed], csv, pictures)
                    name = kind if encoding is None else encoding
                    rows.setdefault((csv.name, name), []).append(result)
                    line = {"file": csv.name, "run": name, "seed": seed} | result
                    click.echo(json.dumps(line), err=False)
                    sys.stdout.flush()
    except PipelineError as err:
        raise click.ClickException(str(err)) from None
    keys = (
        "val_both",
        "val_transformer",
        "val_ngrams",
        "val_drop",
        "encoder_share",
        "table_change",
        "train_both",
        "train_transformer",
    )
    click.echo(
        f"\n--set {' '.join(changes) or '(none)'}; seeds {seeds}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    click.echo("| file | run | " + " | ".join(keys) + " | train s |")
    click.echo("|---" * (len(keys) + 3) + "|")
    for (file, name), results in rows.items():
        cells = [mean_sd([r[k] for r in results]) if k in results[0] else "-" for k in keys]
        secs = f"{statistics.mean(r.get('seconds', 0.0) for r in results):.0f}"
        click.echo(f"| {file} | {name} | " + " | ".join(cells) + f" | {secs} |")
    click.echo(f"\ntook {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
