"""stages/compare.py and pipeline.compare: seed-averaged comparisons of DVC experiments, on a
recorded `dvc exp show --json` structure built here (tests/test_sharing.py: on a real queue)."""

import csv
import hashlib
import io
import json
import re
import statistics

import pytest

from pipeline.compare import compare, plot, to_csv, to_json, to_markdown
from pipeline.errors import PipelineError
from tests.test_stages import assert_one_sentence, run_stage

EVAL, BASELINE, TRAIN = (
    "reports/eval/metrics.json",
    "reports/baseline/metrics.json",
    "reports/train/metrics.json",
)
PARAMS = {
    "split": {"seed": 42},
    "model": {"pos_encoding": "learned", "ngram_path": True},
    "train": {"seed": 42, "lr": 0.002},
}
CODE = {"stages/train.py": "c0de"}


def data(
    rev: str, params: dict | None = None, accuracy: float = 0.8, code: dict | None = None, **eval_
) -> dict:
    """One row's `data` as DVC 3.67 writes it: params and metrics by file, nested as in the
    files; deps and outs by path with their hashes (the model's differs with its results)."""
    merged = {section: dict(values) for section, values in PARAMS.items()}
    for key, value in (params or {}).items():
        section, name = key.split(".")
        merged[section][name] = value
    scores = {"accuracy": accuracy, "macro_f1": accuracy - 0.01, **eval_}
    model = {"hash": f"model-{json.dumps([merged, scores], sort_keys=True)}"}
    return {
        "rev": rev,
        "timestamp": "2026-12-01T22:07:34",
        "params": {"params.yaml": {"data": merged}},
        "metrics": {
            EVAL: {"data": scores},
            TRAIN: {"data": {"val_accuracy": accuracy, "step": 1}},
            BASELINE: {"data": {"baseline": {"accuracy": 0.81, "macro_f1": 0.8}}},
        },
        "deps": {**{p: {"hash": h} for p, h in (code or CODE).items()}, "models/model.pt": model},
        "outs": {"models/model.pt": model},
        "meta": {},
    }


def experiment(name: str, state: str | None = "success", error: bool = False, **row) -> dict:
    """An entry of a commit's `experiments`; state None: run in the workspace (`dvc exp run`)."""
    rev = hashlib.sha1(name.encode()).hexdigest()
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": {}}
    failed = {"msg": "Experiment run failed", "type": ""} if error else None
    run = {"rev": rev, "name": name, "data": data(rev, **row), "error": failed, "experiments": None}
    return {"executor": executor, "name": name, "revs": [run]}


def shown(*experiments: dict, head: dict | None = None, workspace: dict | None = None) -> list:
    """Parsed `dvc exp show --json`: the workspace, then HEAD (main) and its experiments."""
    head_data = head or data("f05b0ef")
    return [
        {"rev": "workspace", "name": None, "data": workspace or head_data, "error": None},
        {
            "rev": "f05b0ef",
            "name": "main",
            "data": head_data,
            "error": None,
            "experiments": list(experiments),
        },
    ]


# A 2 x 3 study: main is seed 42 with learned positions; the queue ran 3 seeds x 2 encodings,
# so its (42, learned) run is main's run again.
SCORES = {
    ("learned", 42): 0.80,
    ("learned", 43): 0.84,
    ("learned", 44): 0.79,
    ("none", 42): 0.75,
    ("none", 43): 0.70,
    ("none", 44): 0.78,
}


def study() -> list[dict]:
    runs = [
        experiment(
            f"exp-{encoding}-{seed}",
            params={"train.seed": seed, "model.pos_encoding": encoding},
            accuracy=accuracy,
        )
        for (encoding, seed), accuracy in SCORES.items()
    ]
    return shown(*runs)


def by_label(comparison) -> dict:
    return {group.label: group for group in comparison.groups}


def test_groups_by_the_other_params_with_mean_and_sample_sd():
    comparison = compare(study(), ["train.seed"], ["accuracy"], workspace_current=True)
    groups = by_label(comparison)
    assert list(groups) == ["model.pos_encoding=learned", "model.pos_encoding=none"]
    for encoding in ("learned", "none"):
        values = [SCORES[encoding, seed] for seed in (42, 43, 44)]
        stat = groups[f"model.pos_encoding={encoding}"].stats["accuracy"]
        assert len(stat.runs) == 3
        assert stat.mean == pytest.approx(statistics.mean(values))
        assert stat.sd == pytest.approx(statistics.stdev(values))  # n-1
    # main and its copy in the queue are one run; so are the workspace and main.
    assert groups["model.pos_encoding=learned"].stats["accuracy"].runs == [
        "main",
        "exp-learned-43",
        "exp-learned-44",
    ]
    assert "exp-learned-42: the same run as main; counted once" in comparison.notes
    assert "workspace: the same run as main; counted once" in comparison.notes


def test_default_metrics_are_the_accuracies_that_runs_report():
    comparison = compare(study(), ["train.seed"], [], workspace_current=True)
    assert comparison.metrics == ["accuracy", "baseline.accuracy"]  # no path scored alone
    with_paths = shown(experiment("a", accuracy_ngrams_only=0.7, accuracy_transformer_only=0.5))
    comparison = compare(with_paths, ["train.seed"], [], workspace_current=True)
    assert comparison.metrics == [
        "accuracy",
        "accuracy_transformer_only",
        "accuracy_ngrams_only",
        "baseline.accuracy",
    ]


def test_failed_and_queued_experiments_are_named_and_left_out():
    runs = study()
    # A failed experiment's row shows the metrics of the commit it started from.
    runs[1]["experiments"] += [
        experiment("broken", state="failed", error=True, params={"train.seed": 45}, accuracy=0),
        experiment("waiting", state="queued", params={"train.seed": 46}),
        experiment("going", state="running", params={"train.seed": 47}),
    ]
    comparison = compare(runs, ["train.seed"], ["accuracy"], workspace_current=True)
    assert (
        "left out, no results of their own: broken (failed), waiting (queued), going (running)"
        in comparison.notes
    )
    learned = by_label(comparison)["model.pos_encoding=learned"].stats["accuracy"]
    assert len(learned.runs) == 3 and learned.mean == pytest.approx(0.81)


def test_a_run_without_a_metric_is_named_and_left_out_of_that_metric_only():
    runs = shown(
        experiment("a", params={"train.seed": 43}, accuracy=0.7, accuracy_ngrams_only=0.6),
        experiment("b", params={"train.seed": 44}, accuracy=0.9, accuracy_ngrams_only=0.8),
        head=data("f05b0ef", accuracy=0.8),  # scored before the n-gram path existed
    )
    comparison = compare(
        runs, ["train.seed"], ["accuracy", "accuracy_ngrams_only"], workspace_current=True
    )
    (group,) = comparison.groups
    assert group.label == "all" and len(group.runs) == 3
    assert group.stats["accuracy"].mean == pytest.approx(0.8)
    ngrams = group.stats["accuracy_ngrams_only"]
    assert ngrams.runs == ["a", "b"] and ngrams.mean == pytest.approx(0.7)  # not (0+.6+.8)/3
    assert "accuracy_ngrams_only: no value in main; left out of its mean" in comparison.notes
    assert "| all | 3 | 0.8000 ± 0.1000 | 0.7000 ± 0.1414 (n=2) |" in to_markdown(comparison)


def test_a_run_with_none_of_the_metrics_is_named_and_left_out():
    head = data("f05b0ef")
    del head["metrics"][EVAL]  # a commit from before the evaluate stage
    comparison = compare(
        shown(experiment("a", params={"train.seed": 43}), head=head),
        ["train.seed"],
        ["accuracy"],
        workspace_current=True,
    )
    assert [run.name for run in comparison.groups[0].runs] == ["a"]
    assert "left out, none of accuracy: main" in comparison.notes


def test_the_workspace_counts_only_when_it_is_a_run_of_its_own():
    # After `dvc exp run -S train.seed=43` the workspace holds that experiment's results.
    exp = experiment("direct", state=None, params={"train.seed": 43}, accuracy=0.9)
    same = exp["revs"][0]["data"]
    comparison = compare(shown(exp, workspace=same), ["train.seed"], [], workspace_current=True)
    assert [r.name for r in comparison.groups[0].runs] == ["main", "direct"]
    assert "workspace: the same run as direct; counted once" in comparison.notes
    # `dvc repro` with params.yaml changed, not committed: a run of its own.
    own = data("workspace", params={"train.seed": 44}, accuracy=0.7)
    comparison = compare(shown(exp, workspace=own), ["train.seed"], [], workspace_current=True)
    assert [r.name for r in comparison.groups[0].runs] == ["main", "direct", "workspace"]
    # params.yaml changed but not reproduced: its metrics are another run's.
    comparison = compare(shown(exp, workspace=own), ["train.seed"], [], workspace_current=False)
    assert [r.name for r in comparison.groups[0].runs] == ["main", "direct"]
    assert any(note.startswith("workspace: changed since") for note in comparison.notes)


def test_group_names_hold_only_the_params_that_vary_between_groups():
    runs = shown(
        *(
            experiment(f"e{i}", params={"train.seed": 43 + i % 2, **change}, accuracy=0.7 + i / 100)
            for i, change in enumerate(
                [{"train.lr": 0.001}, {"train.lr": 0.001}, {"split.seed": 7}, {"split.seed": 7}]
            )
        )
    )
    comparison = compare(runs, ["train.seed"], ["accuracy"], workspace_current=True)
    assert [g.label for g in comparison.groups] == [
        "split.seed=7, train.lr=0.002",
        "split.seed=42, train.lr=0.001",
        "split.seed=42, train.lr=0.002",  # main alone: a group of one
    ]
    assert by_label(comparison)["split.seed=42, train.lr=0.002"].stats["accuracy"].sd is None
    # Averaged over both seeds, each pair and main are one group.
    over_both = compare(runs, ["train.seed", "split.seed"], ["accuracy"], workspace_current=True)
    assert [(g.label, len(g.runs)) for g in over_both.groups] == [
        ("train.lr=0.001", 2),
        ("train.lr=0.002", 3),
    ]


def test_the_same_params_on_other_code_are_not_averaged_together():
    # main was scored before a code change; the experiments ran the new code.
    runs = shown(
        experiment("new-42", params={"train.seed": 42}, code={"stages/train.py": "new"}),
        experiment("new-43", params={"train.seed": 43}, code={"stages/train.py": "new"}),
    )
    comparison = compare(runs, ["train.seed"], ["accuracy"], workspace_current=True)
    assert [(g.label, len(g.runs)) for g in comparison.groups] == [
        ("all [main]", 1),
        ("all [new-42]", 2),
    ]
    assert (
        "all: the runs of [main] and [new-42] ran other code or data (stages/train.py); "
        "not averaged together" in comparison.notes
    )


def test_metric_names_as_dvc_shows_them():
    runs = study()
    baseline = compare(runs, ["train.seed"], ["baseline.accuracy"], workspace_current=True)
    assert baseline.groups[0].stats["baseline.accuracy"].mean == pytest.approx(0.81)
    by_file = compare(runs, ["train.seed"], [f"{EVAL}:macro_f1"], workspace_current=True)
    assert by_file.metrics == ["macro_f1"]
    # Two files with the same key: DVC names both by file, and so must the user.
    for row in runs[1]["experiments"]:
        row["revs"][0]["data"]["metrics"]["extra.json"] = {"data": {"accuracy": 0.1}}
    with pytest.raises(PipelineError, match=re.escape("name one as extra.json:accuracy")):
        compare(runs, ["train.seed"], ["accuracy"], workspace_current=True)
    chosen = compare(runs, ["train.seed"], [f"{EVAL}:accuracy"], workspace_current=True)
    assert chosen.metrics == [f"{EVAL}:accuracy"]


@pytest.mark.parametrize(
    ("over", "metrics", "message"),
    [
        (["train.sed"], [], "No finished run has a param 'train.sed'; did you mean train.seed"),
        (["train.seed"], ["acuracy"], "No finished run has a metric 'acuracy'; did you mean"),
    ],
)
def test_unknown_names_are_one_sentence(over, metrics, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        compare(study(), over, metrics, workspace_current=True)


def test_no_finished_runs():
    empty = [{"rev": "workspace", "name": None, "data": {"metrics": {}}, "error": None}]
    for rows in ([], empty):
        with pytest.raises(PipelineError, match="No finished experiments to compare"):
            compare(rows, ["train.seed"], [], workspace_current=True)


def test_csv_json_and_markdown_carry_the_same_numbers():
    comparison = compare(study(), ["train.seed"], ["accuracy"], workspace_current=True)
    rows = list(csv.DictReader(io.StringIO(to_csv(comparison))))
    assert [r["model.pos_encoding"] for r in rows] == ["learned", "none"]
    assert float(rows[1]["accuracy_mean"]) == pytest.approx(statistics.mean([0.75, 0.7, 0.78]))
    assert rows[1]["accuracy_n"] == "3"
    parsed = json.loads(to_json(comparison))
    learned = parsed["groups"][0]
    assert learned["params"] == {"model.pos_encoding": "learned"}
    assert learned["runs"][1] == {"name": "exp-learned-43", "train.seed": 43}
    assert learned["metrics"]["accuracy"]["sd"] == pytest.approx(
        statistics.stdev([0.8, 0.84, 0.79])
    )
    assert parsed["notes"] == comparison.notes
    assert "| model.pos_encoding=none | 3 | 0.7433 ± 0.0404 |" in to_markdown(comparison)
    # One run: no sd ("—", empty, null).
    single = compare(shown(), ["train.seed"], ["accuracy"], workspace_current=True)
    assert "| all | 1 | 0.8000 ± — |" in to_markdown(single)
    assert next(csv.DictReader(io.StringIO(to_csv(single))))["accuracy_sd"] == ""
    assert json.loads(to_json(single))["groups"][0]["metrics"]["accuracy"]["sd"] is None


def test_plot_is_a_png(tmp_path):
    comparison = compare(study(), ["train.seed"], [], workspace_current=True)
    plot(comparison, tmp_path / "compare" / "compare.png")
    assert (tmp_path / "compare" / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_outside_a_dvc_repository_is_one_sentence(tmp_path):
    result = run_stage("compare", "--over", "train.seed", cwd=tmp_path)
    assert_one_sentence(result, "not inside of a DVC repository")
    assert result.returncode == 1 and not (tmp_path / "reports").exists()
