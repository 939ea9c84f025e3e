"""Data-parallel training: the batch shares of each step, and one optimizer step on two gloo
processes against the same step on one process."""

import dataclasses
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.data import split_table
from pipeline.encoding import batches, encode_table, ngram_idf, subwords_of
from pipeline.model import TextClassifier
from pipeline.training import fit, step_batches
from pipeline.vocab import build_vocab
from tests.conftest import synthetic_table, tiny_params

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    table = synthetic_table(["A", "B", "C"], 40)
    vocab = build_vocab(table["text"], table["label"], min_freq=1, max_size=1000)
    return encode_table(table, vocab, 32, False, subwords_of(tiny_params().model))


def shares(data, batch_size, world, seed=3):
    return [
        list(step_batches(data, batch_size, torch.Generator().manual_seed(seed), rank, world))
        for rank in range(world)
    ]


def test_one_process_takes_the_batches_of_today(data):
    """With one process every batch is the one `batches` makes, with weight 1.0: the same
    bits as before data parallelism."""
    (mine,) = shares(data, 8, world=1)
    expected = list(batches(data, 8, torch.Generator().manual_seed(3)))
    assert len(mine) == len(expected)
    for (batch, weight), want in zip(mine, expected, strict=True):
        assert weight == 1.0
        assert batch.index == want.index
        for name in ("tokens", "padding_mask", "subwords", "labels", "ngram_ids", "ngram_counts"):
            assert torch.equal(getattr(batch, name), getattr(want, name)), name


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_takes_every_step_and_every_row_counts_once(data, world):
    # 120 rows in batches of 7: 18 batches, so the last step leaves ranks without a batch.
    per_rank = shares(data, 7, world)
    steps = len(per_rank[0])
    assert all(len(mine) == steps for mine in per_rank)  # no rank waits for a missing step
    assert steps == -(-18 // world)
    counted = [i for mine in per_rank for batch, weight in mine if weight > 0 for i in batch.index]
    assert sorted(counted) == list(range(len(data)))
    for step in range(steps):
        taken = [mine[step] for mine in per_rank]
        rows = sum(len(batch.index) for batch, weight in taken if weight > 0)
        for batch, weight in taken:  # weight = share of the step's rows x world
            assert weight == pytest.approx(len(batch.index) * world / rows if weight else 0.0)
        # DDP averages: sum of weight x (mean loss of the batch) / world = mean over the rows.
        assert sum(weight for _, weight in taken) / world == pytest.approx(1.0)


@pytest.mark.parametrize("world", [2, 3])
def test_a_step_takes_batches_of_similar_length(data, world):
    """The batches of one step are neighbours in length (the batches sorted by their longest
    row, taken `world` at a time), so no rank pads far longer than another and waits for it."""
    per_rank = shares(data, 7, world)
    steps = [
        sorted(max(len(data.ids[i]) for i in batch.index) for batch, weight in taken if weight)
        for taken in zip(*per_rank, strict=True)
    ]
    longest = sorted(length for step in steps for length in step)
    assert sorted(steps) == [longest[i : i + world] for i in range(0, len(longest), world)]
    assert len(set(map(tuple, steps))) > 1  # the data has batches of several lengths


# --- one step on two processes ----------------------------------------------------------------


def model_after_fit(params, train, val, vocab, on_epoch):
    """A fresh model of seed train.seed, trained by fit() in this process (of a group or not)."""
    config = params.model
    subwords = subwords_of(config)
    train_data = encode_table(train, vocab, config.max_seq_len, False, subwords)
    val_data = encode_table(val, vocab, config.max_seq_len, False, subwords)
    torch.manual_seed(params.train.seed)
    torch.set_num_threads(1)
    model = TextClassifier(len(vocab.tokens), len(vocab.labels), config)
    model.ngrams.idf.copy_(ngram_idf(train_data, config.subword_buckets))
    fit(model, train_data, val_data, params.train, CPU, on_epoch)
    return model


def worker(rank, world, port, runs, out):
    """One of `world` spawned processes (of a gloo group when more than one): fit() for each
    (params, train, val, vocab, stop) of `runs`, where this rank's on_epoch asks to stop after
    the epoch stop[rank] (None: never); rank 0 saves the weights and metrics."""
    if world > 1:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    results = []
    for params, train, val, vocab, stop in runs:
        epochs = []

        def on_epoch(epoch, metrics, seen=epochs, last=stop[rank]):
            seen.append(metrics)
            return epoch == last

        model = model_after_fit(params, train, val, vocab, on_epoch)
        results.append((model.state_dict(), epochs))
    if rank == 0:
        torch.save(results, out)
    if world > 1:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_spawned(function, args, processes=2, timeout=90) -> None:
    """Run `function(rank, *args)` on `processes` spawned processes; kill them and fail (not
    hang) if they do not finish in time."""
    context = mp.start_processes(
        function, args=args, nprocs=processes, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"training on {processes} processes did not finish in {timeout} s")


def on_processes(processes, runs, out, timeout=90):
    """Run `worker` on `processes` fresh processes; return what rank 0 saved. The run on one
    process is spawned too: a fresh interpreter, as the group's are, whatever earlier tests
    did to this one (kernels chosen, flags set) cannot make the two differ."""
    run_spawned(worker, (processes, free_port(), runs, out), processes, timeout)
    return torch.load(out, weights_only=False)


def test_a_step_on_two_processes_is_the_step_on_one_over_the_same_rows(tmp_path):
    """16 training rows: one step of 2 x 8 rows on two processes, one step of 16 on one.
    Dropout off (the ranks draw other masks than one process would)."""
    split_rows = split_table(synthetic_table(["A", "B"], 12), 1 / 3, seed=0)
    train, val = split_rows[0], split_rows[1]
    assert len(train) == 16
    vocab = build_vocab(train["text"], train["label"], min_freq=1, max_size=1000)
    off = dict(
        epochs=1,
        dropout=0.0,
        attention_dropout=0.0,
        transformer_dropout=0.0,
        warmup_share=0.0,
        lr=1e-4,
    )
    two = tiny_params(batch_size=8, **off)
    one = dataclasses.replace(two, train=dataclasses.replace(two.train, batch_size=16))
    # And a run whose epochs end unevenly (3 batches of 8 on 2 processes): it must finish.
    uneven = tiny_params(batch_size=6, epochs=2)
    # And one that rank 1 alone asks to stop after epoch 1 of 3: rank 0 stops there too (had
    # it not, it would wait for rank 1 in epoch 2, and the run time out).
    never = (None, None)
    (stepped, metrics), (_, uneven_epochs), (_, stopped_epochs) = on_processes(
        2,
        [
            (two, train, val, vocab, never),
            (uneven, train, val, vocab, never),
            (tiny_params(epochs=3), train, val, vocab, (None, 1)),
        ],
        tmp_path / "two.pt",
    )
    assert len(uneven_epochs) == 2
    assert len(stopped_epochs) == 1
    ((alone, alone_metrics),) = on_processes(
        1, [(one, train, val, vocab, (None,))], tmp_path / "one.pt"
    )
    assert stepped.keys() == alone.keys()
    torch.manual_seed(two.train.seed)
    fresh = TextClassifier(len(vocab.tokens), len(vocab.labels), two.model)
    initial, buffers = fresh.state_dict(), {name for name, _ in fresh.named_buffers()}
    # AdamW's first step: w(1 - lr wd) - lr g / (|g| + eps). Its step without the decay is a
    # full lr wherever |g| >> eps; where the exact gradient is zero or within rounding of it
    # (the attention's key bias: softmax ignores a shift) it is rounding noise scaled by
    # 1 / eps, which another summation order (8 + 8 rows, not 16) or CPU changes. So the full
    # steps must agree (a wrong share of rows flips some by 2 lr), and thousands of weights
    # must have taken one.
    lr = two.train.lr
    full_steps = 0
    for key in alone:
        if key in buffers:  # the n-gram idf, the encoder share: set, not stepped
            assert torch.equal(stepped[key], alone[key]), key
            continue
        decay = lr * two.train.weight_decay * initial[key]
        step_one = alone[key] - initial[key] + decay
        step_two = stepped[key] - initial[key] + decay
        # |g| above 99 eps: a rounding error d in g moves the step by lr eps d / g^2, < 1e-8.
        full = step_one.abs() > 0.99 * lr
        full_steps += int(full.sum())
        assert torch.allclose(step_two[full], step_one[full], rtol=0, atol=1e-6), key
    assert full_steps > 1000
    # The metrics after the epoch are over all rows on both: the same numbers.
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert metrics[0][name] == pytest.approx(alone_metrics[0][name], abs=1e-6), name
