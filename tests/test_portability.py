"""The same model bytes on other x86-64 CPUs, emulated on this one (issue 15): the train stage
applies pipeline.portable's settings before torch loads, so a CPU with other instruction sets
runs the same kernels."""

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import portable
from tests.conftest import ROOT, TINY, write_csv

KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
TORCH_STAGES = ("train", "evaluate", "predict")
# What this CPU's own choice of torch's kernels is.
NATURAL_ATEN = "avx512" if " avx512f " in Path("/proc/cpuinfo").read_text() + " " else "avx2"
# Library modules that do not load torch: a stage may import them before choosing kernels.
LIGHT = {
    f"pipeline.{name}"
    for name in ("cli", "config", "data", "errors", "evaluation", "files", "text", "vocab")
}


def test_apply_sets_defaults_and_leaves_a_users_choice(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as a stage, before torch loads
    for name in portable.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    portable.apply()
    assert os.environ["MKL_CBWR"] == "AVX2"
    assert os.environ["ATEN_CPU_CAPABILITY"] == portable.SETTINGS["ATEN_CPU_CAPABILITY"]


def test_apply_unpinned_leaves_the_kernels_to_the_libraries(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    for name in portable.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    portable.apply(pinned=False)
    assert not any(name in os.environ for name in portable.SETTINGS)


def test_apply_refuses_once_torch_is_loaded():
    import torch  # noqa: F401

    with pytest.raises(RuntimeError, match="before torch is imported"):
        portable.apply()


@pytest.mark.parametrize("stage", TORCH_STAGES)
def test_stage_chooses_the_kernels_before_torch_loads(stage):
    """Every torch stage calls portable.apply (which itself refuses to run after torch has
    loaded), and no import at the top of the script loads torch or a module that does."""
    source = (ROOT / "stages" / f"{stage}.py").read_text()
    assert "portable.apply(" in source
    top = [n for n in ast.parse(source).body if isinstance(n, ast.Import | ast.ImportFrom)]
    for node in top:
        names = [a.name for a in node.names]
        module = node.module if isinstance(node, ast.ImportFrom) else names[0]
        assert module.split(".")[0] not in ("torch", "dvclive")
        if module == "pipeline":
            assert names == ["portable"]
        elif module.startswith("pipeline."):
            assert module in LIGHT, f"stages/{stage}.py imports {module} at the top"


def stage(work: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py"), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Tiny training data, prepared by the stage commands, with tiny-model params."""
    work = tmp_path_factory.mktemp("portable")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    params["train"]["epochs"] = 3
    params["data"].update(text_column="text", label_column="label")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    write_csv(work / "raw.csv", ["Physics", "Chemistry", "Maths"], 20)
    stage(work, "clean", "--input", "raw.csv", "--output", "clean.csv", "--report", "c.json")
    stage(work, "split", "--input", "clean.csv", "--train", "train.csv", "--val", "val.csv",
          "--test", "test.csv", "--report", "s.json")  # fmt: skip
    stage(work, "vocab", "--train", "train.csv", "--output", "vocab.json")
    stage(work, "pretrained", "--output", "pretrained")
    return work


def train(work: Path, name: str, params: str = "params.yaml", **settings: str) -> str:
    """sha256 of the model the train stage command writes with the environment `settings`,
    after evaluating it there too (reports in `name`/eval)."""
    env = {**{k: v for k, v in os.environ.items() if k not in KNOBS}, **settings}
    out = work / name
    stage(work, "train", "--params", params, "--train", "train.csv", "--val", "val.csv",
          "--vocab", "vocab.json", "--pretrained", "pretrained", "--model", str(out / "model.pt"),
          "--live-dir", str(out / "live"), "--quiet", env=env)  # fmt: skip
    stage(work, "evaluate", "--params", params, "--model", str(out / "model.pt"),
          "--val", "val.csv", "--output", str(out / "eval"), env=env)  # fmt: skip
    return hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()


def metrics(work: Path, name: str) -> str:
    return (work / name / "eval" / "metrics.json").read_text()


@pytest.mark.e2e
def test_emulated_cpus_give_the_same_model_bytes(work):
    # This CPU as it is (train.portable is true: the stages pin the kernels themselves) ...
    here = train(work, "here")
    # ... and one with SSE4.1 at most: torch's kernels could be no better than 'default' there,
    # oneDNN no better than SSE4.1, and MKL on its compatible path as the settings ask.
    sse41 = dict(ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE", ONEDNN_MAX_CPU_ISA="SSE41")
    assert train(work, "sse41", **sse41) == here
    assert metrics(work, "sse41") == metrics(work, "here")
    # The control: without the settings an AVX2 machine gives other bytes (measured with
    # bench/portability.py), so the assertions above can fail.
    avx2 = dict(ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert train(work, "avx2", **avx2) != here


@pytest.mark.e2e
def test_train_portable_false_leaves_the_kernels_to_this_cpu(work):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["portable"] = False
    (work / "free.yaml").write_text(yaml.safe_dump(params))
    free = train(work, "free", params="free.yaml")
    # This machine's own kernels, set by hand, give what train.portable false gives, and
    # those are not the pinned kernels' bytes.
    natural = dict(ATEN_CPU_CAPABILITY=NATURAL_ATEN, MKL_CBWR="AUTO", ONEDNN_MAX_CPU_ISA="DEFAULT")
    assert train(work, "natural", params="free.yaml", **natural) == free
    assert free != train(work, "pinned")
