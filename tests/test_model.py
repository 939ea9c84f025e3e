"""The Transformer-encoder classifier and its positional encodings."""

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

from pipeline.model import (
    NGRAM_SCALE,
    PositionalEncoding,
    ScratchEncoder,
    TextClassifier,
    sinusoidal_table,
)
from pipeline.vocab import PAD_ID

VOCAB_SIZE, CLASSES = 30, 3
ATOL = 1e-5


def make_model(params, **overrides) -> TextClassifier:
    torch.manual_seed(0)
    # The transformer alone unless a test asks for the n-gram path (tested below).
    config = dataclasses.replace(params.model, **{"ngram_path": False, **overrides})
    return TextClassifier(VOCAB_SIZE, CLASSES, config).eval()


def pad(rows: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.tensor([row + [PAD_ID] * (length - len(row)) for row in rows])
    return tokens, tokens == PAD_ID


@torch.no_grad()
def logits(model, rows, length):
    tokens, mask = pad(rows, length)
    return model(tokens=tokens, padding_mask=mask)


VARIANTS = [
    dict(pos_encoding=pos, pooling=pool, norm_first=norm)
    for pos, pool, norm in itertools.product(
        ["learned", "sinusoidal", "none"], ["mean", "cls"], [False, True]
    )
]


def variant_id(v: dict) -> str:
    return f"{v['pos_encoding']}-{v['pooling']}-{'pre' if v['norm_first'] else 'post'}"


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_output_shape_is_batch_by_classes(params, variant):
    model = make_model(params, **variant)
    out = logits(model, [[3, 4, 5], [6, 7], [8]], length=4)
    assert out.shape == (3, CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_extra_padding_does_not_change_logits(params, variant):
    model = make_model(params, **variant)
    rows = [[2, 5, 6, 7], [2, 9, 10]]  # leading 2 is the CLS id, harmless for mean pooling
    tight = logits(model, rows, length=4)
    loose = logits(model, rows, length=12)
    assert torch.allclose(tight, loose, atol=ATOL)


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "none"])
def test_a_row_does_not_depend_on_the_other_rows(params, pos_encoding):
    model = make_model(params, pos_encoding=pos_encoding)
    alone = logits(model, [[4, 5, 6, 7]], length=4)
    with_friends = logits(model, [[4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]], length=4)
    with_others = logits(model, [[4, 5, 6, 7], [20, 21, 22, 23], [3, 3, 3, 3]], length=4)
    assert torch.allclose(alone[0], with_friends[0], atol=ATOL)
    assert torch.allclose(alone[0], with_others[0], atol=ATOL)
    assert not torch.allclose(with_friends[1], with_others[1], atol=ATOL)


def test_padded_row_in_a_batch_matches_the_row_alone(params):
    model = make_model(params, pooling="mean")
    alone = logits(model, [[4, 5]], length=2)
    batched = logits(model, [[4, 5], [6, 7, 8, 9, 10, 11]], length=6)
    assert torch.allclose(alone[0], batched[0], atol=ATOL)


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal"])
def test_position_matters_with_an_encoding(params, pos_encoding):
    model = make_model(params, pos_encoding=pos_encoding)
    out = logits(model, [[4, 5, 6], [6, 5, 4]], length=3)
    assert not torch.allclose(out[0], out[1], atol=ATOL)


def test_without_encoding_mean_pooling_ignores_word_order(params):
    model = make_model(params, pos_encoding="none", pooling="mean")
    out = logits(model, [[4, 5, 6], [6, 4, 5]], length=3)
    assert torch.allclose(out[0], out[1], atol=ATOL)


def test_learned_table_is_a_trainable_parameter_that_starts_as_the_sinusoidal_one(params):
    model = make_model(params, pos_encoding="learned")
    table = model.encoder.positions.table
    assert torch.equal(table.detach(), sinusoidal_table(*table.shape))
    assert isinstance(table, nn.Parameter)
    assert table.requires_grad
    assert table.shape == (params.model.max_seq_len, params.model.d_model)
    assert any(p is table for p in model.parameters())
    model.train()
    tokens, mask = pad([[4, 5, 6]], 3)
    model(tokens=tokens, padding_mask=mask).sum().backward()
    assert table.grad is not None
    assert table.grad[:3].abs().sum() > 0
    assert table.grad[3:].abs().sum() == 0  # positions past the row get no gradient


def test_sinusoidal_table_is_a_buffer_not_a_parameter(params):
    model = make_model(params, pos_encoding="sinusoidal")
    table = model.encoder.positions.table
    assert not isinstance(table, nn.Parameter)
    assert not any(p is table for p in model.parameters())
    assert any(b is table for b in model.buffers())
    assert "encoder.positions.table" in model.state_dict()
    expected = sinusoidal_table(params.model.max_seq_len, params.model.d_model)
    assert torch.equal(table, expected)


def test_none_encoding_adds_nothing(params):
    model = make_model(params, pos_encoding="none")
    x = torch.randn(2, 5, params.model.d_model)
    assert model.encoder.positions(x) is x
    assert "encoder.positions.table" not in model.state_dict()


def test_positional_encoding_adds_the_first_rows_of_the_table():
    encoding = PositionalEncoding("sinusoidal", max_len=10, d_model=4)
    x = torch.zeros(2, 3, 4)
    out = encoding(x)
    assert torch.equal(out[0], sinusoidal_table(10, 4)[:3])
    assert torch.equal(out[1], out[0])


def test_sinusoidal_table_matches_the_formula():
    table = sinusoidal_table(max_len=10, d_model=8)
    assert table.shape == (10, 8)
    assert table[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 8)), abs=1e-6)
    assert table[5, 3].item() == pytest.approx(math.cos(5 / 10000 ** (2 / 8)), abs=1e-6)
    assert torch.equal(table[0, 0::2], torch.zeros(4))
    assert torch.equal(table[0, 1::2], torch.ones(4))


def test_sinusoidal_table_with_odd_d_model():
    table = sinusoidal_table(max_len=6, d_model=5)
    assert table.shape == (6, 5)
    assert table[2, 4].item() == pytest.approx(math.sin(2 / 10000 ** (4 / 5)), abs=1e-6)
    assert table[2, 3].item() == pytest.approx(math.cos(2 / 10000 ** (2 / 5)), abs=1e-6)


def test_padding_embedding_is_zero(params):
    model = make_model(params)
    assert torch.equal(model.encoder.embedding.weight[PAD_ID], torch.zeros(params.model.d_model))


@torch.no_grad()
def test_a_token_is_the_mean_of_its_word_vector_and_its_ngram_vectors(params):
    model = make_model(params, subword_buckets=20, pos_encoding="none")
    tokens, mask = pad([[3, 4, 5], [6]], 3)
    counts = torch.tensor([[2, 0, 3], [1, 0, 0]], dtype=torch.int32)  # padding has none
    flat = torch.tensor([1, 2, 7, 7, 9, 4], dtype=torch.int32)  # row after row, token by token
    seen = []
    model.encoder.positions.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(tokens=tokens, padding_mask=mask, subwords=flat, subword_counts=counts)
    word, grams = model.encoder.embedding.weight, model.encoder.subwords.weight
    expected = torch.stack(
        [
            torch.stack(
                [
                    (word[3] + grams[1] + grams[2]) / 3,
                    word[4],
                    (word[5] + grams[[7, 7, 9]].sum(0)) / 4,
                ]
            ),
            torch.stack([(word[6] + grams[4]) / 2, word[PAD_ID], word[PAD_ID]]),
        ]
    )
    torch.testing.assert_close(seen[0], expected)


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_attention_dropout_is_its_own_rate(params, rate):
    model = make_model(params, dropout=0.1, attention_dropout=rate)
    assert all(layer.self_attn.dropout == rate for layer in model.encoder.transformer.layers)
    assert all(layer.dropout1.p == 0.1 for layer in model.encoder.transformer.layers)


def test_pre_norm_has_a_final_norm_and_post_norm_does_not(params):
    assert isinstance(make_model(params, norm_first=True).encoder.transformer.norm, nn.LayerNorm)
    assert make_model(params, norm_first=False).encoder.transformer.norm is None


@torch.no_grad()
def test_the_encoder_gives_token_states_that_the_head_pools(params):
    model = make_model(params)
    assert isinstance(model.encoder, ScratchEncoder)
    assert model.encoder.encoder_parameters() == []  # all trained at train.lr
    assert model.position_table() is model.encoder.positions.table
    tokens, mask = pad([[3, 4, 5], [6, 7]], 3)
    states, padding = model.token_states(tokens, mask)
    assert states.shape == (2, 3, params.model.d_model) == (2, 3, model.encoder.width)
    assert padding is mask
    assert torch.equal(model.classify(states, padding), logits(model, [[3, 4, 5], [6, 7]], 3))


def inputs(tokens, mask, ids, counts) -> dict:
    return dict(tokens=tokens, padding_mask=mask, ngram_ids=ids, ngram_counts=counts)


def ngram_model(params, **overrides) -> TextClassifier:
    return make_model(params, ngram_path=True, subword_buckets=20, **overrides)


def test_ngram_path_is_a_linear_model_on_sublinear_l2_normalised_tfidf(params):
    from sklearn.feature_extraction.text import TfidfTransformer

    model = ngram_model(params)
    path = model.ngrams
    with torch.no_grad():
        path.weight.weight.normal_()
        path.bias.normal_()
        path.idf.uniform_(1.0, 3.0)
    counts = torch.zeros(2, 21)
    counts[0, [3, 5, 7]] = torch.tensor([1.0, 4.0, 2.0])
    counts[1, [5, 20]] = torch.tensor([3.0, 1.0])
    ids = torch.tensor([[3, 5, 7], [5, 20, 0]])  # 0 pads the shorter row
    bag_counts = torch.tensor([[1.0, 4.0, 2.0], [3.0, 1.0, 0.0]])
    # scikit-learn's own TF-IDF weighting of the same counts, with the model's idf.
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts.numpy())
    tfidf.idf_ = path.idf.numpy().astype("float64")
    features = torch.tensor(tfidf.transform(counts.numpy()).toarray(), dtype=torch.float32)
    expected = NGRAM_SCALE * features @ path.weight.weight + path.bias
    with torch.no_grad():
        got = path(ids, bag_counts)
    assert torch.allclose(got, expected, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_the_model_predicts_with_the_mixture_of_the_paths_probabilities(params, share):
    model = ngram_model(params)
    model.ngrams.weight.weight.normal_()
    model.encoder_share.fill_(share)
    tokens, mask = pad([[3, 4, 5], [6, 7]], 3)
    ids, counts = torch.tensor([[1, 2], [3, 0]]), torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    both = model(**inputs(tokens, mask, ids, counts))
    transformer = model(**inputs(tokens, mask, ids, counts), part="transformer")
    ngrams = model(**inputs(tokens, mask, ids, counts), part="ngrams")
    mixture = share * transformer.softmax(dim=1) + (1 - share) * ngrams.softmax(dim=1)
    assert torch.allclose(both.softmax(dim=1), mixture, atol=ATOL)
    assert torch.allclose(both.exp().sum(dim=1), torch.ones(2), atol=ATOL)
    assert torch.allclose(transformer, model(tokens=tokens, padding_mask=mask, part="transformer"))
    assert not torch.allclose(ngrams, torch.zeros_like(ngrams))
    assert torch.equal(model.path_logits(**inputs(tokens, mask, ids, counts))[0], transformer)


def test_the_encoder_share_is_saved_with_the_weights(params):
    assert "encoder_share" in ngram_model(params).state_dict()
    assert "encoder_share" not in make_model(params).state_dict()


def test_a_model_with_an_ngram_path_refuses_to_run_without_ngrams(params):
    model = ngram_model(params)
    tokens, mask = pad([[3, 4]], 2)
    with pytest.raises(ValueError, match="ngram"):
        model(tokens=tokens, padding_mask=mask)
    with pytest.raises(ValueError, match="ngram"):
        make_model(params)(tokens=tokens, padding_mask=mask, part="ngrams")


@torch.no_grad()
def test_transformer_dropout_acts_in_training_only(params):
    model = ngram_model(params, transformer_dropout=0.5, dropout=0.0, attention_dropout=0.0)
    tokens, mask = pad([[3, 4, 5]] * 64, 3)
    ids, counts = torch.tensor([[1, 2]] * 64), torch.ones(64, 2)
    transformer, ngrams = model.path_logits(**inputs(tokens, mask, ids, counts))
    assert torch.equal(model.joint_logits(transformer, ngrams), transformer + ngrams)
    model.train()
    torch.manual_seed(1)
    mixed = model.joint_logits(transformer, ngrams)
    dropped = torch.isclose(mixed, ngrams, atol=ATOL).all(dim=1)
    doubled = torch.isclose(mixed, ngrams + 2 * transformer, atol=ATOL).all(dim=1)
    assert (dropped | doubled).all()  # each row: transformer dropped, or kept and rescaled
    assert 10 < dropped.sum() < 54
