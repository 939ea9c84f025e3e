"""Seed-averaged comparisons of DVC experiments: group the finished runs that `dvc exp show
--json` lists by every param except the ones they vary over (a seed), and give each group's
mean and sample standard deviation of each metric.

Everything but `dvc_json` works on the parsed JSON alone, so it is tested on recorded data.
"""

import csv
import difflib
import io
import json
import math
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.files import atomic_path

# A param or metric as `dvc exp show --json` nests it: (file, dotted key).
Column = tuple[str, str]

# The headline accuracies of the model, each of its paths alone and the baseline; those that
# no run reports (model.ngram_path false) are left out.
DEFAULT_METRICS = (
    "accuracy",
    "accuracy_transformer_only",
    "accuracy_ngrams_only",
    "baseline.accuracy",
)

# Executor states of runs with results of their own (None: run in the workspace, or pulled
# from a colleague). Queued, running and failed ones have none: a failed experiment's row
# shows the metrics of the commit it started from.
FINISHED = (None, "success")


@dataclass(frozen=True)
class Run:
    """One finished run: a commit, an experiment or the workspace."""

    name: str
    params: dict[Column, Any]
    metrics: dict[Column, float]
    sources: dict[str, str]  # hash of each dependency no stage writes: code and raw data
    identity: str  # its params, dependencies, outputs and metrics: equal for one run shown twice


@dataclass(frozen=True)
class Stat:
    runs: list[str]  # the runs averaged, by name
    mean: float | None  # None: no run of the group has the metric
    sd: float | None  # sample standard deviation (n-1); None for fewer than two runs


@dataclass(frozen=True)
class Group:
    label: str  # the params that vary between groups, `name=value, ...`, or "all"
    params: dict[str, Any]  # those params, by name
    runs: list[Run]
    stats: dict[str, Stat]  # by metric name


@dataclass(frozen=True)
class Comparison:
    over: list[str]  # the params averaged over, by name
    over_columns: list[Column]
    metrics: list[str]
    groups: list[Group]
    notes: list[str]  # runs left out or counted once, and why: one line each


def dvc_json(*args: str) -> Any:
    """The parsed JSON that `dvc <args> --json` prints; its error as one sentence if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args, "--json"], capture_output=True, text=True
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1].removeprefix("ERROR:").strip() if errors else done.stderr.strip()
        raise PipelineError(f"`dvc {' '.join(args)}` failed: {reason.rstrip('.')}.")
    return json.loads(done.stdout)


def compare(
    shown: list[dict], over: list[str], metrics: list[str], workspace_current: bool
) -> Comparison:
    """Group the finished runs of `shown` (parsed `dvc exp show --json`) by every param except
    `over`, and summarise `metrics` (DEFAULT_METRICS if empty) in each group.

    `workspace_current`: whether `dvc status` finds the workspace up to date; if not, its
    metrics may belong to other params than params.yaml holds now, and it is left out.
    """
    runs, notes = finished_runs(shown, workspace_current)
    if not runs:
        raise PipelineError(
            "No finished experiments to compare: run some first "
            "(`dvc exp run --queue -S 'train.seed=42,43,44'`, then `dvc queue start`)."
        )
    param_names = display_names({c for run in runs for c in run.params})
    metric_names = display_names({c for run in runs for c in run.metrics})
    over_columns = [resolve(key, param_names, "param") for key in over]
    if metrics:
        chosen = [resolve(name, metric_names, "metric") for name in metrics]
    else:
        present = [n for n in DEFAULT_METRICS if any(c[1] == n for c in metric_names)]
        if not present:
            raise PipelineError(
                f"No finished run has any of the default metrics ({', '.join(DEFAULT_METRICS)}); "
                "name some with --metric."
            )
        chosen = [resolve(name, metric_names, "metric") for name in present]
    chosen = list(dict.fromkeys(chosen))  # `--metric a --metric a` is one column
    names = [metric_names[c] for c in chosen]

    measured = [run for run in runs if any(c in run.metrics for c in chosen)]
    unmeasured = [run.name for run in runs if run not in measured]
    if unmeasured:
        notes.append(f"left out, none of {', '.join(names)}: {', '.join(unmeasured)}")
    groups, group_notes = make_groups(measured, set(over_columns), param_names)
    notes += group_notes
    for column, name in zip(chosen, names, strict=True):
        lacking = [run.name for group in groups for run in group.runs if column not in run.metrics]
        if lacking:
            notes.append(f"{name}: no value in {', '.join(lacking)}; left out of its mean")
    summarised = [
        replace(g, stats={n: stat(g.runs, c) for c, n in zip(chosen, names, strict=True)})
        for g in groups
    ]
    return Comparison(
        [param_names[c] for c in over_columns], over_columns, names, summarised, notes
    )


def finished_runs(shown: list[dict], workspace_current: bool) -> tuple[list[Run], list[str]]:
    """Each finished run of `shown` that has metrics, once: commits first, then experiments,
    then the workspace; and notes naming the rows left out."""
    candidates: list[Run] = []
    unfinished: list[str] = []
    workspace = None
    for row in shown:
        if row["rev"] == "workspace":
            workspace = row
            continue
        name = row.get("name") or row["rev"][:7]
        if row.get("error"):
            unfinished.append(f"{name} ({_message(row['error'])})")
        elif row.get("data"):
            candidates.append(run_of(name, row["data"]))
        for exp in row.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp["revs"]:
                name = rev.get("name") or exp.get("name") or rev["rev"][:7]
                if state not in FINISHED:
                    unfinished.append(f"{name} ({state})")
                elif rev.get("error"):
                    unfinished.append(f"{name} ({_message(rev['error'])})")
                elif rev.get("data"):
                    candidates.append(run_of(name, rev["data"]))
    notes = [f"left out, no results of their own: {', '.join(unfinished)}"] if unfinished else []
    if workspace is not None and not workspace.get("error") and workspace.get("data"):
        run = run_of("workspace", workspace["data"])
        if workspace_current or not run.metrics:
            candidates.append(run)
        else:
            notes.append(
                "workspace: changed since its last `dvc repro` (see `dvc status`), so its "
                "metrics may be of other params; left out"
            )
    unmeasured = [run.name for run in candidates if not run.metrics]
    if unmeasured:
        notes.append(f"left out, no metrics: {', '.join(unmeasured)}")
    # After `dvc exp run` the workspace holds the last experiment; an experiment with its
    # commit's params is that commit's run again: counted twice, a run would shrink the sd.
    runs: list[Run] = []
    first: dict[str, str] = {}
    for run in candidates:
        if not run.metrics:
            continue
        if run.identity in first:
            notes.append(f"{run.name}: the same run as {first[run.identity]}; counted once")
        else:
            first[run.identity] = run.name
            runs.append(run)
    return runs, notes


def _message(error: dict) -> str:
    return error.get("msg") or "error"


def run_of(name: str, data: dict) -> Run:
    """A Run from one row's `data` of `dvc exp show --json`."""
    params = {
        (file, key): value
        for file, content in (data.get("params") or {}).items()
        for key, value in flatten(content.get("data") or {}).items()
    }
    metrics = {
        (file, key): value
        for file, content in (data.get("metrics") or {}).items()
        for key, value in flatten(content.get("data") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    deps, outs = data.get("deps") or {}, data.get("outs") or {}
    sources = {path: dep.get("hash") for path, dep in deps.items() if path not in outs}
    identity = json.dumps(
        [data.get(part) for part in ("params", "deps", "outs", "metrics")], sort_keys=True
    )
    return Run(name, params, metrics, sources, identity)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, as DVC names params and metrics (`baseline.accuracy`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def display_names(columns: set[Column]) -> dict[Column, str]:
    """Each column's name as `dvc exp show` prints it: its key, or `file:key` where two files
    have that key."""
    keys = [key for _, key in columns]
    return {
        (file, key): key if keys.count(key) == 1 else f"{file}:{key}"
        for file, key in sorted(columns)
    }


def resolve(name: str, names: dict[Column, str], kind: str) -> Column:
    """The column a user's `name` means: a key, or `file:key`."""
    for column in names:
        if name == f"{column[0]}:{column[1]}":
            return column
    matches = [column for column in names if column[1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        files = " and ".join(file for file, _ in matches)
        raise PipelineError(f"The {kind} {name} is in {files}: name one as {matches[0][0]}:{name}.")
    known = sorted(names.values())
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(known)}."
    raise PipelineError(f"No finished run has a {kind} {name!r}; {hint}")


def make_groups(
    runs: list[Run], over: set[Column], param_names: dict[Column, str]
) -> tuple[list[Group], list[str]]:
    """The runs grouped by every param not in `over` and by the code and data they ran (no
    stats yet), with a note on each set of groups that differ in code or data alone."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        fixed = sorted((c, v) for c, v in run.params.items() if c not in over)
        key = json.dumps([fixed, sorted(run.sources.items())], default=str)
        by_key.setdefault(key, []).append(run)
    members = list(by_key.values())
    # A group is named by the params that differ between groups (one a run lacks differs too).
    columns = sorted({c for run in runs for c in run.params} - over)
    varying = [c for c in columns if len({_token(m[0].params, c) for m in members}) > 1]
    groups = []
    for group_runs in members:
        params = {param_names[c]: group_runs[0].params.get(c) for c in varying}
        label = ", ".join(f"{name}={show_value(v)}" for name, v in params.items()) or "all"
        groups.append(Group(label, params, group_runs, {}))
    groups.sort(key=lambda g: ([_order(v) for v in g.params.values()], g.runs[0].name))
    # The same params on other code or data (a commit made before a code change, another
    # branch): not one configuration, so each keeps its own group, named by its first run.
    labels = Counter(group.label for group in groups)
    notes = []
    for label in [label for label, count in labels.items() if count > 1]:
        same = [group for group in groups if group.label == label]
        sources = [group.runs[0].sources for group in same]
        every = {path for source in sources for path in source}
        paths = sorted(path for path in every if len({s.get(path) for s in sources}) > 1)
        firsts = " and ".join(f"[{group.runs[0].name}]" for group in same)
        notes.append(
            f"{label}: the runs of {firsts} ran other code or data ({', '.join(paths)}); "
            "not averaged together"
        )
    named = [
        replace(group, label=f"{group.label} [{group.runs[0].name}]")
        if labels[group.label] > 1
        else group
        for group in groups
    ]
    return named, notes


def stat(runs: list[Run], column: Column) -> Stat:
    have = [run for run in runs if column in run.metrics]
    values = [run.metrics[column] for run in have]
    return Stat(
        [run.name for run in have],
        statistics.fmean(values) if values else None,
        statistics.stdev(values) if len(values) > 1 else None,
    )


def show_value(value: Any) -> str:
    """A param value as in params.yaml: strings bare, others as JSON (true, 0.001, null)."""
    return value if isinstance(value, str) else json.dumps(value)


def _token(params: dict[Column, Any], column: Column) -> str:
    """A param's value, or its absence, as a string to compare."""
    return json.dumps([column in params, params.get(column)], sort_keys=True, default=str)


def _order(value: Any) -> tuple:
    """Numbers by size, before strings, before anything else (lists, null)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    if isinstance(value, str):
        return (1, 0, value)
    return (2, 0, json.dumps(value, sort_keys=True, default=str))


def to_markdown(comparison: Comparison) -> str:
    """A table a person reads: mean ± sd to 4 places, with n where a run lacks the metric."""
    lines = [
        f"Mean ± sd over {', '.join(comparison.over)} (sample sd, n-1; — for a single run)",
        "",
        "| group | runs | " + " | ".join(comparison.metrics) + " |",
        "|---|---:|" + "---:|" * len(comparison.metrics),
    ]
    for group in comparison.groups:
        cells = [_cell(group.stats[name], len(group.runs)) for name in comparison.metrics]
        lines.append(f"| {group.label} | {len(group.runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(stat: Stat, runs: int) -> str:
    if stat.mean is None:
        return "—"
    sd = "—" if stat.sd is None else f"{stat.sd:.4f}"
    count = f" (n={len(stat.runs)})" if len(stat.runs) != runs else ""
    return f"{stat.mean:.4f} ± {sd}{count}"


def to_csv(comparison: Comparison) -> str:
    """One row per group: its label, each varying param, the run count, and per metric its
    mean, sd (empty for a single run) and n."""
    params = list(comparison.groups[0].params)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["group", *params, "runs"]
    for name in comparison.metrics:
        header += [f"{name}_mean", f"{name}_sd", f"{name}_n"]
    writer.writerow(header)
    for group in comparison.groups:
        row = [group.label, *(show_value(group.params[p]) for p in params), len(group.runs)]
        for name in comparison.metrics:
            s = group.stats[name]
            row += [_number(s.mean), _number(s.sd), len(s.runs)]
        writer.writerow(row)
    return out.getvalue()


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)


def to_json(comparison: Comparison) -> str:
    """Everything: each group's runs with their values of the params averaged over, each
    metric's n, mean, sd (null for a single run) and runs, and the notes."""
    groups = [
        {
            "group": group.label,
            "params": group.params,
            "runs": [
                {
                    "name": run.name,
                    **{
                        name: run.params.get(column)
                        for name, column in zip(
                            comparison.over, comparison.over_columns, strict=True
                        )
                    },
                }
                for run in group.runs
            ],
            "metrics": {
                name: {"n": len(s.runs), "mean": s.mean, "sd": s.sd, "runs": s.runs}
                for name, s in group.stats.items()
            },
        }
        for group in comparison.groups
    ]
    payload = {
        "over": comparison.over,
        "metrics": comparison.metrics,
        "groups": groups,
        "notes": comparison.notes,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def plot(comparison: Comparison, path: Path) -> None:
    """A bar per group and metric, its mean, with an error bar of one sd (none for a single
    run), as a PNG that `dvc plots show PATH` embeds."""
    # matplotlib loads here: ~0.4 s that `--help` and usage errors need not wait for. Figure,
    # not pyplot: no GUI backend, no global state.
    from matplotlib.figure import Figure

    groups, metrics = comparison.groups, comparison.metrics
    # Constrained layout makes room for the legend beside the bars, where it hides none.
    width_in = 3.0 + len(groups) * (0.6 + 0.3 * len(metrics))
    fig = Figure(figsize=(width_in, 4.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for i, name in enumerate(metrics):
        stats = [group.stats[name] for group in groups]
        ax.bar(
            [g + (i - (len(metrics) - 1) / 2) * width for g in range(len(groups))],
            [math.nan if s.mean is None else s.mean for s in stats],
            width,
            yerr=[math.nan if s.sd is None else s.sd for s in stats],
            capsize=3,
            label=name,
        )
    ax.set_xticks(
        range(len(groups)),
        [f"{g.label.replace(', ', chr(10))}\n{_runs(len(g.runs))}" for g in groups],
        fontsize=8,
    )
    ax.set_ylabel("mean ± sd")
    ax.set_title(f"Mean ± sd over {', '.join(comparison.over)}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    # No "Software" stamp: the PNG bytes then depend on the data alone.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
