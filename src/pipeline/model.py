"""The classifier: an encoder's token states, pooled, through a small MLP head, plus an optional
linear path on the row's TF-IDF-weighted character n-grams whose logits are added (wide & deep).

Two encoders share one interface (Encoder: token states and the positional table):
ScratchEncoder, token embedding + positional encoding + Transformer encoder, trained from
scratch; PretrainedEncoder, a BERT-family encoder (pipeline.pretrained) with its own word-piece
ids and position embeddings, fine-tuned. new_encoder picks one, once, from model.encoder."""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from pipeline import pretrained
from pipeline.config import ModelParams, Part
from pipeline.errors import PipelineError
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
            # Starts as the sinusoidal table, then trained: nearby positions begin alike and
            # far ones apart, which a random start has to learn from a few thousand rows (on
            # the order control, bench/order_task.py, the encoder alone reached 0.80 from this
            # start, 0.77 from randn * 0.1). The "change from initial" plot shows what it learns.
            self.table = nn.Parameter(sinusoidal_table(max_len, d_model))
        elif kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(max_len, d_model))
        else:
            self.table = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return x
        return x + self.table[: x.size(1)]


# L2-normalised TF-IDF entries are small (about 0.05): scaled up so that AdamW at the
# pipeline's learning rates reaches the weights a linear model needs within the epochs.
NGRAM_SCALE = 10.0


class NgramPath(nn.Module):
    """A linear model on the row's hashed character n-grams, weighted as TfidfVectorizer does
    (sublinear tf, smoothed idf from the training rows, L2-normalised). Its logits are added to
    the transformer's: on a thousand training rows a linear model on n-grams generalises better
    than an encoder trained from scratch, and the sum lets the model do at least as well."""

    def __init__(self, buckets: int, num_classes: int, scale: float = NGRAM_SCALE) -> None:
        super().__init__()
        self.scale = scale
        # Filled from the training rows before training (training.train_model), then saved.
        self.register_buffer("idf", torch.ones(buckets + 1))
        # A bag per row, summed with the TF-IDF weights in one fused lookup.
        self.weight = nn.EmbeddingBag(buckets + 1, num_classes, mode="sum", padding_idx=0)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, ngram_ids: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Logits (batch, classes) for distinct n-gram ids (batch, n) with their counts (0 pads)."""
        tf = torch.where(counts > 0, 1.0 + counts.clamp(min=1.0).log(), counts)
        weights = tf * self.idf[ngram_ids]
        weights = weights / weights.norm(dim=1, keepdim=True).clamp(min=1e-6)
        return self.weight(ngram_ids, per_sample_weights=self.scale * weights) + self.bias


@contextmanager
def regular_attention() -> Iterator[None]:
    """Switch off PyTorch's inference fast path of encoder layers for the block: on CPUs its
    masked softmax made scoring about twice as slow here (bench/profile_epoch.py), and without
    it eval mode runs the attention code that training runs."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class Encoder(nn.Module):
    """What the classifier needs of an encoder: a state per token, and the positional table
    that the pictures and a loss on positions read."""

    width: int  # the size of a token state

    def forward(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """States (batch, seq, width) for token ids (batch, seq); padding_mask is True on
        padding; subwords are the batch's hashed n-gram ids, flat, subword_counts (batch, seq)
        how many of them each token has (see encoding.Batch)."""
        raise NotImplementedError

    def position_table(self) -> torch.Tensor | None:
        """The (positions, width) table added to the token embeddings; None if there is none."""
        raise NotImplementedError

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The weights trained at train.encoder_lr instead of train.lr; none by default."""
        return []


class ScratchEncoder(Encoder):
    """Token embedding (averaged with the token's hashed character n-gram embeddings) +
    positional encoding + nn.TransformerEncoder, all trained from scratch."""

    def __init__(self, vocab_size: int, params: ModelParams) -> None:
        super().__init__()
        self.width = params.d_model
        self.embedding = nn.Embedding(vocab_size, params.d_model, padding_idx=PAD_ID)
        # Character n-grams carry over to words the training rows never had (or had once).
        # One bag of n-grams per token, summed in one fused lookup.
        self.subwords = (
            nn.EmbeddingBag(params.subword_buckets + 1, params.d_model, mode="sum", padding_idx=0)
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
        # Dropout on the attention weights apart from the rest: its (batch, heads, seq, seq)
        # masks cost the most of all dropouts, and at 0 attention takes PyTorch's fused kernel.
        layer.self_attn.dropout = params.attention_dropout
        self.transformer = nn.TransformerEncoder(
            layer,
            num_layers=params.num_layers,
            # Pre-norm stacks need a final norm; post-norm already ends each layer with one.
            norm=nn.LayerNorm(params.d_model) if params.norm_first else None,
            enable_nested_tensor=False,
        )

    def forward(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embedding(tokens)
        if self.subwords is not None and subwords is not None and subword_counts is not None:
            # A token is the mean of its word vector and its n-gram vectors.
            counts = subword_counts.flatten()
            bags = self.subwords(subwords, offsets=counts.cumsum(0) - counts)
            x = (x + bags.view_as(x)) / (1.0 + subword_counts.unsqueeze(-1).to(x.dtype))
        x = self.dropout(self.positions(x))
        with regular_attention():
            return self.transformer(x, src_key_padding_mask=padding_mask)

    def position_table(self) -> torch.Tensor | None:
        return self.positions.table


class PretrainedEncoder(Encoder):
    """A BERT-family encoder built from its config.json (pipeline.pretrained), fine-tuned at
    train.encoder_lr: its own word-piece ids, embeddings and position embeddings, which
    model.pos_encoding keeps ('learned'), replaces with a fixed table ('sinusoidal') or zeroes
    ('none')."""

    def __init__(
        self,
        config: dict,
        params: ModelParams,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """`weights` are the pretrained files' tensors; None leaves the random start that a
        checkpoint's state dict then fills."""
        super().__init__()
        longest = config.get("max_position_embeddings", 512)
        if params.max_seq_len > longest:
            raise PipelineError(
                f"'model.max_seq_len' ({params.max_seq_len}) is longer than the pretrained "
                f"encoder's {longest} position embeddings; use at most {longest}."
            )
        self.pos_encoding = params.pos_encoding
        self.bert = pretrained.bert(config)
        self.width = self.bert.config.hidden_size
        if weights is not None:
            self._load(weights, used=params.max_seq_len)

    def _load(self, weights: dict[str, torch.Tensor], used: int) -> None:
        """Put the pretrained weights in, then the position embeddings as model.pos_encoding
        says: 'learned' keeps the pretrained table (fine-tuned with the rest); 'sinusoidal'
        puts the fixed table in its place, scaled to the pretrained rows' mean norm over the
        first `used` positions (at unit scale it would drown the word embeddings); 'none'
        zeroes it. Both of those stay fixed."""
        pretrained.load_weights(self.bert, weights)
        if self.pos_encoding == "learned":
            return
        table = pretrained.position_table(self.bert)
        with torch.no_grad():
            if self.pos_encoding == "sinusoidal":
                fixed = sinusoidal_table(*table.shape)
                scale = table[:used].norm(dim=1).mean() / fixed[:used].norm(dim=1).mean()
                table.copy_(fixed * scale)
            else:
                table.zero_()
        table.requires_grad_(False)

    def forward(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Word-piece ids through BERT's own embeddings and positions: no n-gram bags.
        mask = (~padding_mask).long()
        return self.bert(input_ids=tokens, attention_mask=mask).last_hidden_state

    def position_table(self) -> torch.Tensor | None:
        return None if self.pos_encoding == "none" else pretrained.position_table(self.bert)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.bert.parameters())


def new_encoder(
    vocab_size: int,
    params: ModelParams,
    encoder_config: dict | None = None,
    encoder_weights: dict[str, torch.Tensor] | None = None,
) -> Encoder:
    """The encoder that model.encoder names: chosen here once, so that no class asks which.
    `encoder_config` is the pretrained encoder's config.json, `encoder_weights` its files'
    tensors (None when a checkpoint brings them); the scratch encoder uses neither."""
    if params.encoder == "scratch":
        return ScratchEncoder(vocab_size, params)
    if encoder_config is None:
        raise ValueError("model.encoder 'pretrained' needs the encoder's config.json")
    return PretrainedEncoder(encoder_config, params, encoder_weights)


def mixture_logits(
    encoder: torch.Tensor, ngrams: torch.Tensor, share: torch.Tensor
) -> torch.Tensor:
    """The log of the mixture of two paths' probabilities, `share` (a 0-d tensor) the
    encoder's: logits whose softmax is the mixture."""
    mixture = share * encoder.softmax(dim=1) + (1.0 - share) * ngrams.softmax(dim=1)
    return mixture.clamp(min=1e-30).log()  # a share of 0 or 1 leaves one path's exactly


class TextClassifier(nn.Module):
    """Encoder + pooling + MLP head, plus the n-gram path (model.ngram_path). The two paths
    train through the sum of their logits (joint_logits) and the encoder also on its own
    (pipeline.objective); the model predicts with a mixture of the two paths' probabilities,
    the encoder's share chosen on the validation rows (training.choose_encoder_share)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        params: ModelParams,
        ngram_scale: float = NGRAM_SCALE,
        encoder_config: dict | None = None,
        encoder_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """`encoder_config` and `encoder_weights`: the pretrained encoder's (see new_encoder)."""
        super().__init__()
        self.ngram_scale = ngram_scale
        self.pooling = params.pooling
        # Encoder, head, n-gram path: the order the random initial weights are drawn in.
        self.encoder = new_encoder(vocab_size, params, encoder_config, encoder_weights)
        width = self.encoder.width
        self.head = nn.Sequential(
            nn.Linear(width, width),
            nn.GELU(),
            nn.Dropout(params.dropout),
            nn.Linear(width, num_classes),
        )
        self.ngrams = (
            NgramPath(params.subword_buckets, num_classes, ngram_scale)
            if params.ngram_path
            else None
        )
        if self.ngrams is not None:
            # Saved with the weights: the share is part of what the model predicts.
            self.register_buffer("encoder_share", torch.tensor(0.5))
        self.transformer_dropout = params.transformer_dropout

    def position_table(self) -> torch.Tensor | None:
        """The encoder's positional table (positions, width), or None: what the plots draw."""
        return self.encoder.position_table()

    def forward(
        self,
        *,  # by name: the inputs are several tensors of similar shapes, easy to mix up
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
        ngram_ids: torch.Tensor | None = None,
        ngram_counts: torch.Tensor | None = None,
        part: Part = "both",
    ) -> torch.Tensor:
        """Logits (batch, classes) that the model predicts with: the encoder's, or with an
        n-gram path the log of the mixture of both paths' probabilities (softmax of it is
        the mixture); `part` picks one path alone (to measure what each contributes)."""
        if part == "ngrams" and self.ngrams is None:
            raise ValueError("this model has no n-gram path (model.ngram_path is false)")
        if part == "ngrams":
            return self.ngrams(*self._bags(ngram_ids, ngram_counts))
        if part == "transformer" or self.ngrams is None:
            return self.transformer_logits(tokens, padding_mask, subwords, subword_counts)
        encoder, ngrams = self.path_logits(
            tokens, padding_mask, subwords, subword_counts, ngram_ids, ngram_counts
        )
        return mixture_logits(encoder, ngrams, self.encoder_share)

    def path_logits(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
        ngram_ids: torch.Tensor | None = None,
        ngram_counts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder path's logits and the n-gram path's, each (batch, classes), for the
        inputs of forward in its order."""
        if self.ngrams is None:
            raise ValueError("this model has no n-gram path (model.ngram_path is false)")
        bags = self._bags(ngram_ids, ngram_counts)
        encoder = self.transformer_logits(tokens, padding_mask, subwords, subword_counts)
        return encoder, self.ngrams(*bags)

    def joint_logits(self, encoder: torch.Tensor, ngrams: torch.Tensor) -> torch.Tensor:
        """The sum of the paths' logits that both train through. While training, the encoder's
        logits are dropped for a share of the rows (model.transformer_dropout), so that the
        n-gram path learns to stand on its own instead of leaving the fit to the encoder."""
        if self.training and self.transformer_dropout > 0:
            keep = torch.rand(len(encoder), 1, device=encoder.device) >= self.transformer_dropout
            encoder = encoder * keep / (1.0 - self.transformer_dropout)
        return encoder + ngrams

    @staticmethod
    def _bags(
        ngram_ids: torch.Tensor | None, ngram_counts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if ngram_ids is None or ngram_counts is None:
            raise ValueError("the n-gram path needs ngram_ids and ngram_counts")
        return ngram_ids, ngram_counts

    def transformer_logits(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (batch, classes) of the encoder's path alone (inputs as Encoder.forward)."""
        return self.classify(*self.token_states(tokens, padding_mask, subwords, subword_counts))

    def token_states(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        subwords: torch.Tensor | None = None,
        subword_counts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's states (batch, seq, width) and the padding mask (batch, seq, True on
        padding) that says which of them to leave out: what a loss on the states needs."""
        return self.encoder(tokens, padding_mask, subwords, subword_counts), padding_mask

    def pool(self, states: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """(batch, width): the one vector per text that the head reads."""
        if self.pooling == "cls":
            return states[:, 0]
        # Mean over real tokens only: padding must not dilute short texts.
        keep = (~padding_mask).unsqueeze(-1).to(states.dtype)
        return (states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)

    def classify(self, states: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Logits (batch, classes) of token states: pooled, then the head."""
        return self.head(self.pool(states, padding_mask))
