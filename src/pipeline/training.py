"""The training loop: seeded, deterministic, progress within each epoch and a line after it."""

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import distributed, pretrained
from pipeline.checkpoint import Checkpoint
from pipeline.config import CleanParams, ModelParams, Part, TrainParams
from pipeline.encoding import (
    Batch,
    Encoded,
    batch_indices,
    batches,
    encode_table,
    ngram_idf,
    subwords_of,
)
from pipeline.errors import PipelineError
from pipeline.model import TextClassifier, mixture_logits
from pipeline.objective import Objective
from pipeline.predict import predict_logits
from pipeline.pretrained import WordPieces
from pipeline.progress import EpochProgress
from pipeline.vocab import Vocab


def make_deterministic(seed: int, threads: int) -> None:
    """Same params on the same machine give the same bits: seed everything, fix the threads."""
    # Must be set before the first cuBLAS call for deterministic CUDA matmuls.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # As use_deterministic_algorithms(True), which also imports the torch.compile stack
    # (2-4 s of start-up) to set an option of its own; nothing here compiles.
    torch.set_deterministic_debug_mode("error")
    # Float sums depend on how work is split between threads, so the count is a parameter.
    torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device is 'cuda' but no CUDA GPU is available; use 'auto'.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup to 1, then cosine decay towards 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def rows_of(data: Encoded, index: list[int]) -> Encoded:
    """The rows `index` of `data`, in that order."""
    words = None if data.words is None else data.words.take(index)
    return dataclasses.replace(
        data, ids=data.ids.take(index), labels=data.labels[index], words=words
    )


def batch_of(data: Encoded, index: list[int]) -> Batch:
    """The batch of rows `index` (sorted by length, as batch_indices makes them), padded as
    `batches` pads: one batch of a table of exactly those rows, whose sort keeps their order."""
    (batch,) = batches(rows_of(data, index), len(index))
    return dataclasses.replace(batch, index=index)


def step_batches(
    data: Encoded, batch_size: int, generator: torch.Generator, rank: int, world: int
) -> Iterator[tuple[Batch, float]]:
    """This process's batch for each optimizer step of one epoch, and the weight of its loss.

    Every process draws the same length-grouped batch list from the same seeded generator.
    With one process each step is its batch, in that list's order. With more, a step takes
    `world` batches of similar length (the batches sorted by their longest row, taken `world`
    at a time; the steps then in a seeded random order), and rank r the r-th of them: a step of
    a short and a long batch would make the rank with the short one wait for the other in
    every all-reduce. The weight is the batch's share of the step's rows times `world` (1.0
    with one process), so that the gradients DDP averages over the processes make the gradient
    of the mean loss over all the step's rows. In a step of fewer batches than processes, a
    rank left without one repeats the step's first with weight 0: every rank must take every
    step (DDP waits for all of them), and no row is dropped or counted twice.
    """
    lengths = data.ids.lengths()
    groups = batch_indices(lengths, batch_size, generator)
    if world == 1:
        for group in groups:
            yield batch_of(data, group), 1.0
        return
    by_length = sorted(groups, key=lambda group: max(lengths[i] for i in group))
    steps = [by_length[first : first + world] for first in range(0, len(by_length), world)]
    for s in torch.randperm(len(steps), generator=generator).tolist():
        step = steps[s]
        if rank < len(step):
            yield batch_of(data, step[rank]), len(step[rank]) * world / sum(map(len, step))
        else:
            yield batch_of(data, step[0]), 0.0


def all_logits(
    model: nn.Module, data: Encoded, batch_size: int, device: torch.device, part: Part = "both"
) -> torch.Tensor:
    """predict_logits over every row of `data`, the rows shared between the processes: each
    scores every world-th row, and the sum over processes of these (zeros elsewhere) is exact."""
    world = distributed.world_size()
    if world == 1:
        return predict_logits(model, data, batch_size, device, part)
    mine = list(range(distributed.rank(), len(data), world))
    scored = predict_logits(model, rows_of(data, mine), batch_size, device, part)
    logits = scored.new_zeros(len(data), scored.shape[1])
    logits[mine] = scored
    return distributed.sum_across(logits, device)


def steps_per_epoch(train_rows: int, batch_size: int) -> int:
    """Optimizer steps in an epoch: a step takes one batch on each process."""
    return math.ceil(math.ceil(train_rows / batch_size) / distributed.world_size())


def warmup_steps(params: TrainParams, epoch_steps: int) -> int:
    """Warm-up length in optimizer steps: a share of the run, so it never outlasts the run."""
    return round(params.warmup_share * params.epochs * epoch_steps)


def scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Plain cross-entropy (no label smoothing) and accuracy of logits against labels."""
    loss = nn.functional.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(dim=1) == labels).float().mean().item()


def new_optimizer(
    model: TextClassifier,
    params: TrainParams,
    train_rows: int,
    extra: tuple[nn.Parameter, ...] = (),
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the model's weights (a pretrained encoder's at train.encoder_lr) and the
    `extra` ones at train.lr (the position loss's detector), and its warm-up + cosine schedule
    over the whole run of `train_rows` rows per epoch (a step takes one batch on each
    process)."""
    steps = steps_per_epoch(train_rows, params.batch_size)
    encoder = model.encoder.encoder_parameters()
    weights = [*model.parameters(), *extra]
    if encoder:  # a pretrained encoder learns at its own, far smaller rate than the new weights
        mine = {id(p) for p in encoder}
        rest = [p for p in weights if id(p) not in mine]
        groups = [{"params": rest}, {"params": encoder, "lr": params.encoder_lr}]
    else:
        groups = weights
    # fused: one kernel per weight instead of a dozen ops, each a pass over the 20,001-row
    # embedding tables (bench/compare.py: +8-16 % rows/s).
    optimizer = torch.optim.AdamW(
        groups, lr=params.lr, weight_decay=params.weight_decay, fused=True
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(warmup_steps(params, steps), params.epochs * steps),
    )
    return optimizer, schedule


def train_epoch(
    net: nn.Module,
    data: Encoded,
    params: TrainParams,
    shuffle: torch.Generator,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    on_step: Callable[[], None] = lambda: None,
) -> None:
    """One pass over `data` in training mode: this process's share of every step, then
    `on_step()`. `net` is the model's Objective (maybe in DDP), whose forward gives a batch's
    loss."""
    net.train()
    rank, world = distributed.rank(), distributed.world_size()
    for batch, weight in step_batches(data, params.batch_size, shuffle, rank, world):
        batch = batch.to(device)
        loss = net(labels=batch.labels, **batch.inputs()) * weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)
        optimizer.step()
        schedule.step()
        on_step()


def fit(
    model: TextClassifier,
    train: Encoded,
    val: Encoded,
    params: TrainParams,
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], bool | None],
) -> None:
    """Train `model` in place for `params.epochs` epochs, reporting each epoch to `on_epoch`;
    when it returns True, stop after that epoch.

    After each epoch both splits are scored the same way (eval mode, plain cross-entropy), so
    the train and validation curves compare like with like.

    In a process group (train.processes > 1) every process runs this with the same arguments:
    a step takes one batch on each (see step_batches), and every process gets the same
    metrics, over all rows. A True from any process's `on_epoch` stops all of them after the
    same epoch.

    The loss is pipeline.objective's. With train.position_loss above 0 its shuffle detector
    trains with the model and is dropped at the end: it is no part of the model.
    """
    model.to(device)
    objective = Objective(model, params).to(device)
    net = distributed.data_parallel(objective, device)  # `objective` itself with one process
    extra = () if objective.detector is None else tuple(objective.detector.parameters())
    optimizer, schedule = new_optimizer(model, params, len(train), extra)
    # A generator of our own: the shuffling order depends on the seed and nothing else.
    shuffle = torch.Generator().manual_seed(params.seed)
    steps = steps_per_epoch(len(train), params.batch_size)
    main_rank = distributed.rank() == 0
    for epoch in range(1, params.epochs + 1):
        start = time.perf_counter()
        with EpochProgress(epoch, params.epochs, steps, len(train), main_rank) as progress:
            train_epoch(net, train, params, shuffle, optimizer, schedule, device, progress.step)
        # With an n-gram path the epoch ends by choosing the paths' mixture (as the model
        # predicts with it from then on), so that the last epoch's scores are the model's.
        if model.ngrams is not None:
            val_logits = choose_encoder_share(model, val, params.batch_size, device)
        else:
            val_logits = all_logits(model, val, params.batch_size, device)
        val_loss, val_accuracy = scores(val_logits, val.labels)
        train_loss, train_accuracy = scores(
            all_logits(model, train, params.batch_size, device), train.labels
        )
        metrics = {
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": time.perf_counter() - start,
        }
        # Summed over the processes: each must stop when any does, or the others would wait
        # in the next epoch's first step for one that has left.
        stop = torch.tensor([float(bool(on_epoch(epoch, metrics)))])
        if distributed.sum_across(stop, device).item() > 0:
            break


# The encoder's shares in the mixture of the two paths' probabilities that are tried.
ENCODER_SHARES = tuple(i / 10 for i in range(11))


def choose_encoder_share(
    model: TextClassifier, val: Encoded, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Set the encoder's share in the model's mixture of its two paths' probabilities to the
    one of ENCODER_SHARES with the lowest log-loss on the validation rows (the first on a tie),
    and return those rows' logits at that share. Each path fits the training rows, so only
    held-out rows tell which one generalises: on the two real files mostly the n-gram path, on
    the order control the encoder (docs/results.md). The validation rows thus choose one
    number; split.test_size keeps rows that nothing sees."""
    encoder = all_logits(model, val, batch_size, device, "transformer")
    ngrams = all_logits(model, val, batch_size, device, "ngrams")
    shares = [torch.tensor(share) for share in ENCODER_SHARES]
    mixtures = [mixture_logits(encoder, ngrams, share) for share in shares]
    losses = [nn.functional.cross_entropy(logits, val.labels).item() for logits in mixtures]
    best = losses.index(min(losses))
    model.encoder_share.copy_(shares[best])
    return mixtures[best]


@dataclasses.dataclass
class Prepared:
    """A fresh model and the rows it trains on, encoded once."""

    model: TextClassifier
    train: Encoded
    val: Encoded
    # The pretrained encoder's config.json and tokenizer.json (None from scratch).
    encoder: dict | None


def prepare(
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    vocab: Vocab,
    config: ModelParams,
    pretrained_dir: Path | None = None,
) -> Prepared:
    """Encode the tables and build an untrained model from `config` (with a pretrained
    encoder's weights, read from `pretrained_dir`, and the n-gram idf of the training rows)."""
    encoder = weights = word_pieces = None
    if config.encoder == "pretrained":
        if pretrained_dir is None:
            raise PipelineError("model.encoder 'pretrained' needs the exported encoder's files.")
        encoder_config, tokenizer, weights = pretrained.read_files(pretrained_dir)
        encoder = {"config": encoder_config, "tokenizer": tokenizer}
        word_pieces = WordPieces(tokenizer)
    add_cls = config.pooling == "cls"
    subwords = subwords_of(config)
    args = (vocab, config.max_seq_len, add_cls, subwords, word_pieces)
    train, val = encode_table(train_table, *args), encode_table(val_table, *args)
    model = TextClassifier(
        len(vocab.tokens),
        len(vocab.labels),
        config,
        encoder_config=None if encoder is None else encoder["config"],
        encoder_weights=weights,
    )
    if model.ngrams is not None:
        model.ngrams.idf.copy_(ngram_idf(train, config.subword_buckets))
    return Prepared(model, train, val, encoder)


def train_model(
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    vocab: Vocab,
    config: ModelParams,
    params: TrainParams,
    clean: CleanParams,
    on_epoch: Callable[[int, dict[str, float]], bool | None],
    pretrained_dir: Path | None = None,
) -> Checkpoint:
    """Encode the tables once, build a fresh model from `config`, train it as `params` say;
    return it as a checkpoint (of the epochs done, if `on_epoch` stopped it early: see fit).
    With model.encoder 'pretrained', the encoder, its weights and its tokenizer are read from
    `pretrained_dir` (the files the pretrained stage exports).

    Under a launcher (train.processes > 1) every process calls this and joins the process
    group here. Rank r seeds its random streams (dropout) with seed + r, so rank 0 draws
    what a single process draws; DDP gives every rank rank 0's initial weights.
    """
    make_deterministic((params.seed + distributed.rank()) % 2**32, params.threads)
    device = resolve_device(params.device)
    ready = prepare(train_table, val_table, vocab, config, pretrained_dir)
    model = ready.model
    table = model.position_table()
    initial = (
        table[: config.max_seq_len].detach().clone() if config.pos_encoding == "learned" else None
    )
    with distributed.process_group(device, params.processes) as device:
        fit(model, ready.train, ready.val, params, device, on_epoch)
    longest = max(ready.train.ids.lengths())
    return Checkpoint(
        model.cpu().eval(),
        vocab,
        config,
        clean,
        params.threads,
        initial,
        longest,
        pretrained=ready.encoder,
    )
