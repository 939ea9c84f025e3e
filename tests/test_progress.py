"""Progress within an epoch: a bar on a terminal, a plain line at most every 30 s elsewhere,
nothing on other ranks, and no effect on what training computes."""

import io
import re

import pytest
import torch

from pipeline import progress
from pipeline.data import split_table
from pipeline.progress import PLAIN_EVERY_S, EpochProgress
from pipeline.training import train_model
from pipeline.vocab import build_vocab
from tests.conftest import synthetic_table, tiny_params


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """time.monotonic as the progress module sees it, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def run_steps(clock, stream, steps, seconds_per_step, enabled=True):
    with EpochProgress(3, 30, steps, 10 * steps, enabled, stream) as epoch:
        for _ in range(steps):
            clock[0] += seconds_per_step
            epoch.step()
    return stream.getvalue()


def test_without_a_terminal_a_line_at_most_every_30_seconds(clock):
    out = run_steps(clock, io.StringIO(), steps=20, seconds_per_step=7.0)
    lines = out.splitlines()
    # 140 s in all: a line at 35, 70, 105 and 140 s would be 4; the last step says nothing
    # (the epoch's own line follows it).
    assert len(lines) == 3
    assert lines[0] == "epoch 3/30: step 5/20, 50/200 rows, 1 rows/s, 105 s left"
    assert all(re.fullmatch(r"epoch 3/30: step \d+/20, \d+/200 rows, .* s left", x) for x in lines)
    assert PLAIN_EVERY_S == 30.0


def test_quick_epochs_print_nothing_without_a_terminal(clock):
    assert run_steps(clock, io.StringIO(), steps=50, seconds_per_step=0.1) == ""


def test_on_a_terminal_a_bar_of_the_rows_with_rows_per_second(clock):
    stream = Terminal()
    with EpochProgress(3, 30, 4, 40, True, stream) as epoch:
        for _ in range(4):
            epoch.step()
        assert epoch.bar.n == 40  # tqdm redraws at most every 0.1 s: count, not the drawing
    out = stream.getvalue()
    assert re.search(r"epoch 3/30: +0%\|.*\| 0/40 \[.* rows/s\]", out)
    assert out.endswith("\r")  # closed: the bar is wiped for the epoch's own line


def test_other_ranks_say_nothing(clock):
    assert run_steps(clock, Terminal(), steps=4, seconds_per_step=40.0, enabled=False) == ""
    assert run_steps(clock, io.StringIO(), steps=4, seconds_per_step=40.0, enabled=False) == ""


def test_training_on_a_terminal_gives_the_same_model(monkeypatch):
    train, val, _ = split_table(synthetic_table(["A", "B"], 15), 0.3, seed=0)
    vocab = build_vocab(train["text"], train["label"], min_freq=1, max_size=1000)
    params = tiny_params(epochs=2)
    models = []
    for stream in (io.StringIO(), Terminal()):
        monkeypatch.setattr(progress.sys, "stderr", stream)
        checkpoint = train_model(
            train, val, vocab, params.model, params.train, params.clean, lambda e, m: None
        )
        models.append(checkpoint.model.state_dict())
        if isinstance(stream, Terminal):
            assert "epoch 2/2" in stream.getvalue()
    assert models[0].keys() == models[1].keys()
    assert all(torch.equal(models[0][key], models[1][key]) for key in models[0])
