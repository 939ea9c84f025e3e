"""Does training give the same model bytes on other CPUs? Emulate them on this one (issue 15).

Prepares the bundled sample once (clean, split, vocab and pretrained stage commands, default
params.yaml, in a temporary directory: nothing is written into the repository), then runs the
train stage command once per setting below, each in a fresh process whose environment is set
before torch loads, and prints: setting, val_loss, val_accuracy, sha256 of models/model.pt,
seconds.

The knobs that emulate another x86-64 CPU on this one:
- ATEN_CPU_CAPABILITY: which of PyTorch's own vectorised kernels run (default = no SIMD,
  avx2, avx512), as a CPU without the higher instruction sets would pick;
- MKL_CBWR: MKL's code path (COMPATIBLE, AVX2, AVX512, AUTO = what this CPU would pick);
- ONEDNN_MAX_CPU_ISA: the highest instruction set oneDNN may use (SSE41, AVX2, DEFAULT);
- the thread count (train.threads), given with -S train.threads=2 style overrides.

The train stage applies pipeline.portable's settings (train.portable is true in params.yaml)
with os.environ.setdefault: a variable a row sets wins, the others take pipeline.portable's
values. Row 'natural' sets all three to
what this CPU picks by itself (the stage as it ran before those settings), row 'portable' to
pipeline.portable's values; compare their seconds for the settings' cost (--repeat 3 takes the
fastest of three runs of each).

    python bench/portability.py                # default params (30 epochs on the sample)
    python bench/portability.py --epochs 3     # quicker
    python bench/portability.py --only base,aten=avx2
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def has_avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text() + " "
    except OSError:
        return False


def settings() -> dict[str, dict[str, str]]:
    """name -> (environment, threads); threads None keeps params.yaml's."""
    top = "avx512" if has_avx512() else "avx2"
    natural = {"ATEN_CPU_CAPABILITY": top, "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "DEFAULT"}
    portable = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
    portable["ONEDNN_MAX_CPU_ISA"] = "SSE41"
    rows: dict[str, dict[str, str]] = {"base": {}, "natural": natural, "portable": portable}
    rows["portable+threads=2"] = {**portable, "threads": "2"}
    capabilities = ["default", "avx2"] + (["avx512"] if has_avx512() else [])
    for cap in capabilities:
        rows[f"aten={cap}"] = {"ATEN_CPU_CAPABILITY": cap}
    for mode in ("COMPATIBLE", "AVX2", "AVX512", "AUTO"):
        rows[f"mkl={mode}"] = {"MKL_CBWR": mode}
    for isa in ("SSE41", "AVX2", "DEFAULT"):
        rows[f"onednn={isa}"] = {"ONEDNN_MAX_CPU_ISA": isa}
    rows["threads=2"] = {"threads": "2"}
    # Combinations: an AVX2-only machine as all three libraries would see it, and the same
    # with MKL pinned or ATen pinned, to see which pin is enough.
    avx2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    rows["avx2-machine"] = avx2
    rows["aten=default+mkl=AVX2"] = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2"}
    rows["aten=default+mkl=AUTO"] = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}
    rows["aten=default+mkl=COMPATIBLE"] = {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
    }
    rows["aten=avx2+mkl=COMPATIBLE"] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
    rows["aten=default+onednn=AVX2"] = {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }
    rows["aten=default+threads=2"] = {"ATEN_CPU_CAPABILITY": "default", "threads": "2"}
    rows["avx2-machine+threads=2"] = {**avx2, "threads": "2"}
    return rows


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")


def prepare(work: Path, epochs: int | None) -> None:
    # A snapshot of the code, so that edits to the work tree during a long run change nothing.
    for part in ("stages", "src"):
        shutil.copytree(ROOT / part, work / "code" / part, ignore=shutil.ignore_patterns("*.pyc"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if epochs is not None:
        params["train"]["epochs"] = epochs
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    py = sys.executable
    raw = ROOT / params["data"]["raw"]
    run([py, str(work / "code/stages/clean.py"), "--input", str(raw), "--output", "clean.csv",
         "--report", "clean.json"], work)  # fmt: skip
    run([py, str(work / "code/stages/split.py"), "--input", "clean.csv", "--train", "train.csv",
         "--val", "val.csv", "--test", "test.csv", "--report", "split.json"], work)  # fmt: skip
    run([py, str(work / "code/stages/vocab.py"), "--train", "train.csv", "--output", "vocab.json"],
        work)  # fmt: skip
    run([py, str(work / "code/stages/pretrained.py"), "--output", "pretrained"], work)


def train(work: Path, name: str, setting: dict[str, str]) -> tuple[float, float, str, float]:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    env.update({k: v for k, v in setting.items() if k != "threads"})
    params = work / "params.yaml"
    if "threads" in setting:
        data = yaml.safe_load(params.read_text())
        data["train"]["threads"] = int(setting["threads"])
        params = work / f"params-{len(list(work.glob('params-*')))}.yaml"
        params.write_text(yaml.safe_dump(data))
    out = work / "runs" / name.replace("=", "_").replace("+", "_")
    start = time.perf_counter()
    run([sys.executable, str(work / "code/stages/train.py"), "--params", str(params),
         "--train", "train.csv", "--val", "val.csv", "--vocab", "vocab.json",
         "--pretrained", "pretrained", "--model", str(out / "model.pt"),
         "--live-dir", str(out / "live"), "--quiet"], work, env)  # fmt: skip
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "live" / "metrics.json").read_text())
    digest = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    return metrics["val_loss"], metrics["val_accuracy"], digest, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="override train.epochs (default: params)")
    parser.add_argument("--only", help="comma-separated setting names")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (seconds: min)")
    args = parser.parse_args()
    rows = settings()
    names = args.only.split(",") if args.only else list(rows)
    for name in names:
        if name not in rows:
            # Ad-hoc: KEY=VALUE[+KEY=VALUE...] of environment variables (threads=N too).
            rows[name] = dict(part.split("=", 1) for part in name.split("+"))
    with tempfile.TemporaryDirectory(prefix="portability-") as tmp:
        work = Path(tmp)
        prepare(work, args.epochs)
        print(f"{'setting':<30} {'val_loss':>9} {'val_acc':>8}  {'model.pt sha256':<16}  seconds")
        for name in names:
            results = [train(work, name, rows[name]) for _ in range(args.repeat)]
            loss, acc, digest, _ = results[0]
            same = "" if len({r[2] for r in results}) == 1 else " (runs differ!)"
            seconds = min(r[3] for r in results)
            print(f"{name:<30} {loss:>9.6f} {acc:>8.6f}  {digest[:16]}  {seconds:7.1f}{same}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
