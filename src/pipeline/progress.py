"""Progress within a training epoch, so that a long epoch is not minutes of silence.

On a terminal a tqdm bar of the epoch's rows, with rows/s and the time left; where stderr is no
terminal (a `dvc queue logs` file, CI, a pipe) a plain line at most every PLAIN_EVERY_S
seconds, since a bar's carriage returns make one endless line there. Only rank 0 reports (the
other processes take the same steps). It reads no random numbers and writes no file, so the
model's bytes and the metrics do not depend on it.
"""

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 30.0


class EpochProgress:
    """Counts the optimizer steps of one epoch as they end: `step()` after each."""

    def __init__(
        self,
        epoch: int,
        epochs: int,
        steps: int,
        rows: int,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        """`steps` in the epoch, `rows` they take in all (over every process)."""
        self.label = f"epoch {epoch}/{epochs}"
        self.steps, self.rows, self.done = steps, rows, 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.start = self.last = time.monotonic()
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(
                total=rows, desc=self.label, unit=" rows", leave=False, file=self.stream
            )

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        # Rows per step are the batch size on every process, fewer in the last step.
        rows_done = self.rows if self.done == self.steps else self.rows * self.done // self.steps
        if self.bar is not None:
            self.bar.update(rows_done - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY_S and self.done < self.steps:
            self.last = now
            rate = rows_done / (now - self.start)
            left = (self.rows - rows_done) / rate
            print(
                f"{self.label}: step {self.done}/{self.steps}, {rows_done}/{self.rows} rows, "
                f"{rate:.0f} rows/s, {left:.0f} s left",
                file=self.stream,
                flush=True,
            )

    def __enter__(self) -> "EpochProgress":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.close()  # leave=False: the bar gives way to the epoch's own line
