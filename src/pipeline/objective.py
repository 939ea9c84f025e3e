"""What training minimises, in one module, so that one DDP wrap covers every weight it trains.

- Cross-entropy of the logits the paths train through: the encoder's alone, or with an n-gram
  path the sum of both (TextClassifier.joint_logits).
- With an n-gram path, also the cross-entropy of the encoder's logits alone. Without it the
  n-gram path soon fits (memorises) the training rows by itself, the sum's loss falls near 0,
  and the encoder is left nothing to learn: on the order control (bench/order_task.py), where
  only word order tells the labels apart, the encoder alone reached 0.62 and the model 0.43;
  with this term 0.80 and 0.80 (docs/results.md).
- train.position_loss times the shuffle detector's loss (pipeline.position_loss), if above 0.
"""

import torch
from torch import nn

from pipeline.config import TrainParams
from pipeline.model import TextClassifier
from pipeline.position_loss import ShuffleDetector


class Objective(nn.Module):
    """The model and, with train.position_loss above 0, the shuffle detector; forward gives
    the batch's loss."""

    def __init__(self, model: TextClassifier, params: TrainParams) -> None:
        super().__init__()
        self.model = model
        self.loss = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        self.position_loss = params.position_loss
        # At 0 nothing is built: no detector weights, no random draws, no second pass.
        self.detector = ShuffleDetector(model) if params.position_loss else None

    def forward(
        self,
        *,  # as TextClassifier.forward, and the labels
        labels: torch.Tensor,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
        ngram_ids: torch.Tensor | None = None,
        ngram_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        model = self.model
        if model.ngrams is None:
            loss = self.loss(
                model.transformer_logits(tokens, padding_mask, subwords, subword_counts), labels
            )
        else:
            encoder, ngrams = model.path_logits(
                tokens, padding_mask, subwords, subword_counts, ngram_ids, ngram_counts
            )
            loss = self.loss(model.joint_logits(encoder, ngrams), labels)
            loss = loss + self.loss(encoder, labels)
        if self.detector is not None:
            term = self.detector(model, tokens, padding_mask, subwords, subword_counts)
            loss = loss + self.position_loss * term
        return loss
