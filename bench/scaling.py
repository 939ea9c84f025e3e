"""How the time and peak memory of each stage grow with the number of rows.

    python bench/scaling.py                                   # 1,000, 10,000 and 100,000 rows
    python bench/scaling.py --sizes 1000,3000 --out /tmp/scaling-smoke   # a quick smoke run

For each size it resamples the CSVs of ../shared/data (concatenated, drawn with replacement,
seeded) into --out/<size>/raw.csv, never into the repository, and runs clean, split, vocab
and ONE training epoch on it with the library functions the stage scripts call. Each stage
runs in a Python process of its own (this script with --stage), so the peak resident memory
it reports (ru_maxrss) is that stage's alone; its seconds exclude interpreter start and
imports (bench/repro.sh measures those). It prints a Markdown table with the growth between
the two largest sizes, and saves --out/scaling.png (log-log) and --out/scaling.json.

A text drawn more than once gets its copy number appended ("copy2"): the split stage drops
repeated texts, which would otherwise leave about 4,000 rows whatever the size. At 100,000
rows the training epoch takes several minutes on a 2-core machine. Take the numbers you keep
on an idle machine.
"""

import importlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import click

from pipeline.cli import user_errors  # click only: light enough for every stage process

# Heavy modules are imported inside the functions that need them: each --stage process must
# load what its stage script loads and no more (torch alone adds about 280 MiB of RSS).

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_CSVS = (SHARED / "kaggle_subjects_1741.csv", SHARED / "mmlu_science_2265.csv")
STAGES = ("clean", "split", "vocab", "train")
# The library modules each stage uses, imported before its clock starts: seconds are work only.
MODULES = {
    "clean": ["pipeline.data"],
    "split": ["pipeline.data"],
    "vocab": ["pipeline.data", "pipeline.vocab"],
    "train": ["pipeline.data", "pipeline.vocab", "pipeline.training", "pipeline.checkpoint"],
}


def resample(csvs: list[Path], columns: tuple[str, str], size: int, seed: int, out: Path) -> None:
    """Write `size` rows drawn with replacement from all `csvs` to `out`, each text distinct."""
    import pandas as pd

    from pipeline.data import LABEL, TEXT, read_raw

    pool = pd.concat([read_raw(csv, *columns) for csv in csvs], ignore_index=True)
    rows = pool.sample(n=size, replace=True, random_state=seed).reset_index(drop=True)
    copy = rows.groupby(TEXT).cumcount() + 1
    rows[TEXT] = rows[TEXT].where(copy == 1, rows[TEXT] + " copy" + copy.astype(str))
    rows[[TEXT, LABEL]].to_csv(out, index=False)


def run_stage(stage: str, folder: Path) -> int:
    """Do one stage's work on the files in `folder`, as its stage script does; return the
    number of rows it took in."""
    from pipeline.config import load_params, with_overrides
    from pipeline.data import (
        LABEL,
        TEXT,
        clean_table,
        read_raw,
        read_table,
        split_table,
        write_table,
    )

    params = load_params(ROOT / "params.yaml")
    if stage == "clean":
        raw = read_raw(folder / "raw.csv", TEXT, LABEL)
        write_table(clean_table(raw, params.clean)[0], folder / "clean.csv")
        return len(raw)
    if stage == "split":
        table = read_table(folder / "clean.csv")
        train, val, _ = split_table(table, params.split.val_size, params.split.seed)
        write_table(train, folder / "train.csv")
        write_table(val, folder / "val.csv")
        return len(table)
    if stage == "vocab":
        from pipeline.vocab import build_vocab, save_vocab

        train = read_table(folder / "train.csv")
        vocab = build_vocab(train[TEXT], train[LABEL], params.vocab.min_freq, params.vocab.max_size)
        save_vocab(vocab, folder / "vocab.json")
        return len(train)
    from pipeline.checkpoint import save_checkpoint
    from pipeline.training import train_model
    from pipeline.vocab import load_vocab

    params = with_overrides(params, {"train.epochs": 1})
    train, val = read_table(folder / "train.csv"), read_table(folder / "val.csv")
    vocab = load_vocab(folder / "vocab.json")
    checkpoint = train_model(
        train, val, vocab, params.model, params.train, params.clean, lambda *_: None
    )
    save_checkpoint(folder / "model.pt", checkpoint)
    return len(train)


def rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_subprocess(stage: str, folder: Path, csvs: tuple[Path, ...]) -> dict:
    """Run one stage in a fresh Python process; its last stdout line is its JSON result. The
    CSVs go along: the child checks its options too, and the default ones may not exist."""
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--stage", stage, *(f"--csv={csv}" for csv in csvs)]
    done = subprocess.run([*command, str(folder)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:  # the child has said why on stderr
        raise SystemExit(done.returncode)
    return json.loads(done.stdout.splitlines()[-1])


def table(results: dict[int, dict[str, dict]]) -> str:
    """Seconds and peak RSS per stage and size, and their growth between the two largest sizes."""
    sizes = sorted(results)
    columns = [f"{n:,} rows: s | MiB" for n in sizes]
    if len(sizes) > 1:
        columns.append(f"growth {sizes[-2]:,} → {sizes[-1]:,}: s | MiB")
    lines = [
        "| stage | rows in | RSS after imports MiB | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|---|" * len(columns),
    ]
    for stage in STAGES:
        runs = [results[n][stage] for n in sizes]
        cells = [f"{r['seconds']:.2f} | {r['peak_rss_mib']:.0f}" for r in runs]
        if len(runs) > 1:
            last, before = runs[-1], runs[-2]
            cells.append(
                f"{last['seconds'] / before['seconds']:.1f}x "
                f"| {last['peak_rss_mib'] / before['peak_rss_mib']:.2f}x"
            )
        rows_in = " / ".join(f"{r['rows_in']:,}" for r in runs)
        imports = f"{runs[-1]['rss_start_mib']:.0f}"
        lines.append(f"| {stage} | {rows_in} | {imports} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[int, dict[str, dict]], path: Path) -> None:
    from matplotlib.figure import Figure

    sizes = sorted(results)
    figure = Figure(figsize=(10, 4), layout="constrained")
    seconds_ax, memory_ax = figure.subplots(1, 2)
    for stage in STAGES:
        seconds_ax.plot(sizes, [results[n][stage]["seconds"] for n in sizes], "o-", label=stage)
        memory_ax.plot(sizes, [results[n][stage]["peak_rss_mib"] for n in sizes], "o-")
    for ax, label in ((seconds_ax, "seconds (work only)"), (memory_ax, "peak RSS, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows in the resampled CSV")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    seconds_ax.legend()
    figure.suptitle("Stage cost against rows (train: one epoch)")
    figure.savefig(path, dpi=120)


@click.command()
@click.option("--sizes", default="1000,10000,100000", show_default=True, help="Row counts.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/scaling"),
    show_default=True,
    help="Folder for the resampled CSVs, stage outputs, the plot and the JSON.",
)
@click.option(
    "--csv",
    "csvs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_CSVS,
    help="CSVs to resample (repeat the option); both shared files by default.",
)
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the resampling.")
@click.option("--stage", type=click.Choice(STAGES), hidden=True)
@click.argument("folder", required=False, type=click.Path(path_type=Path))
def main(
    sizes: str,
    out: Path,
    csvs: tuple[Path, ...],
    text_column: str,
    label_column: str,
    seed: int,
    stage: str | None,
    folder: Path | None,
) -> None:
    """Print per-stage seconds and peak RSS for each size; save a log-log plot."""
    if stage is not None:  # a child process: one stage, one JSON line
        for module in MODULES[stage]:
            importlib.import_module(module)
        rss_start = rss_now_mib()
        start = time.perf_counter()
        with user_errors():
            rows_in = run_stage(stage, folder)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "seconds": seconds,
                    "peak_rss_mib": peak,
                    "rss_start_mib": rss_start,
                    "rows_in": rows_in,
                }
            )
        )
        return
    results: dict[int, dict[str, dict]] = {}
    for size in sorted(int(s) for s in sizes.split(",")):
        work = out / str(size)
        work.mkdir(parents=True, exist_ok=True)
        with user_errors():
            resample(list(csvs), (text_column, label_column), size, seed, work / "raw.csv")
        results[size] = {}
        for name in STAGES:
            print(f"{size:,} rows: {name} ...", file=sys.stderr)
            results[size][name] = in_subprocess(name, work, csvs)
    (out / "scaling.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "scaling.png")
    print(table(results))
    print(f"\nplot: {out / 'scaling.png'}; numbers: {out / 'scaling.json'}")


if __name__ == "__main__":
    main()
