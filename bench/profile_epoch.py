"""Where the train stage's time goes: torch.profiler's top operators of one training epoch and
of the scoring pass that follows it (training and validation rows, eval mode), as Markdown.

    python bench/profile_epoch.py                                    # kaggle_subjects_1741.csv
    python bench/profile_epoch.py ../shared/data/mmlu_science_2265.csv --top 20
    python bench/profile_epoch.py --portable                         # the kernels the stages pin
    python bench/profile_epoch.py --set model.attention_dropout=0.1  # a param changed, as -S does

It runs what the train stage runs (pipeline.training with params.yaml, one thread): one epoch
unprofiled to warm up, then epoch 2 under the profiler, then the scoring. Per operator: its own
CPU time (children excluded), share of the wall time, calls. "outside torch operators" is the
wall time minus all operators' own time: Python, batch building, the optimizer's bookkeeping.
The profiler adds a few microseconds per call, so ops called tens of thousands of times look
somewhat dearer than they are; compare tables taken with this script, not with bench/speed.py.
--portable sets pipeline.portable's kernel settings before torch loads, as the stages do;
without it torch picks this CPU's fastest kernels, as bench/speed.py does.
"""

import sys

from pipeline import portable

if "--portable" in sys.argv:  # before torch loads: it reads these once
    portable.apply()

import datetime
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch
from accuracy import parse_set  # bench/accuracy.py
from speed import DEFAULT_CSV, bench_params, load_rows  # bench/speed.py
from torch.profiler import ProfilerActivity, profile

from pipeline.cli import user_errors
from pipeline.data import LABEL, TEXT
from pipeline.training import (
    all_logits,
    make_deterministic,
    new_optimizer,
    prepare,
    train_epoch,
)
from pipeline.vocab import build_vocab


def profiled(work: Callable[[], None], top: int) -> str:
    """Run `work` under the profiler; its top operators by own CPU time as a Markdown table."""
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    wall_us = 1e6 * (time.perf_counter() - start)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = [
        f"wall {wall_us / 1e6:.2f} s",
        "",
        "| operator | own CPU ms | share of wall | calls |",
        "|---|---|---|---|",
    ]
    for op in ops[:top]:
        share = 100 * op.self_cpu_time_total / wall_us
        lines.append(
            f"| {op.key} | {op.self_cpu_time_total / 1e3:.0f} | {share:.1f} % | {op.count} |"
        )
    outside = wall_us - sum(op.self_cpu_time_total for op in ops)
    lines.append(
        f"| outside torch operators | {outside / 1e3:.0f} | {100 * outside / wall_us:.1f} % | |"
    )
    return "\n".join(lines)


@click.command()
@click.argument(
    "csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_CSV
)
@click.option("--columns", nargs=2, default=("eng", "Subject"), show_default=True)
@click.option("--set", "changes", multiple=True, help="A param as key=value, like dvc exp run -S.")
@click.option("--top", default=15, show_default=True, help="Operators per table.")
@click.option(
    "--portable", "pinned", is_flag=True, help="Pin the kernels as the stages do (read above)."
)
def main(
    csv: Path, columns: tuple[str, str], changes: tuple[str, ...], top: int, pinned: bool
) -> None:
    with user_errors():
        run(csv, columns, parse_set(changes), top)


def run(csv: Path, columns: tuple[str, str], changes: dict, top: int) -> None:
    params = bench_params(columns, 2, "cpu", {"train.threads": 1, **changes})
    _, train_table, val_table = load_rows(csv, params, 0)
    vocab = build_vocab(
        train_table[TEXT], train_table[LABEL], params.vocab.min_freq, params.vocab.max_size
    )
    make_deterministic(params.train.seed, params.train.threads)
    ready = prepare(train_table, val_table, vocab, params.model)
    model, train, val = ready.model, ready.train, ready.val
    device = torch.device("cpu")
    optimizer, schedule = new_optimizer(model, params.train, len(train))
    shuffle = torch.Generator().manual_seed(params.train.seed)

    def epoch() -> None:
        train_epoch(model, train, params.train, shuffle, optimizer, schedule, device)

    def scoring() -> None:
        all_logits(model, train, params.train.batch_size, device)
        all_logits(model, val, params.train.batch_size, device)

    epoch()  # warm-up: the first epoch also sizes the allocator's caches
    kernels = {name: os.environ.get(name, "(unset)") for name in portable.SETTINGS}
    print(f"# bench/profile_epoch.py, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(
        f"{csv.name}: {len(train)} training rows, {len(val)} validation rows; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}; kernels {kernels}"
    )
    print(f"command: python {' '.join(sys.argv)}\n")
    print("## One training epoch (epoch 2)\n")
    print(profiled(epoch, top))
    print("\n## Scoring after the epoch (training and validation rows, eval mode)\n")
    print(profiled(scoring, top))


if __name__ == "__main__":
    main()
