"""The classifier: token embedding + positional encoding + Transformer encoder + pooling + head."""

import math

import torch
from torch import nn

from pipeline.config import TrainParams
from pipeline.vocab import PAD_ID


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed encoding of "Attention Is All You Need": sin on even, cos on odd dimensions."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model)
    )
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return table


class PositionalEncoding(nn.Module):
    """Adds a (max_len, d_model) table to the embeddings: learned, sinusoidal, or nothing."""

    def __init__(self, kind: str, max_len: int, d_model: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "learned":
            # A small random start: positions begin nearly alike and training has to tell
            # them apart, which is what the "change from initial" plot shows.
            self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.1)
        elif kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(max_len, d_model))
        else:
            self.table = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return x
        return x + self.table[: x.size(1)]


class TextClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, params: TrainParams) -> None:
        super().__init__()
        self.pooling = params.pooling
        self.embedding = nn.Embedding(vocab_size, params.d_model, padding_idx=PAD_ID)
        # Character n-grams carry over to words the training rows never had (or had once).
        self.subwords = (
            nn.Embedding(params.subword_buckets + 1, params.d_model, padding_idx=0)
            if params.subword_buckets
            else None
        )
        self.positions = PositionalEncoding(params.pos_encoding, params.max_seq_len, params.d_model)
        self.dropout = nn.Dropout(params.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=params.d_model,
            nhead=params.num_heads,
            dim_feedforward=params.dim_feedforward,
            dropout=params.dropout,
            batch_first=True,  # inputs are (batch, seq, dim); the default would mix the batch
            norm_first=params.norm_first,
        )
        self.encoder = nn.TransformerEncoder(
            layer,
            num_layers=params.num_layers,
            # Pre-norm stacks need a final norm; post-norm already ends each layer with one.
            norm=nn.LayerNorm(params.d_model) if params.norm_first else None,
            enable_nested_tensor=False,
        )
        self.head = nn.Sequential(
            nn.Linear(params.d_model, params.d_model),
            nn.GELU(),
            nn.Dropout(params.dropout),
            nn.Linear(params.d_model, num_classes),
        )

    def forward(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (batch, classes) for token ids (batch, seq); padding_mask is True on padding;
        subwords (batch, seq, n-grams) are hashed n-gram ids, 0 = none."""
        x = self.embedding(tokens)
        if self.subwords is not None and subwords is not None:
            # A token is the mean of its word vector and its n-gram vectors.
            count = (subwords > 0).sum(dim=-1, keepdim=True).to(x.dtype)
            x = (x + self.subwords(subwords).sum(dim=2)) / (1.0 + count)
        x = self.dropout(self.positions(x))
        x = self.encoder(x, src_key_padding_mask=padding_mask)
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:  # mean over real tokens only: padding must not dilute short texts
            keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)
