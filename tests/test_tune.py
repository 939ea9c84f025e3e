"""stages/tune.py, pipeline.tuning and pipeline.study: the search space checked against
params.yaml, the study's bookkeeping and report on an in-memory study, and one real study of
DVC experiments (pruning, resuming, two jobs) in a temporary project."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from pipeline.config import load_params
from pipeline.distributed import TEST_PAUSE_S
from pipeline.early_stop import STOPPED_AT
from pipeline.errors import PipelineError
from pipeline.tuning import load_space, set_args
from tests.conftest import ROOT
from tests.projects import sh, trained_project, user_env
from tests.test_stages import assert_one_sentence

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")
from optuna.trial import TrialState  # noqa: E402

from pipeline import study as tuning  # noqa: E402
from pipeline.tuning import Pruner  # noqa: E402

PARAMS = load_params(ROOT / "params.yaml")


def tune(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(cwd / "stages" / "tune.py"), *args],
        cwd=cwd,
        env=env or user_env(DVC_NO_ANALYTICS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def test_the_committed_space_fits_params_yaml():
    space = load_space(ROOT / "tune.yaml", PARAMS)
    assert space.fixed == {"train.epochs": 10}
    kinds = {dim.key: dim.kind for dim in space.search}
    assert kinds["train.lr"] == "float" and kinds["model.num_layers"] == "int"
    assert kinds["model.pos_encoding"] == "categorical"
    lr = next(dim for dim in space.search if dim.key == "train.lr")
    assert lr.log and 0 < lr.low < lr.high
    assert space.pruner.kind == "median"


def test_values_are_converted_as_params_yaml_takes_them(tmp_path):
    space = load_space(
        write_space(
            tmp_path / "tune.yaml",
            {"search": {"train.lr": {"type": "float", "low": "1e-5", "high": 1, "log": True}}},
        ),
        PARAMS,
    )
    (lr,) = space.search
    assert (lr.low, lr.high) == (1e-5, 1.0) and isinstance(lr.high, float)
    assert space.pruner.kind == "none"  # no pruner section: no pruning


def test_dvc_set_args_read_back_as_the_same_values():
    values = {"train.lr": 1e-05, "model.pos_encoding": "none", "model.ngram_path": False}
    args = set_args(values)
    assert args[::2] == ["-S"] * 3
    read = dict(arg.split("=", 1) for arg in args[1::2])
    # DVC reads each -S value as YAML: what it writes is the value itself (1e-05 not '1e-05').
    assert {key: yaml.safe_load(text) for key, text in read.items()} == values


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        (
            {"search": {"train.lrr": {"type": "float", "low": 0.001, "high": 0.01}}},
            ["'train.lrr' is not a params.yaml key", "did you mean 'train.lr'"],
        ),
        (
            {"search": {"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}}},
            ["search 'model.dropout': 1.0 is not a value it can take", "[0, 1)"],
        ),
        (
            {"search": {"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
            ["search 'train.lr': 0.0 is not a value", "greater than 0"],
        ),
        (
            {"search": {"model.num_layers": {"type": "float", "low": 1, "high": 3}}},
            ["is type float, but params.yaml holds a int there; use type int"],
        ),
        (
            {"search": {"train.epochs": {"type": "int", "low": 5, "high": 2}}},
            ["low (5) must be below high (2)"],
        ),
        (
            {"search": {"model.pos_encoding": {"type": "categorical", "choices": ["learnt"]}}},
            ["'learnt' is not a value it can take", "learned, sinusoidal, none"],
        ),
        (
            {
                "fixed": {"train.epochs": 2},
                "search": {"train.epochs": {"type": "int", "low": 1, "high": 3}},
            },
            ["'train.epochs' is both fixed and searched"],
        ),
        (
            {"fixed": {"train.epochs": 0}, "search": {}},
            ["fixed: 'train.epochs' must be at least 1"],
        ),
        ({"search": {"train.lr": 0.1}}, ["must be a mapping with type float, int or categorical"]),
        (
            {"search": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "logg": True}}},
            ["unknown key of search 'train.lr' 'logg'", "did you mean 'log'"],
        ),
        ({"serach": {}}, ["unknown section 'serach'", "did you mean 'search'"]),
        (
            {
                "search": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}},
                "pruner": {"kind": "mean"},
            },
            ["'pruner' must be a mapping with kind median, halving or none"],
        ),
        (["train.lr"], ["must be a mapping with the sections fixed, search and pruner"]),
    ],
)
def test_a_bad_space_is_rejected_naming_the_key_and_the_fix(tmp_path, space, fragments):
    with pytest.raises(PipelineError) as caught:
        load_space(write_space(tmp_path / "tune.yaml", space), PARAMS)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'tune.yaml'}: ")
    for fragment in fragments:
        assert fragment in message


def test_a_bad_space_is_one_sentence_before_any_trial(tmp_path):
    # tmp_path is no git repository: a command that got as far as a trial would fail otherwise.
    space = {"search": {"train.lrr": {"type": "float", "low": 0.001, "high": 0.01}}}
    write_space(tmp_path / "tune.yaml", space)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "tune.py"), "--trials", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_sentence(result, "tune.yaml: 'train.lrr' is not a params.yaml key")
    assert not (tmp_path / "tune.db").exists()


def test_malformed_or_missing_space_file_is_one_sentence(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "tune.yaml").write_text("search:\n  train.lr: {type: float\n")
    command = [sys.executable, str(ROOT / "stages" / "tune.py"), "--trials", "1"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert_one_sentence(result, "tune.yaml is not valid YAML at line")
    result = subprocess.run(
        [*command, "--space", "nope.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert_one_sentence(result, "Search space nope.yaml does not exist")


def test_an_unreachable_storage_is_one_sentence_without_its_password(tmp_path):
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (tune extra) is not installed")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "tune.py"),
            "--space",
            str(ROOT / "tune.yaml"),
            "--trials",
            "1",
            "--storage",
            "postgresql://tuner:secret@127.0.0.1:1/optuna",  # port 1: nothing listens
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_sentence(
        result, "Cannot open the study's storage postgresql://tuner:***@127.0.0.1:1/", "refused"
    )
    assert "secret" not in result.stderr


def test_a_report_of_a_study_that_does_not_exist_is_one_sentence(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "tune.yaml").write_text((ROOT / "tune.yaml").read_text())
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "tune.py"), "--study", "nope", "--report"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_sentence(result, "There is no study 'nope' in sqlite:///", "check --study")


def test_a_trial_asked_when_the_study_is_full_is_left_uncounted_and_unrun():
    study = optuna.create_study(direction="maximize")
    assert tuning.next_trial(study, 2).number == 0
    study.ask()  # another process takes the last trial between our count and our ask
    late = study.ask()
    assert tuning.surplus(study, late, 2)
    assert late.number == 2 and study.trials[2].state == TrialState.FAIL
    assert tuning.UNCOUNTED in study.trials[2].user_attrs
    assert tuning.next_trial(study, 2) is None  # full: nothing more is asked
    assert len(study.trials) == 3
    # Had ours come first, the other process's would be the late one.
    study = optuna.create_study(direction="maximize")
    mine, theirs = study.ask(), study.ask()
    assert not tuning.surplus(study, mine, 1) and tuning.surplus(study, theirs, 1)


def test_the_report_names_the_best_trial_every_state_and_writes_plots(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="s")
    for number, (state, value) in enumerate(
        [("complete", 0.8), ("complete", 0.9), ("pruned", 0.3), ("fail", None)]
    ):
        trial = study.ask()
        trial.suggest_float("train.lr", 1e-4, 1.0, log=True)
        trial.set_user_attr("experiment", f"s-{number}")
        trial.set_user_attr("seconds", 10.0 + number)
        if state == "complete":
            study.tell(trial, value)
        elif state == "pruned":
            trial.report(value, 1)
            trial.set_user_attr("pruned_epoch", 1)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("error", "ERROR: failed to reproduce 'train'")
            study.tell(trial, state=TrialState.FAIL)
    text = tuning.report(study, "accuracy", tmp_path / "out")
    best = study.best_trial
    assert f"Best: trial {best.number} (s-{best.number}), accuracy 0.9000" in text
    assert f"dvc exp apply s-{best.number}" in text
    rows = [line for line in text.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) == 4
    assert "| complete |" in rows[1] and "0.9000" in rows[1]
    assert "pruned (epoch 1)" in rows[2] and "fail: ERROR: failed to reproduce" in rows[3]
    history = (tmp_path / "out" / "history.csv").read_text().splitlines()
    assert history == ["trial,accuracy,best", "0,0.8,0.8", "1,0.9,0.9"]
    assert (tmp_path / "out" / "history.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "out" / "importance.png").read_bytes().startswith(b"\x89PNG")


def test_direction_of_an_existing_study_is_kept(tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    tuning.open_study(url, "s", "maximize", 0, Pruner("none"))
    with pytest.raises(PipelineError, match="created to maximize its metric"):
        tuning.open_study(url, "s", "minimize", 0, Pruner("none"))


# One real study: trial 0 trains with a working rate, trial 1 with one that learns nothing,
# which the median pruner stops after its first epoch (TPE's seeded draws: 0.03 then 1e-6;
# whether the draws fall so is checked, not assumed). The stage stops after the epoch in which
# the tuner's stop file appears, and a tiny epoch is shorter than the tuner's second between
# looks: each run pauses 3 s after epoch 1 (TEST_PAUSE_S), so that trial 1 stops after epoch 1.
GOOD, HOPELESS = 3.0e-2, 1.0e-6
SPACE = {
    "fixed": {"train.epochs": 3, "model.ngram_path": False},  # the n-grams alone score 1.0
    "search": {"train.lr": {"type": "categorical", "choices": [GOOD, HOPELESS]}},
    "pruner": {"kind": "median", "startup_trials": 1, "warmup_epochs": 0},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = trained_project(tmp_path_factory, "tune")  # trials rerun train and evaluate only
    write_space(project / "tune.yaml", SPACE)
    sh(project, "git", "add", "tune.yaml")
    sh(project, "git", "commit", "-q", "-m", "search space")
    return project


def experiments(project: Path) -> dict[str, dict]:
    """Each experiment `dvc exp show` lists, by name: its params, its model's metrics and its
    train stage's."""
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    found = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["reports/eval/metrics.json"]["data"],
                    "train": data["metrics"]["reports/train/metrics.json"]["data"],
                    "state": (exp.get("executor") or {}).get("state"),
                }
    return found


def load(project: Path) -> optuna.Study:
    return optuna.load_study(study_name="tune", storage=f"sqlite:///{project / 'tune.db'}")


@pytest.mark.e2e
def test_a_study_runs_trials_as_experiments_prunes_and_resumes(project):
    paused = user_env(DVC_NO_ANALYTICS="1", **{TEST_PAUSE_S: "3"})
    result = tune(project, "--space", "tune.yaml", "--trials", "2", "--seed", "11", env=paused)
    assert result.returncode == 0, result.stdout + result.stderr
    study = load(project)
    first, second = study.trials
    assert (first.params["train.lr"], second.params["train.lr"]) == (GOOD, HOPELESS)
    assert first.state == TrialState.COMPLETE and second.state == TrialState.PRUNED
    assert second.user_attrs["pruned_epoch"] == 1 and list(second.intermediate_values) == [1]
    assert list(first.intermediate_values) == [1, 2, 3]  # every epoch was reported
    shown = experiments(project)
    # The complete trial is the experiment tune-0, with the fixed and the chosen params; its
    # metric in the study is the one `dvc exp show` shows.
    assert shown["tune-0"]["params"]["train"]["lr"] == GOOD
    assert shown["tune-0"]["params"]["train"]["epochs"] == 3
    assert shown["tune-0"]["params"]["model"]["ngram_path"] is False
    assert shown["tune-0"]["metrics"]["accuracy"] == first.value
    assert shown["tune-0"]["train"]["step"] == 3 and STOPPED_AT not in shown["tune-0"]["train"]
    # The pruned trial is an experiment too: its train stage stopped after epoch 1, says so,
    # and holds that epoch's scores (the ones the pruner saw); evaluate scored its model.
    pruned = shown["tune-1"]
    assert pruned["params"]["train"]["lr"] == HOPELESS
    assert pruned["train"][STOPPED_AT] == 1 and pruned["train"]["step"] == 1
    assert pruned["train"]["val_accuracy"] == second.intermediate_values[1]
    assert 0 <= pruned["metrics"]["accuracy"] <= 1
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*"))
    assert "trial 1 (tune-1): pruned after epoch 1, stopped after epoch 1" in result.stdout
    assert "dvc exp apply tune-0" in result.stdout
    # The study and its report are no part of git; the workspace is untouched.
    assert sh(project, "git", "status", "--porcelain", "--untracked-files=no") == ""
    assert "tune.db" in sh(project, "git", "check-ignore", "tune.db")

    # A rerun continues to 4 trials in all, two at a time.
    result = tune(project, "--trials", "4", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    study = load(project)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    shown = experiments(project)
    # Every trial is an experiment, and `dvc exp show` tells the pruned ones (by the study)
    # apart; whether the rerun's trials are pruned is the pruner's choice.
    assert {f"tune-{t.number}" for t in study.trials} == set(shown)
    for t in study.trials:
        train = shown[f"tune-{t.number}"]["train"]
        assert (STOPPED_AT in train) == (t.state == TrialState.PRUNED)
        if t.state == TrialState.COMPLETE:
            assert shown[f"tune-{t.number}"]["metrics"]["accuracy"] == t.value

    # --report alone runs nothing and names the best experiment; DVC applies it.
    result = tune(project, "--report")
    assert result.returncode == 0, result.stderr
    best = f"tune-{study.best_trial.number}"
    assert f"Take it into the workspace: dvc exp apply {best}" in result.stdout
    assert len(load(project).trials) == 4
    for name in ("history.png", "history.csv"):
        assert (project / "reports" / "tune" / "tune" / name).is_file()
    sh(project, "dvc", "exp", "apply", best)
    applied = yaml.safe_load((project / "params.yaml").read_text())
    assert applied["train"]["lr"] == study.best_trial.params["train.lr"]
    assert applied["train"]["epochs"] == 3


def wait_for(condition: Callable[[], bool], what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.5)


@pytest.mark.e2e
def test_ctrl_c_stops_the_trial_and_its_workers_and_a_rerun_completes_the_study(
    tmp_path_factory,
):
    project = trained_project(tmp_path_factory, "ctrl_c")
    # Two training processes per trial: Ctrl-C must reach the workers of torch's launcher
    # too, which sit in sessions of their own.
    space = {
        "fixed": {"train.epochs": 1, "train.processes": 2},
        "search": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
        "pruner": {"kind": "none"},
    }
    write_space(project / "tune.yaml", space)
    sh(project, "git", "add", "tune.yaml")
    sh(project, "git", "commit", "-q", "-m", "search space")
    # One trial: the interrupted one does not count, so the rerun runs one of its own.
    command = [sys.executable, "stages/tune.py", "--trials", "1"]
    # Its own process group, as a terminal's foreground job: Ctrl-C is a SIGINT to the group.
    # Each run pauses after epoch 1 (TEST_PAUSE_S), so that the SIGINT lands mid-training.
    running = subprocess.Popen(
        command,
        cwd=project,
        env=user_env(DVC_NO_ANALYTICS="1", **{TEST_PAUSE_S: "120"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = project / "reports" / "tune" / "tune" / "logs" / "tune-0.log"
    try:
        wait_for(lambda: log.is_file() and "epoch   1/1" in log.read_text(), "epoch 1")
        tree = psutil.Process(running.pid).children(recursive=True)
        # Python processes only: where /bin/sh does not exec its last command, DVC's shell stays.
        trainers = [
            p
            for p in tree
            if p.name().startswith("python") and "stages/train.py" in " ".join(p.cmdline())
        ]
        assert len(trainers) == 3, trainers  # the launcher and its two workers
        os.killpg(running.pid, signal.SIGINT)
        stdout, stderr = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
    assert running.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        "Interrupted: the running trials are stopped and marked failed; rerun the same "
        "command to continue the study."
    ]
    assert "trial 0 (tune-0): interrupted" in stdout
    # No process of the run is left: DVC, the stage, the launcher, its workers.
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    (trial,) = load(project).trials
    assert trial.state == TrialState.FAIL and tuning.UNCOUNTED in trial.user_attrs
    # DVC kept no experiment and no copy of the repository; git sees nothing new.
    assert experiments(project) == {}
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*"))
    assert sh(project, "git", "status", "--porcelain") == ""

    # The same command again completes the study: the interrupted trial's place is taken.
    result = tune(project, "--trials", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [t.state for t in load(project).trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert set(experiments(project)) == {"tune-1"}
    assert sh(project, "git", "status", "--porcelain") == ""
