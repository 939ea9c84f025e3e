"""Hyperparameter search: an Optuna study whose every trial is a DVC experiment. A command, not a
DVC stage.

python stages/tune.py --space tune.yaml --trials 16
python stages/tune.py --space tune.yaml --trials 16 --jobs 2 --study lr-search
python stages/tune.py --study lr-search --report
"""

import sys
from pathlib import Path

import click

# The library of this work tree, as the stages use it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import params_option, user_errors
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.tuning import load_space

# Study names become experiment names (<study>-<n>) and so git ref names.
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@click.command()
@click.option(
    "--space",
    "space_path",
    type=click.Path(path_type=Path),
    default="tune.yaml",
    show_default=True,
    help="Search space: the params to search, their ranges, fixed values and the pruner.",
)
@click.option("--trials", type=click.IntRange(min=1), help="Trials the study holds in the end.")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Trials at a time."
)
@click.option(
    "--study",
    "study_name",
    default="tune",
    show_default=True,
    help="Study name; its experiments are named <study>-<trial number>.",
)
@click.option(
    "--storage",
    help="Optuna storage URL (postgresql://user:pass@host/db for many machines). "
    "Default: sqlite:///tune.db in the repository (git-ignored).",
)
@click.option(
    "--metric",
    default="accuracy",
    show_default=True,
    help="Validation metric as `dvc exp show` names it (accuracy: the model's on the "
    "validation rows; macro_f1; baseline.accuracy).",
)
@click.option(
    "--direction",
    type=click.Choice(["maximize", "minimize"]),
    default="maximize",
    show_default=True,
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the TPE sampler.")
@click.option("--report", "report_only", is_flag=True, help="Only print the study's report.")
@params_option
def main(
    space_path: Path,
    trials: int | None,
    jobs: int,
    study_name: str,
    storage: str | None,
    metric: str,
    direction: str,
    seed: int,
    report_only: bool,
    params_path: Path,
) -> None:
    """Run an Optuna study (TPE, seeded) whose every trial is `dvc exp run --temp -n
    <study>-<n> -S ...` over the space of --space, until the study holds --trials trials (a
    rerun continues it), and print the report: the best trial, `dvc exp apply` for it, every
    trial, and the plots' files under reports/tune/<study>/.

    Hopeless trials are pruned after an epoch (per tune.yaml's pruner) on the train stage's
    per-epoch validation accuracy (val_loss with --direction minimize). Test rows are never
    read: the objective is a validation metric of the experiment's commit.
    """
    repo = Path.cwd()
    storage = storage or f"sqlite:///{repo / 'tune.db'}"
    out_dir = Path("reports", "tune", study_name)  # inside the repository: dvc plots show it
    with user_errors():
        if not study_name or not set(study_name) <= NAME_CHARS:
            raise PipelineError(
                f"--study {study_name!r} may hold only letters, digits and _ (it names "
                "experiments)."
            )
        if trials is None and not report_only:
            raise PipelineError("Pass --trials N (the trials the study holds in the end).")
        params = load_params(params_path)
        space = load_space(space_path, params)
        # Optuna, SQLAlchemy and matplotlib load here: `--help` and usage errors need not wait.
        from pipeline import study as tuning

        study = tuning.open_study(
            storage, study_name, direction, seed, space.pruner, create=not report_only
        )
        if not report_only:
            baseline = tuning.git(repo, "rev-parse", "HEAD").strip()
            # Fail before any trial on a metric that HEAD's committed metrics lack.
            committed = tuning.metrics_at(repo, baseline)
            if committed:
                tuning.metric_column(committed, metric)
            setup = tuning.Setup(repo, params, space, metric, baseline, repo / out_dir / "logs")
            try:
                tuning.run_study(study, setup, trials, jobs, click.echo)
            except KeyboardInterrupt:
                click.echo(
                    "Interrupted: the running trials are stopped and marked failed; rerun "
                    "the same command to continue the study.",
                    err=True,
                )
                sys.exit(130)
        click.echo(tuning.report(study, metric, out_dir), nl=False)


if __name__ == "__main__":
    main()
