"""What every command shares: user errors become one sentence and exit code 1."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from pipeline.errors import PipelineError

# A `--params` option, the same in every stage.
params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(path_type=Path),
    default="params.yaml",
    show_default=True,
    help="Parameter file (all sections are checked before any work starts).",
)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a PipelineError as `Error: <sentence>` and exit 1, without a traceback."""
    try:
        yield
    except PipelineError as err:
        raise click.ClickException(str(err)) from None
