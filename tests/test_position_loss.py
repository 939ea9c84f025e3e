"""The position loss (train.position_loss): off at 0, a shuffle-detection term that reaches the
positional table above 0, blind without positions, kept out of the checkpoint, and averaged
over processes like the model's gradients."""

import dataclasses
import math
import os

import pytest
import torch
import torch.distributed as dist

from pipeline import distributed, objective
from pipeline.data import split_table
from pipeline.encoding import Batch, batches, encode_table, ngram_idf, subwords_of
from pipeline.model import TextClassifier
from pipeline.objective import Objective
from pipeline.position_loss import ShuffleDetector, reordered_bags, shuffled_order
from pipeline.training import fit, new_optimizer, train_epoch, train_model
from pipeline.vocab import build_vocab
from tests.conftest import synthetic_table, tiny_params
from tests.test_distributed import free_port, run_spawned

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def split():
    train, val, _ = split_table(synthetic_table(["A", "B"], 20), 0.3, seed=0)
    vocab = build_vocab(train["text"], train["label"], min_freq=1, max_size=1000)
    return train, val, vocab


def encoded(split, params):
    train, val, vocab = split
    subwords = subwords_of(params.model)
    add_cls = params.model.pooling == "cls"
    return tuple(
        encode_table(table, vocab, params.model.max_seq_len, add_cls, subwords)
        for table in (train, val)
    )


def new_model(split, params, seed=0):
    torch.manual_seed(seed)
    vocab = split[2]
    model = TextClassifier(len(vocab.tokens), len(vocab.labels), params.model)
    if model.ngrams is not None:
        model.ngrams.idf.copy_(ngram_idf(encoded(split, params)[0], params.model.subword_buckets))
    return model


def first_batch(split, params) -> Batch:
    return next(iter(batches(encoded(split, params)[0], 16)))


# --- off at 0 ---------------------------------------------------------------------------------


def encoder_passes(split, monkeypatch, position_loss):
    """Encoder forward passes in one epoch of fit(), and the number of training batches."""
    params = tiny_params(epochs=1, position_loss=position_loss)
    if not position_loss:  # at 0 no detector may even be built
        monkeypatch.setattr(objective, "ShuffleDetector", None)
    model = new_model(split, params)
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1) if model.training else None)
    train, val = encoded(split, params)
    fit(model, train, val, params.train, CPU, lambda e, m: None)
    return len(calls), math.ceil(len(train) / params.train.batch_size)


def test_at_weight_zero_nothing_is_built_and_the_encoder_runs_once_per_batch(split, monkeypatch):
    """No detector, no second pass (and so no random draws for it): the same training as
    before the feature (whose bytes, before issue 21 changed the model, matched the committed
    fixture of tests/test_portability.py made before it existed)."""
    passes, steps = encoder_passes(split, monkeypatch, 0.0)
    assert passes == steps


def test_above_zero_the_encoder_runs_twice_per_batch(split, monkeypatch):
    passes, steps = encoder_passes(split, monkeypatch, 0.5)
    assert passes == 2 * steps


# --- the term ---------------------------------------------------------------------------------


def term_of(model, detector, batch):
    """The detector's loss on `batch` (one random shuffle, seeded)."""
    torch.manual_seed(1)
    bags = (batch.subwords, batch.subword_counts)
    return detector(model, batch.tokens, batch.padding_mask, *bags)


def test_the_term_is_positive_and_reaches_the_learned_positional_table(split):
    params = tiny_params(position_loss=1.0)
    model = new_model(split, params).train()
    detector = ShuffleDetector(model)
    term = term_of(model, detector, first_batch(split, params))
    assert term.item() > 0
    term.backward()
    table = model.position_table()
    assert table.requires_grad
    assert table.grad is not None and table.grad.abs().sum() > 0
    assert detector.linear.weight.grad.abs().sum() > 0


def test_with_a_fixed_table_the_term_trains_the_encoder_that_reads_it(split):
    """Sinusoidal: no trainable table; the term's gradients go to the layers (attention,
    embeddings) that must turn the fixed positions into order-sensitive features."""
    params = tiny_params(position_loss=1.0, pos_encoding="sinusoidal")
    model = new_model(split, params).train()
    term_of(model, ShuffleDetector(model), first_batch(split, params)).backward()
    assert not model.position_table().requires_grad
    attention = model.encoder.transformer.layers[0].self_attn.in_proj_weight
    assert attention.grad.abs().sum() > 0


def test_the_objective_adds_the_weighted_term_to_the_classification_loss(split):
    params = tiny_params(position_loss=0.5)
    model = new_model(split, params)
    loss = Objective(model, params.train).eval()  # eval: no dropout, the same draws twice
    batch = first_batch(split, params)
    torch.manual_seed(1)
    total = loss(labels=batch.labels, **batch.inputs())
    without = Objective(model, dataclasses.replace(params.train, position_loss=0.0)).eval()
    plain = without(labels=batch.labels, **batch.inputs())
    term = term_of(model, loss.detector, batch)
    assert torch.allclose(total, plain + 0.5 * term)


def shuffled_and_not(model, batch):
    """Pooled states (eval mode) of the batch as written and of its shuffled copy."""
    detector = ShuffleDetector(model)
    torch.manual_seed(2)
    order = shuffled_order(batch.padding_mask, detector.kept_first, detector.kept_last)
    subwords, counts = reordered_bags(batch.subwords, batch.subword_counts, order)
    model = model.eval()
    out = []
    for tokens, bags, bag_counts in (
        (batch.tokens, batch.subwords, batch.subword_counts),
        (batch.tokens.gather(1, order), subwords, counts),
    ):
        states, mask = model.token_states(tokens, batch.padding_mask, bags, bag_counts)
        out.append(model.pool(states, mask))
    moved = (batch.tokens.gather(1, order) != batch.tokens).any(dim=1)
    return out, moved


def test_without_positions_a_shuffled_text_looks_like_the_text(split):
    """pos_encoding none + mean pooling: the pooled state, the detector's only input, is the
    same for a row and its shuffled copy, so the term cannot fall below chance; with learned
    positions it differs."""
    params = tiny_params(position_loss=1.0, pos_encoding="none")
    batch = first_batch(split, params)
    (written, shuffled), moved = shuffled_and_not(new_model(split, params), batch)
    assert moved.any()
    assert torch.allclose(written, shuffled, atol=1e-5)
    learned = tiny_params(position_loss=1.0)
    (written, shuffled), moved = shuffled_and_not(new_model(split, learned), batch)
    assert not torch.allclose(written[moved], shuffled[moved], atol=1e-3)


# --- the shuffle ------------------------------------------------------------------------------


def test_shuffle_moves_the_words_of_about_half_the_rows_and_keeps_the_ends_asked_for():
    lengths = torch.randint(8, 13, (400,))  # 6 or more words move: rarely back in place
    padding_mask = torch.arange(12).expand(400, 12) >= lengths.unsqueeze(1)
    torch.manual_seed(0)
    order = shuffled_order(padding_mask, kept_first=1, kept_last=1)
    position = torch.arange(12).expand(400, 12)
    assert torch.equal(order.sort(dim=1).values, position)  # a permutation of each row
    ends = padding_mask | (position == 0) | (position == lengths.unsqueeze(1) - 1)
    assert torch.equal(order[ends], position[ends])  # padding, first and last in place
    moved = (order != position).any(dim=1)
    assert 0.4 < moved.float().mean() < 0.6


def test_each_token_keeps_its_own_n_grams_when_moved():
    # Two rows of 3 and 2 tokens (then padding); token t's n-grams are t*10, t*10+1, ...
    counts = torch.tensor([[2, 1, 3], [1, 2, 0]], dtype=torch.int32)
    bags = {0: [0, 1], 1: [10], 2: [20, 21, 22], 3: [30], 4: [40, 41], 5: []}
    subwords = torch.tensor([i for t in range(6) for i in bags[t]], dtype=torch.int32)
    order = torch.tensor([[2, 0, 1], [1, 0, 2]])
    moved, moved_counts = reordered_bags(subwords, counts, order)
    expected = [i for row in range(2) for t in order[row].tolist() for i in bags[row * 3 + t]]
    assert moved.tolist() == expected
    assert moved_counts.tolist() == [[3, 2, 1], [2, 1, 0]]
    assert moved.dtype == subwords.dtype and moved_counts.dtype == counts.dtype


# --- training ---------------------------------------------------------------------------------


def test_the_detector_is_not_in_the_checkpoint_and_the_term_changes_training(split):
    train, val, vocab = split
    weights = {}
    for weight in (0.0, 1.0):
        params = tiny_params(epochs=2, position_loss=weight)
        checkpoint = train_model(
            train, val, vocab, params.model, params.train, params.clean, lambda e, m: None
        )
        weights[weight] = checkpoint.model.state_dict()
    assert weights[0.0].keys() == weights[1.0].keys()
    assert not any("detector" in key for key in weights[1.0])
    table = "encoder.positions.table"
    assert not torch.equal(weights[0.0][table], weights[1.0][table])


# --- two processes ----------------------------------------------------------------------------


def worker(rank, port, params, train, val, vocab, out):
    """One epoch at position_loss > 0 on one of two gloo processes, each with its own seed
    (as train_model seeds them); both save the model's and the detector's weights."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = new_model((train, val, vocab), params, seed=params.train.seed + rank)
    loss = Objective(model, params.train)
    net = distributed.data_parallel(loss, CPU)
    optimizer, schedule = new_optimizer(
        model, params.train, len(train), tuple(loss.detector.parameters())
    )
    data = encoded((train, val, vocab), params)[0]
    shuffle = torch.Generator().manual_seed(params.train.seed)
    train_epoch(net, data, params.train, shuffle, optimizer, schedule, CPU)
    torch.save(loss.state_dict(), f"{out}.{rank}")
    dist.destroy_process_group()


def test_on_two_processes_the_ranks_stay_identical(split, tmp_path, timeout=90):
    """Each rank shuffles other rows of other batches; the detector's gradients are averaged
    with the model's (one DDP module), so both ranks end the epoch with the same weights."""
    params = tiny_params(epochs=1, position_loss=1.0)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, processes=2))
    out = tmp_path / "weights"
    run_spawned(worker, (free_port(), params, *split, out), timeout=timeout)
    first, second = (torch.load(f"{out}.{rank}", weights_only=True) for rank in (0, 1))
    assert "detector.linear.weight" in first
    for key in first:
        assert torch.equal(first[key], second[key]), key
    model = new_model(split, params, seed=params.train.seed)
    start = Objective(model, params.train).state_dict()
    assert not torch.equal(first["detector.linear.weight"], start["detector.linear.weight"])
