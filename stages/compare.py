"""Seed-averaged comparisons of the experiments `dvc exp show` lists. A command, not a DVC stage.

python stages/compare.py --over train.seed
python stages/compare.py --over train.seed --metric accuracy --metric baseline.accuracy --format csv
"""

import sys
from pathlib import Path

import click

# The library of this work tree, as the stages use it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import user_errors
from pipeline.compare import DEFAULT_METRICS, compare, dvc_json, plot, to_csv, to_json, to_markdown

FORMATS = {"md": to_markdown, "csv": to_csv, "json": to_json}


@click.command()
@click.option(
    "--over",
    multiple=True,
    required=True,
    help="A param the runs of a group differ in, averaged over (train.seed); repeat for more.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="A metric as `dvc exp show` names it (accuracy, baseline.accuracy, or "
    f"reports/eval/metrics.json:accuracy); repeat for more. Default: {', '.join(DEFAULT_METRICS)}.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="md",
    show_default=True,
    help="Output: a Markdown table, CSV, or JSON with every run.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    default="reports/compare/compare.png",
    show_default=True,
    help="PNG bar chart with error bars to write; `dvc plots show PATH` draws it (PATH inside "
    "the repository). Not a stage output.",
)
@click.option(
    "-a",
    "--all-branches",
    is_flag=True,
    help="Also the tips of all branches and their experiments (as `dvc exp show -a`).",
)
def main(
    over: tuple[str, ...],
    metrics: tuple[str, ...],
    fmt: str,
    plot_path: Path,
    all_branches: bool,
) -> None:
    """Group the finished runs (commits, experiments, the workspace) by every param except
    --over, and print each group's number of runs and mean ± sd (n-1) of each metric.

    Failed and queued experiments, and runs without a metric, are named on stderr and left out
    (of that metric's mean); a run shown twice (the workspace after `dvc exp run`) counts once;
    runs of the same params on other code or data keep groups of their own.
    """
    with user_errors(plot_path):
        shown = dvc_json("exp", "show", *(["--all-branches"] if all_branches else []))
        # Its metrics are only its params' if nothing changed since its last `dvc repro`.
        workspace_current = dvc_json("status") == {}
        comparison = compare(shown, list(over), list(metrics), workspace_current)
        plot(comparison, plot_path)
    for note in comparison.notes:
        click.echo(note, err=True)
    click.echo(FORMATS[fmt](comparison), nl=False)
    click.echo(f"plot -> {plot_path}", err=True)


if __name__ == "__main__":
    main()
