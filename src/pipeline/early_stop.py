"""Stopping training from outside, after an epoch: what stages/tune.py and the train stage share.

The train stage stops after any epoch at whose end the file STOP_FILE names exists, and writes
its model and the metrics of the epochs done, with STOPPED_AT (the last epoch trained) in its
metrics.json, so that `dvc exp show` tells the run apart. stages/tune.py sets the variable for
each trial, to stop a pruned one. An environment variable, not a param: when to stop is the
caller's word, no part of what DVC records; unset, every epoch runs, as before.
"""

import os
from pathlib import Path

STOP_FILE = "PIPELINE_STOP_FILE"
STOPPED_AT = "stopped_at_epoch"


def stop_file() -> Path | None:
    """The file whose existence stops training, if the environment names one."""
    path = os.environ.get(STOP_FILE)
    return Path(path) if path else None
