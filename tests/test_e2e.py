"""End to end: the real `dvc` commands in a temporary git repository on a tiny CSV."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipeline.checkpoint import load_checkpoint
from pipeline.model import sinusoidal_table
from tests.projects import make_project, sh, trained_project

pytestmark = pytest.mark.e2e

REPORTS = (
    "reports/eval/metrics.json",
    "reports/train/metrics.json",
    "reports/baseline/metrics.json",
)


def read(project: Path, name: str) -> bytes:
    return (project / name).read_bytes()


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory) -> Path:
    """A project after `dvc repro`, with the results committed."""
    return trained_project(tmp_path_factory, "e2e")


def test_repro_writes_reports_and_leaves_nothing_to_do(repro_project):
    for name in (
        *REPORTS,
        "reports/eval/confusion.csv",
        "reports/eval/per_class.csv",
        "reports/eval/per_class_test.csv",
        "reports/eval/length.csv",
        "reports/eval/errors.csv",
        "reports/eval/label_issues.csv",
        "reports/eval/reliability.csv",
        "reports/eval/slices.csv",
        "reports/baseline/length.csv",
        "reports/baseline/errors.csv",
        "reports/clean.json",
        "reports/split.json",
        "models/model.pt",
        "reports/train/plots/metrics/val_loss.tsv",
    ):
        assert (repro_project / name).is_file(), name
    for png in ("pe_final", "pe_change", "pe_cosine"):
        assert read(repro_project, f"reports/eval/{png}.png").startswith(b"\x89PNG")
    assert "up to date" in sh(repro_project, "dvc", "status")
    assert sh(repro_project, "git", "status", "--porcelain") == ""
    # metrics.json: headline numbers only (each is a column of `dvc exp show`); each path of
    # the model is scored alone too (model.ngram_path is on by default), and the order probe
    # under `order`. Per class and per length: the CSVs.
    metrics = json.loads(read(repro_project, "reports/eval/metrics.json"))
    alone = ["accuracy_ngrams_only", "accuracy_transformer_only"]
    assert sorted(metrics) == [
        "accuracy", *alone, "calibration", "macro_f1", "order", "robustness"
    ]  # fmt: skip
    assert all(0.0 < metrics[name] <= 1.0 for name in alone)
    assert sorted(metrics["order"]) == ["accuracy_shuffled", "drop", "transformer_only_shuffled"]
    baseline = json.loads(read(repro_project, "reports/baseline/metrics.json"))
    assert {name: sorted(scores) for name, scores in baseline.items()} == {
        "baseline": ["accuracy", "macro_f1", "order", "robustness"]
    }
    assert sorted(baseline["baseline"]["order"]) == ["accuracy_shuffled", "drop"]
    per_class = pd.read_csv(repro_project / "reports/eval/per_class.csv")
    assert sorted(per_class["label"]) == ["Biology", "Chemistry", "Maths", "Physics"]


def test_exp_run_reruns_only_train_and_evaluate(repro_project):
    out = sh(repro_project, "dvc", "exp", "run", "-S", "train.lr=1e-3")
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    for stage in ("clean", "split", "vocab"):
        assert f"Running stage '{stage}'" not in out
    diff = json.loads(sh(repro_project, "dvc", "metrics", "diff", "--json"))
    assert diff["reports/train/metrics.json"]["val_loss"]["diff"] != 0
    shown = json.loads(sh(repro_project, "dvc", "exp", "show", "--json"))
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert experiments, shown
    learned_picture = read(repro_project, "reports/eval/pe_final.png")
    # A one-epoch run too: the warm-up, a share of the steps, never outlasts it.
    out = sh(
        repro_project,
        "dvc",
        "exp",
        "run",
        "-S",
        "model.pos_encoding=sinusoidal",
        "-S",
        "train.epochs=1",
    )
    assert "epoch   1/1" in out
    # The model that ran has the fixed table (not a trained copy of it) and its picture changed.
    model = load_checkpoint(repro_project / "models" / "model.pt").model
    table = model.position_table()
    assert torch.equal(table, sinusoidal_table(*table.shape))
    assert not any(p is table for p in model.parameters())
    assert read(repro_project, "reports/eval/pe_final.png") != learned_picture
    sh(repro_project, "git", "checkout", "-q", "--", ".")
    sh(repro_project, "dvc", "checkout", "-q")


def test_plots_show_writes_every_plot(repro_project, tmp_path):
    sh(repro_project, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    # Every plot dvc.yaml declares appears: a chart by its title, an image by its file name.
    for plot in yaml.safe_load(read(repro_project, "dvc.yaml"))["plots"]:
        if isinstance(plot, str):
            assert Path(plot).name in html, plot
        else:
            ((name, spec),) = plot.items()
            assert spec["title"] in html, name


def test_repro_force_is_byte_identical(repro_project):
    before = {name: read(repro_project, name) for name in REPORTS}
    sh(repro_project, "dvc", "repro", "-f")
    assert {name: read(repro_project, name) for name in REPORTS} == before
    assert sh(repro_project, "git", "status", "--porcelain") == ""


@pytest.mark.parametrize("labels", [["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]])
def test_other_csv_columns_and_classes(tmp_path, labels):
    project = make_project(tmp_path / "project", labels, text_column="body", label_column="topic")
    sh(project, "dvc", "repro")
    per_class = pd.read_csv(project / "reports/eval/per_class.csv")
    assert set(per_class["label"]) == set(labels)
    assert per_class["support"].tolist() == [round(24 * 0.3)] * len(labels)  # stratified


def test_push_clone_pull_then_nothing_to_rerun_and_predict_works(repro_project, tmp_path):
    sh(repro_project, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    sh(repro_project, "git", "commit", "-q", "-am", "remote")
    sh(repro_project, "dvc", "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repro_project), str(clone))
    sh(clone, "dvc", "pull")
    assert "up to date" in sh(clone, "dvc", "status")
    assert "Running stage" not in sh(clone, "dvc", "repro")
    texts = ["physics1 physics2 the", "maths3 maths4 of", "biology0 what"]
    predict = ("python", "stages/predict.py", "--format", "json", *texts)
    pulled = json.loads(sh(clone, *predict))
    assert [row["text"] for row in pulled] == texts
    assert {row["label"] for row in pulled} <= {"Physics", "Chemistry", "Maths", "Biology"}
    assert pulled == json.loads(sh(repro_project, *predict))  # the very same model
    # The model is an artifact: with a version registered (a git tag, as `gto register` makes
    # it), it is fetched by name from the repository and its remote and predicts the same.
    sh(repro_project, "git", "tag", "-a", "subject-classifier@v0.1.0", "-m", "first model")
    fetched = tmp_path / "fetched" / "model.pt"
    sh(
        tmp_path,
        "dvc",
        "artifacts",
        "get",
        str(repro_project),
        "subject-classifier",
        "-o",
        str(fetched),
    )
    assert fetched.read_bytes() == read(repro_project, "models/model.pt")
    predict_fetched = ("python", str(clone / "stages" / "predict.py"), "--model", str(fetched))
    assert json.loads(sh(tmp_path, *predict_fetched, "--format", "json", *texts)) == pulled
