"""Encoding tables into token ids once, and batching them padded to each batch's longest row."""

import zlib

import pandas as pd
import pytest
import torch

from pipeline.data import LABEL, TEXT
from pipeline.encoding import (
    MAX_TOKEN_CHARS,
    Ragged,
    Subwords,
    batch_indices,
    batches,
    encode_table,
    ngram_bags,
    ngram_idf,
    row_ngrams,
    subword_ids,
)
from pipeline.errors import PipelineError
from pipeline.vocab import CLS_ID, PAD_ID, build_vocab


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[TEXT, LABEL])


@pytest.fixture
def vocab():
    return build_vocab(["a b c d e f"], ["X", "Y"], min_freq=1, max_size=100)


def test_encode_table_tokenises_each_row_once(vocab):
    data = encode_table(table([("a b", "Y"), ("f zz e", "X")]), vocab, max_len=8, add_cls=False)
    index = {t: i for i, t in enumerate(vocab.tokens)}
    assert len(data) == 2
    assert data.ids[0].tolist() == [index["a"], index["b"]]
    assert data.ids[1].tolist() == [index["f"], 1, index["e"]]
    assert data.labels.tolist() == [1, 0]
    assert data.labels.dtype == torch.long


def test_encode_table_with_cls_and_truncation(vocab):
    data = encode_table(table([("a b c d e", "X")]), vocab, max_len=3, add_cls=True)
    assert data.ids[0].tolist()[0] == CLS_ID
    assert len(data.ids[0]) == 3


def test_encode_table_rejects_unknown_labels(vocab):
    with pytest.raises(PipelineError, match="Nope"):
        encode_table(table([("a", "X"), ("b", "Nope")]), vocab, max_len=8, add_cls=False)


def lengths_table(lengths):
    return table([(" ".join(["a"] * n), "X") for n in lengths])


def test_batches_pad_to_the_longest_row_of_each_batch(vocab):
    data = encode_table(lengths_table([2, 5, 1, 3, 1]), vocab, max_len=64, add_cls=False)
    shapes = [batch.tokens.shape for batch in batches(data, batch_size=2)]
    assert shapes == [(2, 1), (2, 3), (1, 5)]  # lengths 1 1 | 2 3 | 5


def test_batch_mask_is_true_exactly_on_padding(vocab):
    data = encode_table(lengths_table([2, 4, 1]), vocab, max_len=64, add_cls=False)
    batch = next(batches(data, batch_size=3))
    tokens, mask, labels = batch.tokens, batch.padding_mask, batch.labels
    expected = torch.tensor(
        [[False, True, True, True], [False, False, True, True], [False, False, False, False]]
    )
    assert torch.equal(mask, expected)
    assert torch.equal(mask, tokens == PAD_ID)
    assert labels.tolist() == [0, 0, 0]


def test_batches_without_generator_go_by_length_and_name_their_rows(vocab):
    rows = [("a b c", "X"), ("b", "Y"), ("c d", "X"), ("d", "Y"), ("e a b c", "Y")]
    data = encode_table(table(rows), vocab, max_len=8, add_cls=False)
    got = list(batches(data, 2))
    assert [b.index for b in got] == [[1, 3], [2, 0], [4]]  # stable sort by length
    for batch in got:
        assert batch.labels.tolist() == [data.labels[i].item() for i in batch.index]
        assert batch.tokens[:, 0].tolist() == [data.ids[i][0].item() for i in batch.index]


def test_length_grouping_cuts_padding_and_keeps_every_row_once():
    lengths = [1 + (i * 37) % 60 for i in range(640)]
    shuffled = batch_indices(lengths, 16, torch.Generator().manual_seed(0))
    assert sorted(i for group in shuffled for i in group) == list(range(640))

    def padded(groups):
        return sum(len(g) * max(lengths[i] for i in g) for g in groups)

    random_groups = torch.randperm(640, generator=torch.Generator().manual_seed(0)).split(16)
    assert padded(shuffled) < 0.7 * padded([g.tolist() for g in random_groups])
    assert shuffled != batch_indices(lengths, 16, torch.Generator().manual_seed(1))


def test_seeded_shuffle_is_reproducible_and_keeps_rows_with_labels(vocab):
    rows = [(t, "X" if i % 2 else "Y") for i, t in enumerate(["a", "b", "c", "d", "e", "f"])]
    data = encode_table(table(rows), vocab, max_len=8, add_cls=False)

    def order(seed):
        out = []
        for batch in batches(data, 4, torch.Generator().manual_seed(seed)):
            tokens, labels = batch.tokens, batch.labels
            out += list(zip(tokens[:, 0].tolist(), labels.tolist(), strict=True))
        return out

    first = order(11)
    assert first == order(11)
    rows_with_labels = zip([ids.item() for ids in data.ids], data.labels.tolist(), strict=True)
    assert sorted(first) == sorted(rows_with_labels)
    assert first != order(12)


def test_subword_ids_are_stable_bounded_and_shared_by_related_words():
    spec = Subwords(buckets=1000, min_n=3, max_n=4)
    ids = subword_ids("magnet", spec)
    assert ids == subword_ids("magnet", spec)  # crc32, not the salted hash()
    assert all(1 <= i <= 1000 for i in ids)
    assert len(ids) == len("<magnet>") - 2 + len("<magnet>") - 3
    assert set(ids) & set(subword_ids("magnetic", spec))


def test_every_ngram_of_a_long_word_is_kept():
    spec = Subwords(buckets=10**6, min_n=2, max_n=5)
    word = "photosynthesis"  # "<photosynthesis>": 16 characters
    assert len(subword_ids(word, spec)) == 15 + 14 + 13 + 12
    # Only pathological tokens are cut, to their first MAX_TOKEN_CHARS characters.
    long = "x" * (MAX_TOKEN_CHARS - 1) + "yz"
    assert subword_ids(long, spec) == subword_ids(long[:MAX_TOKEN_CHARS], spec)
    assert len(subword_ids(long, spec)) == sum(MAX_TOKEN_CHARS + 3 - n for n in range(2, 6))


def test_subwords_align_with_token_ids_including_cls_and_truncation(vocab):
    spec = Subwords(buckets=50, min_n=3, max_n=3)
    data = encode_table(table([("a zz b c", "X"), ("", "Y")]), vocab, 3, True, spec)
    grams, (first, empty), per_row = row_ngrams(data, [0, 1])
    assert per_row.tolist() == [3, 0]
    assert first.tolist() == [0, 1, 2]  # CLS has none; "<a>" one 3-gram; "<zz>" two
    assert grams.tolist() == subword_ids("a", spec) + subword_ids("zz", spec)
    assert len(empty) == len(data.ids[1]) and empty.eq(0).all()
    batch = next(batches(data, batch_size=2))
    assert batch.subword_counts.shape == batch.tokens.shape
    assert batch.subword_counts[batch.index.index(0)].tolist() == [0, 1, 2]
    assert batch.subword_counts[batch.index.index(1)].eq(0).all()
    # Flat, in batch order: the empty row adds none, whichever place it has.
    assert batch.subwords.tolist() == subword_ids("a", spec) + subword_ids("zz", spec)


def test_each_row_bag_holds_its_distinct_ngrams_with_counts(vocab):
    spec = Subwords(buckets=50, min_n=3, max_n=3)
    data = encode_table(table([("abc abc d", "X"), ("", "Y")]), vocab, 8, False, spec)
    abc = subword_ids("abc", spec)
    expected = {}
    for i in abc + abc + subword_ids("d", spec):
        expected[i] = expected.get(i, 0) + 1
    batch = next(batches(data, batch_size=2))
    assert batch.ngram_ids.shape == batch.ngram_counts.shape == (2, len(expected))
    ids, counts = batch.ngram_ids[batch.index.index(0)], batch.ngram_counts[batch.index.index(0)]
    assert ids.tolist() == sorted(expected)
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == expected
    # An empty text has no n-grams: its row is padding alone (id 0, count 0).
    empty = batch.index.index(1)
    assert batch.ngram_ids[empty].eq(0).all() and batch.ngram_counts[empty].eq(0).all()


def test_each_word_is_stored_once_with_its_ngrams(vocab):
    spec = Subwords(buckets=50, min_n=3, max_n=3)
    data = encode_table(table([("abc d abc", "X"), ("d zz", "Y")]), vocab, 8, False, spec)
    assert len(data.word_grams) == 1 + 3  # word 0 (none), abc, d, zz
    assert data.words[0].tolist() == [1, 2, 1] and data.words[1].tolist() == [2, 3]
    assert data.word_grams[0].numel() == 0
    assert data.word_grams[1].tolist() == subword_ids("abc", spec)


def test_no_bags_without_subwords(vocab):
    data = encode_table(table([("a b", "X")]), vocab, 8, False)
    assert data.words is None and data.word_grams is None
    assert next(batches(data, 1)).ngram_ids is None


def ngram_lists(data) -> list[list[int]]:
    """Each row's n-gram ids, as many times as they occur."""
    grams, _, per_row = row_ngrams(data, list(range(len(data))))
    return [row.tolist() for row in grams.split(per_row.tolist())]


def test_ngram_idf_is_scikit_learns_smoothed_idf(vocab):
    from sklearn.feature_extraction.text import TfidfVectorizer

    spec = Subwords(buckets=40, min_n=2, max_n=3)
    texts = ["a bb ccc", "bb dd", "a a a", "ccc ddd e"]
    data = encode_table(table([(t, "X") for t in texts]), vocab, 16, False, spec)
    idf = ngram_idf(data, spec.buckets)
    vectorizer = TfidfVectorizer(analyzer=lambda ids: ids).fit(ngram_lists(data))
    for bucket, index in vectorizer.vocabulary_.items():
        assert idf[bucket].item() == pytest.approx(vectorizer.idf_[index], rel=1e-6)
    unseen = set(range(1, 41)) - set(vectorizer.vocabulary_)
    assert all(
        idf[b].item() == pytest.approx(1 + torch.log(torch.tensor(5.0)).item()) for b in unseen
    )


def test_ngram_path_inputs_are_scikit_learns_tfidf_on_every_ngram():
    """The n-gram path's features equal TfidfVectorizer's on n-grams that scikit-learn cuts
    itself (char_wb, words padded with spaces where the model writes < and >)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from pipeline.model import NGRAM_SCALE, NgramPath

    texts = [
        "photosynthesis needs chlorophyll and sunlight",
        "electroencephalography records electrical brain activity",
        "photosynthesis photosynthesis releases oxygen",
        "momentum equals mass times velocity",
    ]
    spec = Subwords(buckets=2**20, min_n=2, max_n=5)
    words = build_vocab(texts, ["X"] * 4, min_freq=1, max_size=100)
    data = encode_table(table([(t, "X") for t in texts]), words, 64, False, spec)
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    features = vectorizer.fit_transform(texts).toarray()  # words of >= 4 letters: no quirks
    # The model's bucket of each of scikit-learn's n-grams (" ph" is the model's "<ph").
    names = [g.replace(" ", "<", 1) if g.startswith(" ") else g for g in vectorizer.vocabulary_]
    names = [g[:-1] + ">" if g.endswith(" ") else g for g in names]
    index = list(vectorizer.vocabulary_.values())
    buckets = [zlib.crc32(g.encode()) % spec.buckets + 1 for g in names]
    assert len(set(buckets)) == len(buckets)  # no hash collision in this test
    assert sorted(buckets) == sorted(set().union(*ngram_lists(data)))

    path = NgramPath(spec.buckets, num_classes=3)
    path.idf.copy_(ngram_idf(data, spec.buckets))
    weights = torch.randn(len(buckets), 3)
    with torch.no_grad():
        path.weight.weight[buckets] = weights[index]
        grams, _, per_row = row_ngrams(data, list(range(len(data))))
        got = path(*ngram_bags(grams, per_row))
    expected = NGRAM_SCALE * torch.tensor(features, dtype=torch.float32) @ weights
    assert torch.allclose(got, expected, atol=1e-4)


def test_ragged_rows_take_and_gather():
    rows = [[5, 6], [], [7], [8, 9, 10]]
    ragged = Ragged.of(rows, torch.int32)
    assert len(ragged) == 4 and ragged.lengths() == [2, 0, 1, 3]
    assert [row.tolist() for row in ragged] == rows
    assert ragged.values.dtype == torch.int32 and ragged.values.numel() == 6  # one flat tensor
    taken = ragged.take([3, 1, 0, 3])
    assert [row.tolist() for row in taken] == [rows[3], rows[1], rows[0], rows[3]]
    values, sizes = ragged.gather(torch.tensor([2, 1, 3, 2]))
    assert values.tolist() == [7, 8, 9, 10, 7] and sizes.tolist() == [1, 0, 3, 1]
    assert [row.tolist() for row in ragged.take([])] == []
