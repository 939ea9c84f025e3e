"""The same model bytes on every x86-64 CPU (README: Reproducibility): the torch stages call
pipeline.portable.apply before torch loads, which pins the kernels of torch, MKL and oneDNN to
code paths that every x86-64 CPU runs alike.

One machine can show that each pin changes its bytes (so a missing pin would be seen) and that
train.portable false pins nothing. Only another CPU can show that the pinned bytes are the same
there: tests/fixtures/portable_tiny_run.json holds the hashes of a tiny pinned training run made
on one machine, and every machine that runs the suite (CI's, a colleague's) trains it again.

Regenerate the fixture only when a change to the code or to the locked versions is meant to
change the model's bytes (never to make another CPU's failure pass): from the repository root,
with the venv active, `python -m tests.test_portability`, then commit the fixture with the
change.
"""

import ast
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from pipeline import portable
from tests.conftest import ROOT, TINY, write_csv

# Spelled out rather than read from portable.SETTINGS: a pin dropped from there must still be
# cleared from the tests' environment, and so be seen missing.
KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
TORCH_STAGES = ("train", "evaluate", "predict")
# Library modules that do not load torch: a stage may import them before choosing kernels.
LIGHT = {
    f"pipeline.{name}"
    for name in (
        "cli",
        "config",
        "data",
        "early_stop",
        "errors",
        "evaluation",
        "files",
        "text",
        "vocab",
    )
}
FIXTURE = ROOT / "tests" / "fixtures" / "portable_tiny_run.json"
REGENERATE = "`python -m tests.test_portability` in the repository root, venv active"
OUTPUTS = ("model.pt", "live/metrics.json")
VERSIONS = ("torch", "numpy", "pandas")


def cpu() -> dict[str, str]:
    """This CPU's model name, vendor and the instruction sets the pins are about."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    fields = {}
    for line in lines:  # the first processor's fields; every core reports the same
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    return {
        "model": fields.get("model name", platform.processor() or "unknown"),
        "vendor": fields.get("vendor_id", "unknown"),
        "simd": " ".join(f for f in ("sse4_1", "avx2", "avx512f") if f in flags),
    }


CPU = cpu()
HAS_AVX2 = "avx2" in CPU["simd"].split()
needs_avx2 = pytest.mark.skipif(
    not HAS_AVX2, reason="without AVX2 this CPU's own kernels may be the pinned ones"
)


def code_digests() -> dict[str, str]:
    """sha256 of each file that decides the tiny run's bytes, besides torch and the CPU: the
    library, the stages it runs, the params and locked versions, the synthetic data."""
    files = [
        *sorted((ROOT / "src" / "pipeline").glob("*.py")),
        *(ROOT / "stages" / f"{name}.py" for name in ("clean", "split", "vocab", "train")),
        ROOT / "params.yaml",
        ROOT / "requirements.lock",
        ROOT / "tests" / "conftest.py",
        ROOT / "tests" / "test_portability.py",
    ]
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files
    }


def environment() -> dict[str, str]:
    """Where the bytes were made: CPU, Python and the versions that compute them."""
    return {
        "cpu": CPU["model"],
        "vendor": CPU["vendor"],
        "simd": CPU["simd"],
        "python": platform.python_version(),
        **{name: version(name) for name in VERSIONS},
    }


# --- pipeline.portable.apply, in this process ------------------------------------------------


def unset_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The knobs unset for this test and as they were after it. setenv first: monkeypatch
    restores only what it changed, and would leave set what portable.apply sets (the pins
    would then reach every process this test process spawns later, such as the two of
    tests/test_distributed.py, but not its own torch, loaded before)."""
    for name in KNOBS:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_apply_sets_defaults_and_leaves_a_users_choice(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as a stage, before torch loads
    unset_knobs(monkeypatch)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    portable.apply()
    assert os.environ["MKL_CBWR"] == "AVX2"
    assert os.environ["ATEN_CPU_CAPABILITY"] == "default"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "SSE41"


@pytest.mark.parametrize(
    "users",
    [
        {},
        {"MKL_CBWR": "AVX2"},
        {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    ],
    ids=["none-set", "one-set", "all-set"],
)
def test_apply_unpinned_leaves_the_environment_exactly_as_it_was(monkeypatch, users):
    """portable false: not even this CPU's 'natural' values are written, since a variable set
    to its natural value is not the same as one left unset (MKL_CBWR=AUTO on an AMD EPYC)."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    unset_knobs(monkeypatch)
    for name, value in users.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    portable.apply(pinned=False)
    assert dict(os.environ) == before


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


# --- the tiny training run, through the stage commands ---------------------------------------


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


def prepare(work: Path) -> Path:
    """Tiny training data (3 labels x 20 synthetic rows: 42 to train, 18 to validate) prepared
    by the stage commands, and tiny-model params for 3 epochs: pinned.yaml (train.portable
    true) and free.yaml (false). Small, yet each kernel pin changes its model's bytes."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    params["train"]["epochs"] = 3
    params["data"].update(text_column="text", label_column="label")
    for name, pinned in (("pinned", True), ("free", False)):
        params["train"]["portable"] = pinned
        (work / f"{name}.yaml").write_text(yaml.safe_dump(params))
    write_csv(work / "raw.csv", ["Physics", "Chemistry", "Maths"], 20)
    stage(work, "clean", "--params", "pinned.yaml", "--input", "raw.csv", "--output", "clean.csv",
          "--report", "c.json")  # fmt: skip
    stage(work, "split", "--params", "pinned.yaml", "--input", "clean.csv", "--train",
          "train.csv", "--val", "val.csv", "--test", "test.csv", "--report", "s.json")  # fmt: skip
    stage(work, "vocab", "--params", "pinned.yaml", "--train", "train.csv", "--output",
          "vocab.json")  # fmt: skip
    return work


def train(work: Path, name: str, params: str = "pinned.yaml", **knobs: str) -> dict[str, str]:
    """sha256 of each of OUTPUTS of the train stage command, run in an environment where the
    kernel variables are `knobs` only (none of the user's)."""
    env = {**{k: v for k, v in os.environ.items() if k not in KNOBS}, **knobs}
    out = work / name
    stage(work, "train", "--params", params, "--train", "train.csv", "--val", "val.csv",
          "--vocab", "vocab.json", "--model", str(out / "model.pt"), "--live-dir",
          str(out / "live"), "--quiet", env=env)  # fmt: skip
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return prepare(tmp_path_factory.mktemp("portable"))


@pytest.fixture(scope="module")
def pinned(work) -> dict[str, str]:
    """The tiny run as the stage pins it (train.portable true, no kernel variable set)."""
    return train(work, "pinned")


@pytest.fixture(scope="module")  # as `pinned`'s, so that a skip comes before its training
def committed() -> dict:
    """The fixture, or a skip where it cannot apply."""
    fixture = json.loads(FIXTURE.read_text())
    made, here = fixture["made_on"], environment()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the promise covers x86-64 CPUs only, this is {platform.machine()}")
    if "sse4_1" not in CPU["simd"].split():
        pytest.skip("the pins ask for SSE4.1, which this CPU lacks")
    # The lock's torch==2.13.0 is met by 2.13.0+cpu and by PyPI's plain 2.13.0: compare those.
    if here["torch"].split("+")[0] != made["torch"].split("+")[0]:
        pytest.skip(
            f"torch {here['torch']} is installed, the fixture was made with {made['torch']}; "
            "another torch may give other bytes (not promised): install requirements.lock"
        )
    return fixture


@pytest.mark.e2e
def test_pinned_tiny_run_gives_the_committed_bytes_on_this_cpu(committed, pinned):
    """The cross-CPU promise, tested for real: the fixture was made on one machine; this
    machine, whatever its CPU, must train the same bytes with the pinned kernels."""
    fixture, here = committed, environment()
    code = code_digests()
    changed = sorted(f for f in {*code, *fixture["code"]} if code.get(f) != fixture["code"].get(f))
    if changed:
        meaning = (
            f"These files changed since the fixture was made: {', '.join(changed)}. If that "
            f"change is meant to change the model's bytes, regenerate the fixture ({REGENERATE}) "
            "and commit it with the change; if not, the change broke reproducibility."
        )
        if here["cpu"] != fixture["made_on"]["cpu"]:
            meaning += (
                " This is not the fixture's CPU model either, so its kernels may be the cause "
                "too: run the test on the fixture's CPU model to tell the two apart."
            )
    else:
        meaning = (
            "Same code and same torch: the pinned kernels (pipeline.portable.SETTINGS) are not "
            "portable to this CPU, and README's promise of the same bytes on every x86-64 CPU "
            "fails here (unless numpy or pandas differ from requirements.lock; versions above). "
            "Do not regenerate the fixture to make this pass; bench/portability.py shows which "
            "kernel variables change the bytes."
        )
    assert pinned == fixture["outputs"], (
        f"The pinned tiny run gave other bytes on this CPU than on the fixture's.\n"
        f"  here:    {pinned}\n           {here}\n"
        f"  fixture: {fixture['outputs']}\n           {fixture['made_on']}\n{meaning}"
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("ATEN_CPU_CAPABILITY", "avx2"),
        ("ONEDNN_MAX_CPU_ISA", "AVX2"),
        pytest.param(
            "MKL_CBWR",
            "AVX2",
            marks=pytest.mark.skipif(
                CPU["vendor"] != "GenuineIntel",
                reason="MKL documents MKL_CBWR=AVX2 for Intel CPUs only (others get its AUTO "
                "branch, whose choice it does not document)",
            ),
        ),
    ],
)
@needs_avx2
def test_each_pin_changes_the_bytes_when_a_user_frees_it(work, pinned, knob, value):
    """A variable the user set wins over the pin (README); set to the AVX2 kernels, which this
    CPU runs and the pins avoid, each gives other bytes than the pinned run: so each pin
    matters here, and a missing one fails the fixture test above."""
    assert train(work, f"free-{knob}", **{knob: value}) != pinned, (
        f"{knob}={value} gave the pinned bytes: the stage overrode the user's variable, or "
        "this pin no longer changes anything in the tiny run"
    )


@pytest.mark.e2e
@needs_avx2
def test_train_portable_false_leaves_the_kernels_to_this_cpu(work, pinned):
    """train.portable false sets no kernel variable (see the apply tests above), so the
    libraries pick this CPU's SIMD kernels, which give other bytes than the pinned ones on any
    CPU with AVX2 (torch's own AVX2 kernels alone do, on Intel and AMD alike: the test above)."""
    assert train(work, "free", params="free.yaml") != pinned, (
        "train.portable false gave the pinned bytes: it pinned the kernels"
    )


def write_fixture() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outputs = train(prepare(Path(tmp)), "pinned")
    fixture = {
        "about": "sha256 of the tiny pinned training run of tests/test_portability.py "
        "(prepare, train), which every x86-64 CPU must reproduce. Regenerate only when a "
        f"change is meant to change the model's bytes: {REGENERATE}",
        "made_on": environment(),
        "outputs": outputs,
        "code": code_digests(),
    }
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(fixture, indent=2) + "\n")
    print(f"{FIXTURE.relative_to(ROOT)}: {outputs}")


if __name__ == "__main__":
    write_fixture()
