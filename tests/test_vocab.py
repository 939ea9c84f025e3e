"""The token vocabulary and label set."""

import json
import random

import pytest

from pipeline.errors import PipelineError
from pipeline.vocab import (
    CLS,
    CLS_ID,
    PAD,
    PAD_ID,
    SPECIALS,
    UNK,
    UNK_ID,
    build_vocab,
    load_vocab,
    save_vocab,
)
from tests.conftest import synthetic_table

TEXTS = ["b a c", "a b", "a d", "e"]  # a:3, b:2, c:1, d:1, e:1
LABELS = ["Y", "X", "Y", "Z"]


def test_specials_come_first_with_fixed_ids():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    assert vocab.tokens[:3] == [PAD, UNK, CLS]
    assert (vocab.tokens[PAD_ID], vocab.tokens[UNK_ID], vocab.tokens[CLS_ID]) == SPECIALS


def test_tokens_ordered_by_frequency_then_alphabetically():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    assert vocab.tokens[3:] == ["a", "b", "c", "d", "e"]


def test_built_from_the_given_texts_only():
    vocab = build_vocab(["x y"], ["L"], min_freq=1, max_size=100)
    assert set(vocab.tokens) == {*SPECIALS, "x", "y"}


def test_min_freq_drops_rare_tokens():
    vocab = build_vocab(TEXTS, LABELS, min_freq=2, max_size=100)
    assert vocab.tokens[3:] == ["a", "b"]


def test_max_size_keeps_the_most_frequent_and_excludes_specials():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=3)
    assert vocab.tokens[3:] == ["a", "b", "c"]  # c beats d and e alphabetically


def test_labels_are_sorted_and_unique():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    assert vocab.labels == ["X", "Y", "Z"]
    assert vocab.label_ids(["Z", "X", "Y", "X"]) == [2, 0, 1, 0]


def test_row_order_does_not_change_the_vocab():
    table = synthetic_table(["A", "B", "C"], 30)
    shuffled = table.sample(frac=1.0, random_state=7)
    assert list(shuffled.index) != list(table.index)
    # max_size forces a cut through tokens of equal count.
    one = build_vocab(table["text"], table["label"], min_freq=2, max_size=20)
    two = build_vocab(shuffled["text"], shuffled["label"], min_freq=2, max_size=20)
    assert one == two


def test_shuffled_words_within_texts_give_the_same_vocab():
    rng = random.Random(3)
    texts = ["p q r s", "q r s t", "r s t u", "v w"]
    mixed = [" ".join(rng.sample(t.split(), len(t.split()))) for t in reversed(texts)]
    vocab = build_vocab(texts, ["A"], 1, 5)
    assert vocab.tokens[3:] == ["r", "s", "q", "t", "p"]  # p wins the tie at count 1
    assert build_vocab(mixed, ["A"], 1, 5) == vocab


def test_encode_maps_unknown_tokens_to_unk():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    a, b = vocab.tokens.index("a"), vocab.tokens.index("b")
    assert vocab.encode("a zzz b", max_len=10) == [a, UNK_ID, b]


def test_encode_truncates_to_max_len():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    assert len(vocab.encode("a b c d e a b", max_len=4)) == 4
    assert vocab.encode("a b c d e", max_len=2) == vocab.encode("a b", max_len=10)


def test_encode_with_cls_prepends_it_within_max_len():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    plain = vocab.encode("a b c", max_len=10)
    assert vocab.encode("a b c", max_len=10, add_cls=True) == [CLS_ID, *plain]
    assert vocab.encode("a b c", max_len=2, add_cls=True) == [CLS_ID, plain[0]]


def test_encode_empty_text_gives_one_unk():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    assert vocab.encode("", max_len=5) == [UNK_ID]


def test_encoded_ids_never_hit_padding():
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    ids = vocab.encode("a b c d e f g zz", max_len=50, add_cls=True)
    assert PAD_ID not in ids


def test_save_load_round_trip(tmp_path):
    vocab = build_vocab(["ça va été", "x ça"], ["B", "A"], min_freq=1, max_size=100)
    path = tmp_path / "sub" / "vocab.json"
    save_vocab(vocab, path)
    loaded = load_vocab(path)
    assert loaded == vocab
    assert loaded.encode("ça x nope", 10) == vocab.encode("ça x nope", 10)
    # Readable JSON, written as UTF-8 rather than escaped.
    assert "ça" in path.read_text(encoding="utf-8")


def test_load_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_vocab(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        "[1, 2, 3]",
        '{"tokens": ["<pad>", "<unk>", "<cls>"]}',
        '{"tokens": ["a", "b", "c"], "labels": ["A"]}',
        '{"tokens": 5, "labels": ["A"]}',
        '{"tokens": ["<pad>", "<unk>", "<cls>", ["x"]], "labels": ["A"]}',
        "",
    ],
)
def test_load_bad_file_raises_pipeline_error(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match="not a vocabulary"):
        load_vocab(path)


def test_load_non_utf8_file_raises_pipeline_error(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(b'{"tokens": ["\xff\xfe"], "labels": []}')
    with pytest.raises(PipelineError):
        load_vocab(path)


def test_saved_file_is_json_with_tokens_and_labels(tmp_path):
    vocab = build_vocab(TEXTS, LABELS, min_freq=1, max_size=100)
    path = tmp_path / "vocab.json"
    save_vocab(vocab, path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload == {"labels": ["X", "Y", "Z"], "tokens": vocab.tokens}


def test_load_a_directory_raises_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match="Cannot read vocabulary"):
        load_vocab(tmp_path)
