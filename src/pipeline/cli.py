"""What every command shares: user errors become one sentence and exit code 1."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from pipeline.errors import PipelineError
from pipeline.files import all_or_nothing

# Options several stages share, defined once.
params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(path_type=Path),
    default="params.yaml",
    show_default=True,
    help="Parameter file (all sections are checked before any work starts).",
)
train_option = click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Training rows written by the split stage.",
)
test_option = click.option(
    "--test",
    "test_path",
    type=click.Path(path_type=Path),
    help="Test rows written by the split stage; when it has rows, metrics.json gets their "
    "scores under `test`.",
)
val_option = click.option(
    "--val",
    "val_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Validation rows written by the split stage.",
)


@contextmanager
def user_errors(*outputs: Path) -> Iterator[None]:
    """Print a PipelineError as `Error: <sentence>` and exit 1, without a traceback.

    If the block fails or is interrupted, whatever it wrote to `outputs` is removed (see
    files.all_or_nothing), so DVC never sees a stage that stopped halfway as finished.
    """
    # SIGTERM (`kill`, a CI timeout) stops the stage like Ctrl-C does: with the clean-up below
    # and exit code 1, instead of dying on the spot with temporary files left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with all_or_nothing(*outputs):
            yield
    except PipelineError as err:
        raise click.ClickException(str(err)) from None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
