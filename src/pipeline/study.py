"""An Optuna study whose every trial is a DVC experiment (stages/tune.py).

Each trial is one `dvc exp run --temp -n <study>-<number> -S ...`: DVC runs the pipeline in a
copy of the repository and keeps the result as a named experiment, so `dvc exp show`, `apply`,
`push` and `plots diff` work on it as on any other. `--temp` rather than DVC's queue: the
command returns when its run ends, so a thread per job asks Optuna for a trial, runs it and
tells the result, and the trial's train stage can be watched while it runs (pruning).

Pruning: while a trial trains, its dvclive file of per-epoch validation scores (in the copy DVC
runs it in) is read here and each new epoch reported to Optuna; when the pruner says stop, the
trial's stop file (pipeline.early_stop) is written, and the train stage stops after its epoch,
keeps the model and metrics of the epochs done (with stopped_at_epoch) and the run goes on to
evaluate: DVC keeps the pruned trial as an experiment like any other. A SIGINT (as Ctrl-C: the
stage removes its partial outputs, DVC its copy) is for Ctrl-C alone. The pipeline itself
knows nothing of Optuna: the database and its URL stay in this process.

Only this process writes to the study. The objective is read from the experiment's own commit:
a validation metric of the files dvc.yaml lists under `metrics:`; test rows' scores are refused.
"""

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import psutil
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState

from pipeline import distributed
from pipeline.compare import Column, display_names, flatten, resolve
from pipeline.config import Params
from pipeline.early_stop import STOP_FILE, STOPPED_AT
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.tuning import Dimension, Pruner, Space, Value, check_trial, set_args

# The train stage's dvclive files (dvc.yaml: --live-dir reports/train), one per metric.
LIVE_METRICS = Path("reports/train/plots/metrics")
# Where the train stage says that it stopped early: the metrics of a pruned trial's experiment.
STOPPED: Column = ("reports/train/metrics.json", STOPPED_AT)
# What each epoch reports to the pruner: the validation score that moves with the objective.
EPOCH_METRIC = {"maximize": "val_accuracy", "minimize": "val_loss"}
WATCH_SECONDS = 1.0  # how often a running trial's epochs are read
STOP_SECONDS = 60.0  # how long an interrupted run may take to clean up before it is killed
# A trial that user attr marks this way is no part of the N trials: one interrupted before it
# ended, or one asked when another process had just taken the last.
UNCOUNTED = "uncounted"


def open_study(
    storage: str, name: str, direction: str, seed: int, pruner: Pruner, create: bool = True
) -> optuna.Study:
    """The study `name` in `storage`, created if new (`create`); TPE seeded with `seed` plus the
    number of trials it already has, so that a resumed (or a second) process draws others."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    # constant_liar (experimental in Optuna 4.9): a running trial counts as a bad one, so that
    # parallel trials do not all sample the same point.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        rdb = _storage(storage)
        done = None
        if name in {s.study_name for s in optuna.get_all_study_summaries(rdb)}:
            done = len(optuna.load_study(study_name=name, storage=rdb).trials)
        if done is None and not create:
            raise PipelineError(f"There is no study '{name}' in {_safe(storage)}; check --study.")
        sampler = optuna.samplers.TPESampler(seed=(seed + (done or 0)) % 2**32, constant_liar=True)
        study = optuna.create_study(
            storage=rdb,
            study_name=name,
            direction=direction,
            sampler=sampler,
            pruner=make_pruner(pruner),
            load_if_exists=True,
        )
    except PipelineError:
        raise
    except Exception as err:  # SQLAlchemy's and the drivers' errors have no common base
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(
            f"Cannot open the study's storage {_safe(storage)} ({reason.rstrip('.')}); "
            "check the URL, that the server runs and that its driver is installed."
        ) from None
    stored = study.direction.name.lower()
    if stored != direction:
        raise PipelineError(
            f"Study '{name}' was created to {stored} its metric; pass --direction {stored} "
            "or choose another --study."
        )
    return study


def _storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage at `url`. Two machines that start at once on an empty database both
    create its tables, and one of them fails on the other's (a unique key violated, a table that
    exists): it then finds them made, the second time."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        return optuna.storages.RDBStorage(url)
    except (IntegrityError, ProgrammingError):
        time.sleep(1.0)
        return optuna.storages.RDBStorage(url)


def _safe(url: str) -> str:
    """A storage URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@")[0]:
        user = rest.split("@")[0].split(":")[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


def make_pruner(pruner: Pruner) -> optuna.pruners.BasePruner:
    if pruner.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs
        )
    if pruner.kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_epochs, reduction_factor=pruner.reduction_factor
        )
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Setup:
    """What every trial of one run of the command shares."""

    repo: Path
    params: Params
    space: Space
    metric: str  # as `dvc exp show` names it (accuracy, reports/eval/metrics.json:accuracy)
    baseline: str  # the commit the experiments start from (HEAD when the command started)
    logs: Path  # one log file per trial, the output of its `dvc exp run`


def counts(trial: FrozenTrial) -> bool:
    return UNCOUNTED not in trial.user_attrs


def run_study(
    study: optuna.Study,
    setup: Setup,
    trials: int,
    jobs: int,
    echo: Callable[[str], None],
) -> None:
    """Run trials, `jobs` at a time, until the study holds `trials` of them (counting those
    that other processes run or ran). Ctrl-C interrupts the running ones, marks them failed
    and uncounted (a rerun takes their place), and raises KeyboardInterrupt."""
    ask_lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(done: threading.Event) -> None:
        try:
            while not stop.is_set():
                with ask_lock:
                    trial = next_trial(study, trials)
                if trial is None:
                    return
                echo(run_trial(study, trial, setup, stop))
        except BaseException as err:  # a bug: stop the others and show it in the main thread
            errors.append(err)
            stop.set()
        finally:
            done.set()

    # Ctrl-C as a KeyboardInterrupt even where SIGINT came ignored (a shell's background job):
    # then the runs, which inherit the handling, stop on the SIGINT that `interrupt` sends.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    finished = [threading.Event() for _ in range(jobs)]
    for i, done in enumerate(finished):
        threading.Thread(target=worker, args=(done,), name=f"tune-{i}").start()
    # Events, not Thread.join: a Ctrl-C that lands in join() can make CPython take the running
    # thread for ended (python/cpython#90882; seen on 3.11), and this process would exit at
    # once, its runs killed (dies_with_this_process) instead of stopped and their trials told.
    try:
        for done in finished:
            done.wait()
    except KeyboardInterrupt:
        stop.set()
        for done in finished:
            done.wait()
        raise
    if errors:
        raise errors[0]


def next_trial(study: optuna.Study, trials: int) -> Trial | None:
    """A new trial, or None when the study already holds `trials` counted ones."""
    if sum(counts(t) for t in study.get_trials(deepcopy=False)) >= trials:
        return None
    trial = study.ask()
    return None if surplus(study, trial, trials) else trial


def surplus(study: optuna.Study, trial: Trial, trials: int) -> bool:
    """Whether `trial` came too late: two processes may both see room for one more and ask at
    once; the one whose trial has `trials` counted ones below its number marks it failed and
    uncounted, unrun (trial numbers are unique in the storage, so exactly one is late)."""
    below = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
    if len(below) < trials:
        return False
    trial.set_user_attr(UNCOUNTED, "asked after another process took the last trial")
    study.tell(trial, state=TrialState.FAIL)
    return True


def suggest(trial: Trial, dim: Dimension) -> Value:
    if dim.kind == "float":
        return trial.suggest_float(dim.key, dim.low, dim.high, log=dim.log)
    if dim.kind == "int":
        return trial.suggest_int(dim.key, dim.low, dim.high, log=dim.log)
    return trial.suggest_categorical(dim.key, list(dim.choices))


def experiment_name(study: optuna.Study, trial: Trial | FrozenTrial) -> str:
    return f"{study.study_name}-{trial.number}"


def run_trial(study: optuna.Study, trial: Trial, setup: Setup, stop: threading.Event) -> str:
    """Run one trial as a DVC experiment, tell Optuna how it ended; a line saying so."""
    chosen = {dim.key: suggest(trial, dim) for dim in setup.space.search}
    name = experiment_name(study, trial)
    trial.set_user_attr("experiment", name)
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items()
    )
    try:
        check_trial(setup.params, setup.space, chosen)
    except PipelineError as err:
        return _failed(study, trial, f"impossible params: {err}", shown)
    direction = study.direction.name.lower()
    setup.logs.mkdir(parents=True, exist_ok=True)
    log_path = setup.logs / f"{name}.log"
    command = [
        sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name,
        *set_args({**setup.space.fixed, **chosen}),
    ]  # fmt: skip
    start = time.perf_counter()
    # Outside the repository: DVC copies the work tree into its run, git never sees the file.
    with (
        tempfile.TemporaryDirectory(prefix=f"{name}-") as stop_dir,
        log_path.open("w", encoding="utf-8") as log,
    ):
        stop_file = Path(stop_dir) / "stop"
        # A session of its own: the terminal's Ctrl-C reaches this process only, which then
        # interrupts each run itself, and can tell its trial how it ended. Tied to this
        # process: a SIGKILL of the study ends the run too (this thread waits for it).
        run = subprocess.Popen(
            command,
            cwd=setup.repo,
            env={**os.environ, STOP_FILE: str(stop_file)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=distributed.dies_with_this_process(),
        )
        pruned_at = watch(run, trial, EPOCH_METRIC[direction], stop, stop_file)
    seconds = time.perf_counter() - start
    trial.set_user_attr("seconds", round(seconds, 1))
    if stop.is_set():
        trial.set_user_attr(UNCOUNTED, "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        return f"trial {trial.number} ({name}): interrupted"
    if run.returncode != 0:
        return _failed(study, trial, last_error(log_path), shown)
    try:
        metrics = metrics_at(setup.repo, experiment_ref(setup.baseline, name))
    except PipelineError as err:
        return _failed(study, trial, str(err), shown)
    # Pruned is what the experiment says: a run that had trained its last epoch when the
    # stop file came is complete, and told so.
    if STOPPED in metrics:
        trial.set_user_attr("pruned_epoch", pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
        pruned = f"pruned after epoch {pruned_at}, stopped after epoch {metrics[STOPPED]:.0f}"
        return f"trial {trial.number} ({name}): {pruned}, {seconds:.0f} s; {shown}"
    try:
        value = objective(metrics, name, setup.metric)
    except PipelineError as err:
        return _failed(study, trial, str(err), shown)
    study.tell(trial, value)
    return f"trial {trial.number} ({name}): {setup.metric} {value:.4f}, {seconds:.0f} s; {shown}"


def _failed(study: optuna.Study, trial: Trial, reason: str, shown: str) -> str:
    trial.set_user_attr("error", reason)
    study.tell(trial, state=TrialState.FAIL)
    return f"trial {trial.number} ({experiment_name(study, trial)}): failed: {reason}; {shown}"


def last_error(log_path: Path) -> str:
    """The last ERROR or Error line of a run's log (DVC's and our stages' one sentence)."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line.strip() for line in lines if line.lstrip().startswith(("ERROR", "Error"))]
    return errors[-1] if errors else f"dvc exp run failed; see {log_path}"


def watch(
    run: subprocess.Popen, trial: Trial, metric: str, stop: threading.Event, stop_file: Path
) -> int | None:
    """Wait for `run` to end, reporting each epoch of its train stage to `trial` until the
    pruner says stop: then write `stop_file` (the stage stops after the epoch it is in) and
    return that epoch once the run has ended; None if the pruner never said so. Interrupt the
    run when `stop` is set (Ctrl-C)."""
    reported = 0
    pruned_at = None
    live: Path | None = None
    while run.poll() is None:
        if stop.is_set():
            interrupt(run)
            return pruned_at
        if pruned_at is None:
            live = live or live_file(run, metric)
            for epoch, value in new_epochs(live, reported):
                trial.report(value, epoch)
                reported = epoch
                if trial.should_prune():
                    stop_file.touch()
                    pruned_at = epoch
                    break
        time.sleep(WATCH_SECONDS)
    return pruned_at


def live_file(run: subprocess.Popen, metric: str) -> Path | None:
    """The dvclive file of `metric` that the run's train stage writes, once it runs: in the
    copy of the repository DVC runs the experiment in (the stage's working directory)."""
    try:
        for child in psutil.Process(run.pid).children(recursive=True):
            if any(part.endswith("stages/train.py") for part in child.cmdline()):
                return Path(child.cwd()) / LIVE_METRICS / f"{metric}.tsv"
    except psutil.Error:  # a process ended while we looked: look again next time
        pass
    return None


def new_epochs(live: Path | None, after: int) -> list[tuple[int, float]]:
    """(epoch, value) of each complete line of dvclive's TSV (`step<TAB>metric`) past `after`."""
    if live is None:
        return []
    try:
        text = live.read_text(encoding="utf-8")
    except OSError:  # not written yet, or its copy just went away
        return []
    rows = []
    for line in text.splitlines(keepends=True)[1:]:
        if line.endswith("\n"):
            step, value = line.split("\t")[:2]
            if int(step) > after:
                rows.append((int(step), float(value)))
    return rows


def interrupt(run: subprocess.Popen) -> None:
    """Stop a run as Ctrl-C does (its stage cleans up, DVC removes its copy), then wait; kill
    it if it does not end."""
    try:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    except ProcessLookupError:
        run.wait()


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def metrics_at(repo: Path, rev: str) -> dict[Column, float]:
    """The numbers in the metrics files that dvc.yaml lists (top-level `metrics:`) at `rev`."""
    files = yaml.safe_load(git(repo, "show", f"{rev}:dvc.yaml")).get("metrics") or []
    found: dict[Column, float] = {}
    for file in files:
        try:
            content = yaml.safe_load(git(repo, "show", f"{rev}:{file}")) or {}
        except PipelineError:  # not committed (no run yet)
            continue
        for key, value in flatten(content).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                found[(file, key)] = float(value)
    return found


def metric_column(metrics: dict[Column, float], name: str) -> Column:
    """The column `name` means, as `dvc exp show` names it; never a score of the test rows."""
    column = resolve(name, display_names(set(metrics)), "metric")
    if "test" in column[1].split("."):
        raise PipelineError(
            f"{name} is a score of the test rows, which the search must never see; "
            "choose a validation metric (accuracy, macro_f1, baseline.accuracy)."
        )
    return column


def experiment_ref(baseline: str, name: str) -> str:
    """The git ref of the experiment `name` started from commit `baseline`."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def objective(metrics: dict[Column, float], name: str, metric: str) -> float:
    """`metric` of the experiment `name`, from its `metrics` (metrics_at its commit)."""
    value = metrics[metric_column(metrics, metric)]
    if not math.isfinite(value):
        raise PipelineError(f"{metric} of {name} is {value}, not a finite number.")
    return value


# The report.


def report(study: optuna.Study, metric: str, out_dir: Path) -> str:
    """The study as a person reads it (Markdown), and its plots written under `out_dir`."""
    trials = [t for t in study.get_trials(deepcopy=False) if counts(t)]
    states = {state: sum(t.state == state for t in trials) for state in TrialState}
    summary = ", ".join(f"{n} {s.name.lower()}" for s, n in states.items() if n)
    lines = [f"Study {study.study_name}: {len(trials)} trials ({summary or 'none yet'})", ""]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        name = best.user_attrs.get("experiment", experiment_name(study, best))
        lines += [
            f"Best: trial {best.number} ({name}), {metric} {best.value:.4f}",
            *(f"  {key}: {_show(value)}" for key, value in best.params.items()),
            "",
            f"Take it into the workspace: dvc exp apply {name}",
            "",
        ]
    keys = list(dict.fromkeys(key for t in trials for key in t.params))
    lines += [
        "| trial | experiment | state | " + " | ".join(keys) + f" | {metric} | seconds |",
        "|---:|---|---|" + "---|" * len(keys) + "---:|---:|",
    ]
    for t in trials:
        state = t.state.name.lower()
        if t.state == TrialState.PRUNED:
            state += f" (epoch {t.user_attrs.get('pruned_epoch', '?')})"
        if t.state == TrialState.FAIL:
            state += f": {t.user_attrs.get('error', 'unknown')}"
        value = "" if t.value is None or t.state != TrialState.COMPLETE else f"{t.value:.4f}"
        cells = [_show(t.params[k]) if k in t.params else "" for k in keys]
        seconds = t.user_attrs.get("seconds", "")
        lines.append(
            f"| {t.number} | {t.user_attrs.get('experiment', '')} | {state} | "
            + " | ".join(cells)
            + f" | {value} | {seconds} |"
        )
    lines += ["", *write_plots(study, trials, metric, out_dir)]
    return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_plots(
    study: optuna.Study, trials: list[FrozenTrial], metric: str, out_dir: Path
) -> list[str]:
    """history.csv / .png (each finished trial's metric and the best so far) and
    importance.csv / .png (fANOVA importances), with a line naming each file or saying why it
    is missing."""
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    better = max if study.direction.name == "MAXIMIZE" else min
    rows, best = [], None
    for t in done:
        best = t.value if best is None else better(best, t.value)
        rows.append((t.number, t.value, best))
    with atomic_path(out_dir / "history.csv") as tmp:
        tmp.write_text(f"trial,{metric},best\n" + "".join(f"{n},{v!r},{b!r}\n" for n, v, b in rows))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o", label="trial")
    ax.step([r[0] for r in rows], [r[2] for r in rows], where="post", label="best so far")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.value is not None]
    if pruned:
        ax.plot(
            [t.number for t in pruned], [t.value for t in pruned], "x", label="pruned (last epoch)"
        )
    ax.set(xlabel="trial", ylabel=metric, title=f"Optimisation history of {study.study_name}")
    ax.legend()
    _save(fig, out_dir / "history.png")
    lines.append(
        f"history: {out_dir / 'history.png'} (dvc plots show {out_dir / 'history.csv'} "
        f"-x trial -y {metric})"
    )
    try:
        # Seeded: fANOVA's random forest gives the same importances for the same trials.
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as err:  # too few finished trials, or one param value
        (out_dir / "importance.csv").unlink(missing_ok=True)
        (out_dir / "importance.png").unlink(missing_ok=True)
        return [*lines, f"importance: not yet ({err})"]
    with atomic_path(out_dir / "importance.csv") as tmp:
        tmp.write_text(
            "param,importance\n" + "".join(f"{k},{v!r}\n" for k, v in importances.items())
        )
    fig = Figure(figsize=(6, 1.5 + 0.4 * len(importances)), layout="constrained")
    ax = fig.subplots()
    ax.barh(list(importances)[::-1], list(importances.values())[::-1])
    ax.set(xlabel=f"importance for {metric} (fANOVA)", title="Parameter importances")
    _save(fig, out_dir / "importance.png")
    lines.append(
        f"importance: {out_dir / 'importance.png'} (dvc plots show {out_dir / 'importance.csv'} "
        "--template bar_horizontal -x importance -y param)"
    )
    return lines


def _save(fig: Any, path: Path) -> None:
    # No "Software" stamp: the PNG bytes depend on the data alone.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
