"""Reading, cleaning and splitting tables."""

import pandas as pd
import pytest

from pipeline.config import CleanParams
from pipeline.data import (
    LABEL,
    TEXT,
    clean_table,
    read_raw,
    read_table,
    split_table,
    write_table,
)
from pipeline.errors import PipelineError
from tests.conftest import synthetic_table, write_csv

ALL = CleanParams(lowercase=True, remove_links=True, remove_latex=True, remove_punctuation=True)


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[TEXT, LABEL])


# --- reading ---------------------------------------------------------------------------------


def test_read_raw_renames_the_chosen_columns(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("id,question,subject\n1,What is x?,Maths\n2,NA,Physics\n", encoding="utf-8")
    out = read_raw(path, "question", "subject")
    assert list(out.columns) == [TEXT, LABEL]
    assert out[TEXT].tolist() == ["What is x?", "NA"]  # "NA" is text, not a missing value
    assert out[LABEL].tolist() == ["Maths", "Physics"]


def test_read_raw_keeps_empty_fields_as_empty_strings(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("text,label\n,A\nb,\n", encoding="utf-8")
    out = read_raw(path, "text", "label")
    assert out[TEXT].tolist() == ["", "b"]
    assert out[LABEL].tolist() == ["A", ""]


def test_read_raw_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(PipelineError, match="does not exist") as info:
        read_raw(path, "text", "label")
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text_column", "label_column", "key"),
    [("question", "label", "data.text_column"), ("text", "subject", "data.label_column")],
)
def test_read_raw_missing_column_lists_existing_ones(tmp_path, text_column, label_column, key):
    path = write_csv(tmp_path / "raw.csv", ["A", "B"], 3, "text", "label")
    with pytest.raises(PipelineError) as info:
        read_raw(path, text_column, label_column)
    message = str(info.value)
    assert key in message
    assert "its columns are: text, label" in message


def test_read_raw_header_only(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="no data rows"):
        read_raw(path, "text", "label")


def test_read_raw_empty_file(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_bytes(b"")
    with pytest.raises(PipelineError, match="empty"):
        read_raw(path, "text", "label")


def test_read_raw_non_utf8(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_bytes("text,label\ncaf\xe9,A\n".encode("latin-1"))
    with pytest.raises(PipelineError, match="UTF-8"):
        read_raw(path, "text", "label")


def test_read_raw_accepts_a_byte_order_mark(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_bytes("question,subject\nwhat is é,Maths\n".encode("utf-8-sig"))
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    out = read_raw(path, "question", "subject")
    assert out[TEXT].tolist() == ["what is é"]


def test_read_table_rejects_foreign_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="not written by this pipeline"):
        read_table(path)


def test_write_then_read_table_round_trip(tmp_path):
    original = table([("a, b", "X"), ('say "hi"', "Y"), ("", "Z")])
    path = tmp_path / "out" / "t.csv"
    write_table(original, path)
    pd.testing.assert_frame_equal(read_table(path), original, check_dtype=False)


# --- cleaning --------------------------------------------------------------------------------


def test_clean_table_drops_rows_and_counts_them_by_reason():
    raw = table(
        [
            ("What is 2+2?", " Maths "),
            ("", "Maths"),  # no text
            ("   ", "Physics"),  # no text
            ("Force on a body", ""),  # no label
            ("", " "),  # no label (counted once, as missing label)
            ("?! ...", "Physics"),  # nothing left after cleaning
            ("http://only.a/link", "Physics"),  # nothing left after cleaning
            ("Speed of light", "Physics"),
        ]
    )
    out, report = clean_table(raw, ALL)
    assert out.to_dict("records") == [
        {TEXT: "what is 2 2", LABEL: "Maths"},
        {TEXT: "speed of light", LABEL: "Physics"},
    ]
    assert report == {
        "rows_in": 8,
        "rows_out": 2,
        "dropped": {"missing_label": 2, "missing_text": 2, "empty_after_cleaning": 2},
        "labels": {"Maths": 1, "Physics": 1},
    }


def test_clean_table_strips_label_whitespace():
    out, _ = clean_table(table([("a", "  Maths\t"), ("b", "Maths")]), ALL)
    assert out[LABEL].tolist() == ["Maths", "Maths"]


def test_clean_table_follows_the_clean_params():
    params = CleanParams(
        lowercase=False, remove_links=True, remove_latex=True, remove_punctuation=True
    )
    out, _ = clean_table(table([("Hello, World!", "A")]), params)
    assert out[TEXT].tolist() == ["Hello World"]


def test_clean_table_raises_when_nothing_is_left():
    with pytest.raises(PipelineError, match="No rows are left"):
        clean_table(table([("", "A"), ("!!", "B"), ("x", "")]), ALL)


# --- splitting -------------------------------------------------------------------------------


def test_split_has_no_text_in_both_splits():
    data = synthetic_table(["A", "B", "C"], 30)
    train, val, _ = split_table(data, 0.3, seed=1)
    assert not set(train[TEXT]) & set(val[TEXT])


def test_split_removes_and_counts_duplicates():
    data = synthetic_table(["A", "B"], 20)
    doubled = pd.concat([data, data.iloc[:7]], ignore_index=True)
    train, val, dropped = split_table(doubled, 0.3, seed=1)
    assert dropped == 7
    assert len(train) + len(val) == data[TEXT].nunique()
    assert not pd.concat([train, val])[TEXT].duplicated().any()


def test_split_keeps_the_first_of_repeated_texts_even_with_other_labels():
    data = table([("same", "A"), ("same", "B"), ("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")])
    train, val, dropped = split_table(data, 0.5, seed=0)
    both = pd.concat([train, val])
    assert dropped == 1
    assert both.loc[both[TEXT] == "same", LABEL].tolist() == ["A"]


def test_split_puts_every_label_in_both_splits_in_proportion():
    data = synthetic_table(["A", "B", "C"], 20)
    data = data[~((data[LABEL] == "C") & (data.index % 2 == 0))]  # make C rarer
    unique = data.drop_duplicates(TEXT)
    train, val, _ = split_table(data, 0.25, seed=3)
    assert set(train[LABEL]) == set(val[LABEL]) == {"A", "B", "C"}
    expected = unique[LABEL].value_counts().map(lambda n: round(n * 0.25))
    assert val[LABEL].value_counts().sort_index().tolist() == expected.sort_index().tolist()
    share = unique[LABEL].value_counts(normalize=True)
    val_share = val[LABEL].value_counts(normalize=True)
    assert (val_share - share).abs().max() < 0.1


def test_split_same_seed_same_split_other_seed_other_split():
    data = synthetic_table(["A", "B", "C"], 20)
    first, _, _ = split_table(data, 0.3, seed=5)
    again, _, _ = split_table(data, 0.3, seed=5)
    other, _, _ = split_table(data, 0.3, seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert set(first[TEXT]) != set(other[TEXT])


def test_split_with_one_label_names_it():
    with pytest.raises(PipelineError, match=r"only one label.*'Solo'"):
        split_table(table([(f"t{i}", "Solo") for i in range(10)]), 0.3, seed=0)


def test_split_with_a_label_of_one_row_names_it():
    rows = [(f"a{i}", "A") for i in range(10)] + [("lonely", "Rare")]
    with pytest.raises(PipelineError, match="'Rare' has only one distinct row"):
        split_table(table(rows), 0.3, seed=0)


def test_split_label_of_one_distinct_row_after_deduplication_names_it():
    rows = [(f"a{i}", "A") for i in range(10)] + [("echo", "Rare"), ("echo", "Rare")]
    with pytest.raises(PipelineError, match="'Rare'"):
        split_table(table(rows), 0.3, seed=0)


@pytest.mark.parametrize("val_size", [0.01, 0.99])
def test_split_keeps_one_row_of_each_label_in_each_split_at_extreme_sizes(val_size):
    data = synthetic_table(["A", "B", "C"], 5)
    train, val, _ = split_table(data, val_size, seed=0)
    assert set(train[LABEL]) == set(val[LABEL]) == {"A", "B", "C"}


def test_split_puts_a_rare_label_in_validation_even_with_a_small_val_size():
    rows = [(f"a{i}", "A") for i in range(100)] + [("b0", "B"), ("b1", "B")]
    train, val, _ = split_table(table(rows), 0.05, seed=42)
    assert "B" in set(val[LABEL]) and "B" in set(train[LABEL])
