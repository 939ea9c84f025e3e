"""Training and prediction speed of the pipeline against the original recipe, side by side.

    python bench/speed.py                                  # kaggle_subjects_1741.csv, 2 epochs
    python bench/speed.py ../shared/data/mmlu_science_2265.csv --epochs 3
    python bench/speed.py --rows 300 --epochs 1            # a quick smoke run
    python bench/speed.py --device cuda                    # on a machine with a GPU

At the same model size (d_model 64, 8 heads, 2 layers) it trains, for --epochs epochs:
the pipeline's loop (pipeline.training.train_model with params.yaml) on 1 thread; the same
with dim_feedforward 2048 (PyTorch's default, the original's), which separates the
feed-forward's cost from that of padding and masking; the same on 2 threads; and the original
recipe (bench/reference.py) on 1 thread. Then it times the predict path with the model the
first variant saved: load_checkpoint, then pipeline.predict.predict_texts on raw texts, one
text per call and as many texts as there are validation rows in one call, on torch's default
threads (what stages/predict.py gets) and on one thread.

Each variant runs in a process of its own (this script with --variant), so the peak resident
memory it reports (ru_maxrss of that process) is its own. An epoch is one training pass plus
one validation pass, as in the train stage; s/epoch is the mean over epochs 2..N, since the
first one also warms up the allocator. The output is a Markdown table. Numbers move with
other load on the machine: take the ones you keep on an idle machine.
"""

import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import pandas as pd
import torch
from reference import train_reference  # bench/reference.py, beside this file

from pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pipeline.cli import user_errors
from pipeline.config import Params, load_params, with_overrides
from pipeline.data import LABEL, TEXT, clean_table, read_raw, split_table
from pipeline.predict import predict_texts
from pipeline.text import clean_text
from pipeline.training import resolve_device, train_model
from pipeline.vocab import build_vocab

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "kaggle_subjects_1741.csv"

# name -> (what the table calls it, train param changes); "reference" and "predict" are special.
TRAINING = {
    "pipeline": ("pipeline loop, params.yaml", {"train.threads": 1}),
    "pipeline-ff2048": (
        "pipeline loop, dim_feedforward 2048",
        {"train.threads": 1, "model.dim_feedforward": 2048},
    ),
    "pipeline-2-threads": ("pipeline loop, 2 threads", {"train.threads": 2}),
    "reference": ("original recipe (bench/reference.py)", {"train.threads": 1}),
}
VARIANTS = [*TRAINING, "predict"]


def mib(kib: float) -> float:
    return kib / 1024


def rss_now_mib() -> float:
    """Current resident memory of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return mib(int(line.split()[1]))
    return float("nan")


def bench_params(columns: tuple[str, str], epochs: int, device: str, changes: dict) -> Params:
    """params.yaml with the CSV's columns, the epochs, the device and a variant's changes."""
    base = load_params(ROOT / "params.yaml")
    return with_overrides(
        base,
        {
            "data.text_column": columns[0],
            "data.label_column": columns[1],
            "train.epochs": epochs,
            "train.device": device,
            **changes,
        },
    )


def load_rows(
    csv: Path, params: Params, rows: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The raw rows (a seeded sample of `rows` if > 0), and the cleaned train and validation
    rows, exactly as the clean and split stages make them."""
    raw = read_raw(csv, params.data.text_column, params.data.label_column)
    if 0 < rows < len(raw):
        raw = raw.sample(n=rows, random_state=0).reset_index(drop=True)
    table, _ = clean_table(raw, params.clean)
    train, val, _ = split_table(table, params.split.val_size, params.split.seed)
    return raw, train, val


def recorder(seconds: list[float]) -> Callable[[int, dict[str, float]], None]:
    """An on_epoch callback that keeps each epoch's seconds and shows progress on stderr."""

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        seconds.append(metrics["seconds"])
        print(f"  epoch {epoch}: {metrics['seconds']:.1f}s", file=sys.stderr)

    return on_epoch


def train_pipeline(
    params: Params, train: pd.DataFrame, val: pd.DataFrame, save_to: Path | None
) -> list[float]:
    """Seconds of each epoch of the pipeline's own loop, as the train stage runs it."""
    vocab = build_vocab(train[TEXT], train[LABEL], params.vocab.min_freq, params.vocab.max_size)
    seconds: list[float] = []
    checkpoint = train_model(
        train, val, vocab, params.model, params.train, params.clean, recorder(seconds)
    )
    if save_to is not None:
        save_checkpoint(save_to, checkpoint)
    return seconds


def train_original(params: Params, train: pd.DataFrame, val: pd.DataFrame) -> list[float]:
    """Seconds of each epoch of the original recipe on the same rows."""
    seconds: list[float] = []
    train_reference(
        list(train[TEXT]),
        list(train[LABEL]),
        list(val[TEXT]),
        list(val[LABEL]),
        epochs=params.train.epochs,
        seed=params.train.seed,
        device=str(resolve_device(params.train.device)),
        threads=params.train.threads,
        on_epoch=recorder(seconds),
    )
    return seconds


def time_predict(checkpoint: Checkpoint, texts: list[str], calls: int) -> dict:
    """Per-text latency (`calls` calls of one text) and batch throughput of predict_texts."""
    for text in texts[:5]:  # warm-up
        predict_texts(checkpoint, [text])
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        predict_texts(checkpoint, [texts[i % len(texts)]])
        latencies.append(time.perf_counter() - start)
    batch_seconds = []
    for _ in range(3):
        start = time.perf_counter()
        predict_texts(checkpoint, texts)
        batch_seconds.append(time.perf_counter() - start)
    return {
        "latency_mean_ms": 1000 * statistics.mean(latencies),
        "latency_median_ms": 1000 * statistics.median(latencies),
        "batch_texts_per_s": len(texts) / statistics.mean(batch_seconds),
    }


def run_predict(params: Params, raw: pd.DataFrame, n_texts: int, calls: int, path: Path) -> dict:
    """Load the checkpoint the `pipeline` variant saved and time predict_texts on raw texts,
    with torch's default threads (as stages/predict.py runs) and with one thread."""
    start = time.perf_counter()
    checkpoint = load_checkpoint(path)
    result = {"load_s": time.perf_counter() - start, "calls": calls}
    # Raw texts, as a user passes them; predict_texts refuses those that clean to nothing.
    texts = [t for t in raw[TEXT] if clean_text(t, params.clean)][:n_texts]
    result["batch_texts"] = len(texts)
    default_threads = torch.get_num_threads()
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        result[f"threads_{threads}"] = time_predict(checkpoint, texts, calls)
    result["default_threads"] = default_threads
    return result


def run_variant(
    variant: str,
    csv: Path,
    columns: tuple[str, str],
    rows: int,
    epochs: int,
    device: str,
    calls: int,
    checkpoint: Path,
) -> dict:
    """Do one variant's work in this process and return its numbers."""
    params = bench_params(columns, epochs, device, TRAINING.get(variant, ("", {}))[1])
    raw, train, val = load_rows(csv, params, rows)
    result = {"rss_start_mib": rss_now_mib(), "train_rows": len(train), "val_rows": len(val)}
    if variant == "predict":
        result |= run_predict(params, raw, len(val), calls, checkpoint)
    elif variant == "reference":
        result["epoch_seconds"] = train_original(params, train, val)
        result["dim_feedforward"] = 2048  # PyTorch's default, which the original kept
    else:
        save_to = checkpoint if variant == "pipeline" else None
        result["epoch_seconds"] = train_pipeline(params, train, val, save_to)
        result["dim_feedforward"] = params.model.dim_feedforward
    result["threads"] = torch.get_num_threads()
    result["peak_rss_mib"] = mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if torch.cuda.is_available() and resolve_device(device).type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def in_subprocess(variant: str, argv: list[str]) -> dict:
    """Run one variant in a fresh Python process; its last stdout line is its JSON result."""
    print(f"{variant} ...", file=sys.stderr)
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--variant", variant]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])


def steady_epoch_seconds(seconds: list[float]) -> float:
    return statistics.mean(seconds[1:] if len(seconds) > 1 else seconds)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def header(csv: Path, device: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"date {datetime.datetime.now().isoformat(timespec='seconds')}; machine: "
        f"{os.cpu_count()} CPUs ({cpu_model()}){gpu}, load average {load} at start; "
        f"torch {torch.__version__}, Python {platform.python_version()}; device {device}\n"
        f"command: `python {shlex.join(['bench/speed.py', *sys.argv[1:]])}`; data: {csv}"
    )


def training_table(results: dict[str, dict]) -> str:
    ref = results["reference"]
    ref_speed = ref["train_rows"] / steady_epoch_seconds(ref["epoch_seconds"])
    gpu = "peak_cuda_mib" in ref
    lines = [
        "| loop | d_ff | threads | epoch 1 s | s/epoch | rows/s | rows/s ÷ reference "
        "| RSS at start MiB | peak RSS MiB | peak RSS ÷ reference |"
        + (" peak CUDA MiB |" if gpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for name, (title, _) in TRAINING.items():
        r = results[name]
        per_epoch = steady_epoch_seconds(r["epoch_seconds"])
        speed = r["train_rows"] / per_epoch
        lines.append(
            f"| {title} | {r['dim_feedforward']} | {r['threads']} | {r['epoch_seconds'][0]:.1f} "
            f"| {per_epoch:.1f} | {speed:.0f} | {speed / ref_speed:.2f} "
            f"| {r['rss_start_mib']:.0f} | {r['peak_rss_mib']:.0f} "
            f"| {r['peak_rss_mib'] / ref['peak_rss_mib']:.2f} |"
            + (f" {r['peak_cuda_mib']:.0f} |" if gpu else "")
        )
    return "\n".join(lines)


def predict_table(r: dict) -> str:
    lines = [
        "| predict path (pipeline.predict.predict_texts, CPU) | threads | value |",
        "|---|---|---|",
        f"| load_checkpoint | | {1000 * r['load_s']:.0f} ms |",
    ]
    for threads in sorted({r["default_threads"], 1}, reverse=True):
        t = r[f"threads_{threads}"]
        note = " (torch default)" if threads == r["default_threads"] else ""
        lines += [
            f"| one text per call, {r['calls']} calls | {threads}{note} "
            f"| mean {t['latency_mean_ms']:.2f} ms, median {t['latency_median_ms']:.2f} ms |",
            f"| {r['batch_texts']} texts in one call | {threads}{note} "
            f"| {t['batch_texts_per_s']:.0f} texts/s |",
        ]
    lines.append(f"| peak RSS (load + predict) | | {r['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)


@click.command()
@click.argument(
    "csv",
    default=DEFAULT_CSV,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--text-column", default="eng", show_default=True)
@click.option("--label-column", default="Subject", show_default=True)
@click.option("--epochs", default=2, show_default=True, help="Epochs per training variant.")
@click.option("--rows", default=0, help="Use a seeded sample of this many rows (0: all).")
@click.option("--calls", default=100, show_default=True, help="Single-text predict calls.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--variant", type=click.Choice(VARIANTS), hidden=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), hidden=True)
def main(
    csv: Path,
    text_column: str,
    label_column: str,
    epochs: int,
    rows: int,
    calls: int,
    device: str,
    variant: str | None,
    checkpoint: Path | None,
) -> None:
    """Print a Markdown table of training and prediction speed and memory."""
    if variant is not None:  # a child process: one variant, one JSON line
        columns = (text_column, label_column)
        with user_errors():
            result = run_variant(variant, csv, columns, rows, epochs, device, calls, checkpoint)
        print(json.dumps(result))
        return
    argv = [str(csv), "--text-column", text_column, "--label-column", label_column]
    argv += ["--epochs", str(epochs), "--rows", str(rows), "--calls", str(calls)]
    argv += ["--device", device]
    with user_errors():
        started = header(csv, str(resolve_device(device)))
    # The `pipeline` variant saves its model here for the `predict` variant to load.
    with tempfile.TemporaryDirectory() as tmp:
        argv += ["--checkpoint", str(Path(tmp) / "model.pt")]
        results = {name: in_subprocess(name, argv) for name in VARIANTS}
    ref = results["reference"]
    print(f"\n{started}\n")
    print(
        f"Training: {ref['train_rows']} train / {ref['val_rows']} validation rows, {epochs} "
        "epochs; an epoch is one training pass plus one validation pass.\n"
    )
    print(training_table(results))
    print()
    print(predict_table(results["predict"]))


if __name__ == "__main__":
    main()
