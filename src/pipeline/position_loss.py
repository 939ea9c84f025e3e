"""The position loss (train.position_loss): an auxiliary objective that only word order can meet.

Shuffle detection: each training batch is encoded a second time with the words of a random
half of its rows shuffled, and a linear detector on the pooled encoder state (the vector the
classifier's head reads) tells which rows were shuffled. The weighted binary cross-entropy of
the detector is added to the classification loss.

Why this and not predicting each token's position from its state: the states carry the
positional table through the residual connections, so a linear probe reads a token's index off
the table that was added at the input, and that loss is met by making the table's rows
distinguishable, with no feature that depends on the order of the words; and mean pooling then
averages that component over the text's positions, so what the classifier reads gains nothing.
Telling a text from its shuffled copy can only be done by features of the pooled vector that
change when words change places, which is what a classifier needs in order to use word order.
Without positions (pos_encoding none, mean pooling) the encoder is permutation-equivariant, the
pooled state of a shuffled row is that of the row as written, and the term stays at chance.
The cost: one more encoder pass (forward and backward) per batch.

The detector is a training-time object (pipeline.objective): it is not part of TextClassifier,
so it never enters the checkpoint, and predict rebuilds the model from the checkpoint alone.
"""

import torch
from torch import nn

from pipeline.model import PretrainedEncoder, TextClassifier


class ShuffleDetector(nn.Module):
    """A linear detector on the pooled state of the model's encoder. It holds no reference to
    the model (pipeline.objective holds both, so that one DDP wrap averages the detector's
    gradients over the processes as it does the model's, and the ranks stay equal)."""

    def __init__(self, model: TextClassifier) -> None:
        super().__init__()
        self.linear = nn.Linear(model.encoder.width, 1)
        # Tokens that keep their places: the <cls> token that cls pooling reads; a pretrained
        # encoder's [CLS] first and [SEP] last (else a misplaced [SEP] would give the shuffle
        # away without any feature of the words' order).
        pretrained = isinstance(model.encoder, PretrainedEncoder)
        self.kept_first = 1 if pretrained or model.pooling == "cls" else 0
        self.kept_last = 1 if pretrained else 0

    def forward(
        self,
        model: TextClassifier,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The mean binary cross-entropy of telling, from `model`'s pooled encoder states,
        which rows of a copy of the batch (inputs as TextClassifier.forward) had their words
        shuffled: a random half of them."""
        order = shuffled_order(padding_mask, self.kept_first, self.kept_last)
        mixed = tokens.gather(1, order)
        if subwords is not None and subword_counts is not None:
            subwords, subword_counts = reordered_bags(subwords, subword_counts, order)
        # A row whose shuffle left it as it was (one word, repeated words) counts as unshuffled.
        shuffled = (mixed != tokens).any(dim=1).float()
        states, mask = model.token_states(mixed, padding_mask, subwords, subword_counts)
        score = self.linear(model.pool(states, mask)).squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(score, shuffled)


def shuffled_order(padding_mask: torch.Tensor, kept_first: int, kept_last: int) -> torch.Tensor:
    """For each row, the old position of the token at each new position (batch, seq): the
    real tokens of a random half of the rows shuffled, bar the first `kept_first` and the last
    `kept_last`; padding and the other rows in place. Drawn from torch's global generator,
    which make_deterministic seeds."""
    batch, seq = padding_mask.shape
    device = padding_mask.device
    position = torch.arange(seq, device=device).expand(batch, seq)
    lengths = (~padding_mask).sum(dim=1, keepdim=True)
    chosen = torch.rand(batch, 1, device=device) < 0.5
    movable = chosen & (position >= kept_first) & (position < lengths - kept_last)
    # Sort keys: a moving token gets a random place among the moving ones, the rest their own.
    spread = torch.rand(batch, seq, device=device) * (lengths - kept_last - kept_first)
    keys = torch.where(movable, kept_first + spread, position.to(spread.dtype))
    return keys.argsort(dim=1, stable=True)


def reordered_bags(
    subwords: torch.Tensor, subword_counts: torch.Tensor, order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's flat sub-word ids and per-token counts (see encoding.Batch) with the tokens
    of each row moved as `order` says, so that every token keeps its own n-grams."""
    batch, seq = subword_counts.shape
    counts = subword_counts.flatten().long()
    starts = counts.cumsum(0) - counts
    rows = torch.arange(batch, device=order.device).unsqueeze(1) * seq
    source = (order + rows).flatten()  # the old flat index of each new token
    moved = counts[source]
    first = torch.repeat_interleave(starts[source], moved)
    within = torch.arange(len(first), device=first.device) - torch.repeat_interleave(
        moved.cumsum(0) - moved, moved
    )
    return subwords[first + within], moved.view(batch, seq).to(subword_counts.dtype)
