"""Before -> after for a change, side by side in one run: training speed and validation
accuracy of the pipeline's training loop at several commits (and params), over seeds and files.

    python bench/compare.py d2d1c27 HEAD                        # 2 commits, default data
    python bench/compare.py HEAD HEAD:model.attention_dropout=0.0 --seeds 42,43,44
    python bench/compare.py A B C --epochs 3 --seeds 42         # speed alone, quickly

A variant is a git commit, optionally followed by `:key=value,key=value` param changes (as
`dvc exp run -S` takes them). Each variant's code is taken from git (`git archive`, into a
temporary directory) and run in a process of its own with that tree's `src/` first on the
path, with that commit's params.yaml, the shared CSV's columns and the variant's changes. It
trains what the train stage trains (pipeline.training.train_model, one thread) on the split
of each file the clean and split stages make (split.seed is kept; train.seed takes each
--seeds value) and reports, per variant: rows/s (training rows / mean seconds of epochs
2..N, where an epoch is the training pass and the scoring that follows it, as the stage's
progress line counts it), the final epoch's val_accuracy and val_loss, as mean and standard
deviation over seeds. Runs go seed by seed, file by file, every variant in turn, so that other
load on the machine falls on all variants alike. Kernels: what this CPU picks (as
bench/speed.py), or pipeline.portable's with --portable.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import yaml

from pipeline.portable import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = ("kaggle_subjects_1741.csv", "mmlu_science_2265.csv")

# Run in the variant's own tree: only functions that every compared commit has.
WORKER = """
import json, sys, yaml
from pipeline.config import load_params, with_overrides
from pipeline.data import LABEL, TEXT, clean_table, read_raw, split_table
from pipeline.training import train_model
from pipeline.vocab import build_vocab

csv, params_file, changes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
params = with_overrides(load_params(params_file), changes)
raw = read_raw(csv, params.data.text_column, params.data.label_column)
table, _ = clean_table(raw, params.clean)
train, val = split_table(table, params.split.val_size, params.split.seed)[:2]
vocab = build_vocab(train[TEXT], train[LABEL], params.vocab.min_freq, params.vocab.max_size)
epochs = []
train_model(train, val, vocab, params.model, params.train, params.clean,
            lambda epoch, metrics: epochs.append(metrics))
print(json.dumps({"train_rows": len(train), "epochs": epochs}))
"""


def parse_variant(spec: str) -> tuple[str, dict[str, object]]:
    ref, _, sets = spec.partition(":")
    changes = {}
    for change in filter(None, sets.split(",")):
        key, sep, value = change.partition("=")
        if not sep:
            raise click.BadParameter(f"{change!r} in {spec!r} is not key=value")
        changes[key] = yaml.safe_load(value)
    return ref, changes


def export(ref: str, into: Path) -> Path:
    """The commit's tree, from git, in a directory of its own."""
    tree = into / ref.replace("/", "_")
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True)
        if archive.returncode != 0:
            sys.exit(f"git archive {ref}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_one(tree: Path, csv: Path, changes: dict, portable: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["PYTHONPATH"] = str(tree / "src")
    if portable:
        env.update(SETTINGS)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(csv), str(tree / "params.yaml"), json.dumps(changes)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"{tree.name} on {csv.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


@click.command()
@click.argument("variants", nargs=-1, required=True)
@click.option("--files", default=",".join(FILES), show_default=True, help="CSVs in ../shared/data.")
@click.option("--columns", nargs=2, default=("eng", "Subject"), show_default=True)
@click.option("--seeds", default="42,43,44", show_default=True, help="train.seed values.")
@click.option("--epochs", type=int, default=None, help="train.epochs (default: params.yaml's).")
@click.option("--portable", is_flag=True, help="Pin the kernels as the stages do.")
@click.option(
    "--jobs", default=1, show_default=True, help="Runs at once (>1: for accuracy, not speed)."
)
def main(
    variants: tuple[str, ...],
    files: str,
    columns: tuple[str, str],
    seeds: str,
    epochs: int | None,
    portable: bool,
    jobs: int,
) -> None:
    parsed = [parse_variant(v) for v in variants]
    base = {"data.text_column": columns[0], "data.label_column": columns[1], "train.threads": 1}
    if epochs is not None:
        base["train.epochs"] = epochs
    runs = [
        (spec, ref, changes, name, int(seed))
        for seed in seeds.split(",")
        for name in files.split(",")
        for spec, (ref, changes) in zip(variants, parsed, strict=True)
    ]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {ref: export(ref, Path(tmp)) for ref, _ in parsed}

        def one(spec: str, ref: str, changes: dict, name: str, seed: int) -> dict:
            changes = {**base, "train.seed": seed, **changes}
            run = run_one(trees[ref], DATA / name, changes, portable)
            last = run["epochs"][-1]
            seconds = [e["seconds"] for e in run["epochs"][1:] or run["epochs"]]
            rows_per_s = run["train_rows"] / statistics.mean(seconds)
            print(
                f"{spec} {name} seed {seed}: {rows_per_s:.0f} rows/s, "
                f"val_accuracy {last['val_accuracy']:.4f}",
                file=sys.stderr,
            )
            return {**last, "rows_per_s": rows_per_s}

        with ThreadPoolExecutor(jobs) as pool:
            done = list(pool.map(lambda run: one(*run), runs))
    for (spec, _, _, name, _), entry in zip(runs, done, strict=True):
        results.setdefault((spec, name), []).append(entry)
    print(f"# bench/compare.py: python {' '.join(sys.argv)}")
    print(
        f"load average {os.getloadavg()[0]:.2f} at the end; kernels "
        f"{'pinned' if portable else 'free'}; {jobs} run(s) at once\n"
    )
    print("| variant | file | rows/s | val_accuracy | val_loss |")
    print("|---|---|---|---|---|")
    for (spec, name), runs in results.items():
        print(
            f"| {spec} | {name} | {statistics.mean(r['rows_per_s'] for r in runs):.0f} "
            f"| {mean_sd([r['val_accuracy'] for r in runs])} "
            f"| {mean_sd([r['val_loss'] for r in runs])} |"
        )


if __name__ == "__main__":
    main()
