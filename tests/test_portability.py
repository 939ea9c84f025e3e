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


def test_apply_sets_defaults_and_leaves_a_users_choice(monkeypatch):
    for name in portable.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    portable.apply()
    assert os.environ["MKL_CBWR"] == "AVX2"
    assert os.environ["ATEN_CPU_CAPABILITY"] == portable.SETTINGS["ATEN_CPU_CAPABILITY"]


@pytest.mark.parametrize("stage", TORCH_STAGES)
def test_stage_applies_the_settings_before_torch_loads(stage):
    """portable.apply() is called before any import of torch or of a library module (which may
    import torch), at the top level of the stage script."""
    body = ast.parse((ROOT / "stages" / f"{stage}.py").read_text()).body
    calls = [
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Expr) and ast.unparse(node.value) == "portable.apply()"
    ]
    assert calls, f"stages/{stage}.py does not call portable.apply()"
    for node in body[: calls[0]]:
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "torch" for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "torch"
            if node.module == "pipeline":
                assert [a.name for a in node.names] == ["portable"]
            else:
                assert not (node.module or "").startswith("pipeline.")


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


def train(work: Path, name: str, **settings: str) -> str:
    """sha256 of the model the train stage command writes with the environment `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    out = work / name
    stage(work, "train", "--train", "train.csv", "--val", "val.csv", "--vocab", "vocab.json",
          "--pretrained", "pretrained", "--model", str(out / "model.pt"),
          "--live-dir", str(out / "live"), "--quiet", env={**env, **settings})  # fmt: skip
    return hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()


@pytest.mark.e2e
def test_emulated_cpus_give_the_same_model_bytes(work):
    # This CPU as it is (the stage applies pipeline.portable's settings itself) ...
    here = train(work, "here")
    # ... and one with SSE4.1 at most: torch's kernels could be no better than 'default' there,
    # oneDNN no better than SSE4.1, and MKL on its compatible path as the settings ask.
    sse41 = dict(ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE", ONEDNN_MAX_CPU_ISA="SSE41")
    assert train(work, "sse41", **sse41) == here
    # The control: without the settings an AVX2 machine gives other bytes (measured with
    # bench/portability.py), so the assertion above can fail.
    avx2 = dict(ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert train(work, "avx2", **avx2) != here
