"""Data-parallel training: one epoch on 1 and 2 processes, side by side, and one all-reduce.

    python bench/distributed.py                                  # 10,000 and 100,000 rows
    python bench/distributed.py --sizes 3000 --processes 1,2     # a quick smoke run

For each size it resamples the CSVs of ../shared/data (as bench/scaling.py does, seeded, into
--out, never into the repository), runs clean, split and vocab with the library, then the real
train stage (`python stages/train.py`, so the launcher's start is included in the wall time)
for ONE epoch with `train.processes` set to each count, params.yaml otherwise, with bytecode
on and after one untimed warm-up (stage_env, warm_up). Seconds per epoch are the stage's own
(training and scoring both splits, as each progress line reports); rows/s are training rows
over those seconds. Then it times one all-reduce of a tensor as large
as the model's gradients between two gloo processes on this machine (median of --repeats).
"""

import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import yaml
from scaling import DEFAULT_CSVS, ROOT, resample, run_stage

EPOCH_LINE = re.compile(r"^epoch\s+1/1 .*\s([\d.]+)s$", re.MULTILINE)


def machine() -> str:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{datetime.date.today()}, {cpu}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, torch {torch.__version__}"
    )


def stage_env() -> dict[str, str]:
    """The environment of the stage processes, with bytecode on as on users' machines: where
    PYTHONDONTWRITEBYTECODE is set and no .pyc files exist yet (a `pip install --no-compile`),
    every process would compile torch's Python anew, about 12 s of each process's start."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_up(folder: Path, processes: int) -> None:
    """One untimed epoch on 300 of the rows, on `processes` processes, so that every module
    the timed runs import (launcher and process group included) is compiled already."""
    from pipeline.data import read_table, write_table

    warm = folder / "warm-up"
    warm.mkdir(exist_ok=True)
    for name in ("train.csv", "val.csv"):
        write_table(read_table(folder / name).head(300), warm / name)
    shutil.copy(folder / "vocab.json", warm / "vocab.json")
    train_epoch(warm, processes)


def train_epoch(folder: Path, processes: int) -> dict:
    """One epoch of the train stage on `processes` processes: stage seconds and wall seconds."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=1, processes=processes)
    params_path = folder / f"params-{processes}.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    command = [sys.executable, str(ROOT / "stages" / "train.py"), "--params", str(params_path)]
    command += ["--train", str(folder / "train.csv"), "--val", str(folder / "val.csv")]
    command += ["--vocab", str(folder / "vocab.json"), "--model", str(folder / "model.pt")]
    command += ["--live-dir", str(folder / f"live-{processes}")]
    start = time.perf_counter()
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env=stage_env()
    ).stdout
    wall = time.perf_counter() - start
    return {"epoch_s": float(EPOCH_LINE.search(out).group(1)), "wall_s": wall}


def gradient_elements(folder: Path) -> int:
    """Trainable parameters (so gradient elements) of the model the stage just wrote."""
    from pipeline.checkpoint import load_checkpoint

    model = load_checkpoint(folder / "model.pt").model
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _all_reduce_worker(rank: int, port: int, elements: int, repeats: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    tensor = torch.ones(elements)
    times = []
    for _ in range(repeats + 2):  # two warm-up rounds
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(tensor)
        times.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(json.dumps(times[2:]))
    dist.destroy_process_group()


def all_reduce_seconds(elements: int, repeats: int, folder: Path) -> float:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = folder / "all_reduce.json"
    mp.spawn(_all_reduce_worker, args=(port, elements, repeats, str(out)), nprocs=2)
    return statistics.median(json.loads(out.read_text()))


@click.command()
@click.option("--sizes", default="10000,100000", show_default=True, help="Rows to resample.")
@click.option("--processes", "counts", default="1,2", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/distributed-bench"),
    show_default=True,
)
@click.option(
    "--csv",
    "csvs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_CSVS,
)
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the resampling.")
@click.option("--repeats", default=20, show_default=True, help="All-reduce repetitions.")
def main(
    sizes: str,
    counts: str,
    out: Path,
    csvs: tuple[Path, ...],
    text_column: str,
    label_column: str,
    seed: int,
    repeats: int,
) -> None:
    """Print rows/s and seconds per epoch for each process count and size, the speed-up and
    its efficiency, and the time of one all-reduce of the model's gradients."""
    print(f"# python {' '.join(sys.argv)}\n# {machine()}")
    processes = [int(n) for n in counts.split(",")]
    results = {}
    for size in sorted(int(s) for s in sizes.split(",")):
        folder = out / str(size)
        folder.mkdir(parents=True, exist_ok=True)
        resample(list(csvs), (text_column, label_column), size, seed, folder / "raw.csv")
        for stage in ("clean", "split", "vocab"):
            run_stage(stage, folder)
        rows = sum(1 for _ in (folder / "train.csv").open()) - 1
        warm_up(folder, max(processes))
        results[size] = {"train_rows": rows}
        for n in processes:
            print(f"{size:,} rows, {n} process(es) ...", file=sys.stderr)
            results[size][n] = train_epoch(folder, n)
    biggest = out / str(max(results))
    elements = gradient_elements(biggest)
    seconds = all_reduce_seconds(elements, repeats, biggest)
    (out / "distributed.json").write_text(json.dumps(results, indent=1) + "\n")

    base = processes[0]
    print(
        "\n| rows (training rows) | processes | s/epoch | rows/s | speed-up | efficiency | "
        "wall s (start + epoch) |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, result in results.items():
        for n in processes:
            epoch, ref = result[n]["epoch_s"], result[base]["epoch_s"]
            speedup = ref / epoch
            print(
                f"| {size:,} ({result['train_rows']:,}) | {n} | {epoch:.1f} | "
                f"{result['train_rows'] / epoch:,.0f} | {speedup:.2f}x | "
                f"{speedup / (n / base):.0%} | {result[n]['wall_s']:.1f} |"
            )
    megabytes = elements * 4 / 1e6
    print(
        f"\nall-reduce of the gradients ({elements:,} float32 = {megabytes:.1f} MB), 2 gloo "
        f"processes on this machine: {seconds * 1e3:.1f} ms (median of {repeats}); "
        f"{2 * megabytes / seconds / 1e3:.2f} GB/s algorithm bandwidth (2 x size / time)"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
