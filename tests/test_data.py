"""Reading, cleaning and splitting tables."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import CleanParams
from pipeline.data import (
    LABEL,
    ORIGINAL,
    TEXT,
    clean_table,
    read_columns,
    read_raw,
    read_table,
    split_rows,
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


def test_read_columns_keeps_every_column_and_names_the_setting(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("id,id,text\n1,1,a\n", encoding="utf-8")
    table = read_columns(path, [("text", "--text-column")], fix="check the --input path")
    assert list(table.columns) == ["id", "id", "text"]  # only the named columns must be unique
    with pytest.raises(PipelineError, match=r"no column 'label' \(--label\); its columns are"):
        read_columns(path, [("label", "--label")], fix="check it")


def test_read_columns_rejects_a_named_column_that_is_there_twice(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("text, text\nWhat is a force?,a\n", encoding="utf-8")  # names are stripped
    with pytest.raises(PipelineError, match=r"2 columns named 'text' \(--text-column\)"):
        read_columns(path, [("text", "--text-column")], fix="check it")


def test_read_columns_tells_how_to_fix_a_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist; check the --input path"):
        read_columns(tmp_path / "nope.csv", [("text", "--text-column")], "check the --input path")


def test_read_table_rejects_foreign_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="not written by this pipeline"):
        read_table(path)


def test_read_table_of_no_rows_only_when_allowed(tmp_path):
    path = tmp_path / "test.csv"
    write_table(table([]), path)
    assert path.read_text(encoding="utf-8") == "text,label\n"
    with pytest.raises(PipelineError, match="has no rows"):
        read_table(path)
    empty = read_table(path, allow_empty=True)
    assert empty.empty and list(empty.columns) == [TEXT, LABEL]


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
        {TEXT: "what is 2 2", LABEL: "Maths", ORIGINAL: "What is 2+2?"},
        {TEXT: "speed of light", LABEL: "Physics", ORIGINAL: "Speed of light"},
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


# --- splitting with held-out test rows -------------------------------------------------------


def split_before_test_rows(data: pd.DataFrame, val_size: float, seed: int):
    """The train/validation split as it was before split.test_size existed, verbatim."""
    unique = data.drop_duplicates(subset=TEXT, keep="first").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    val_index = []
    for _, rows in unique.groupby(LABEL, sort=True):
        n_val = min(max(round(len(rows) * val_size), 1), len(rows) - 1)
        val_index.extend(rng.permutation(rows.index.to_numpy())[:n_val])
    in_val = unique.index.isin(val_index)
    return unique[~in_val].reset_index(drop=True), unique[in_val].reset_index(drop=True)


@pytest.mark.parametrize(("seed", "val_size"), [(0, 0.3), (42, 0.3), (7, 0.05), (3, 0.9)])
def test_split_with_no_test_rows_is_the_train_val_split_of_before(seed, val_size):
    data = synthetic_table(["A", "B", "C"], 40, seed=seed)
    data = pd.concat([data, data.iloc[:9]], ignore_index=True)  # some repeated texts
    train, val, test, duplicates = split_rows(data, val_size, 0.0, seed)
    old_train, old_val = split_before_test_rows(data, val_size, seed)
    pd.testing.assert_frame_equal(train, old_train)  # same rows, same order
    pd.testing.assert_frame_equal(val, old_val)
    assert test.empty and list(test.columns) == [TEXT, LABEL]
    assert duplicates == 9
    two_way = split_table(data, val_size, seed)
    pd.testing.assert_frame_equal(two_way[0], train)
    pd.testing.assert_frame_equal(two_way[1], val)


def test_split_with_test_rows_is_stratified_and_disjoint():
    data = synthetic_table(["A", "B", "C"], 40)
    data = data[~((data[LABEL] == "C") & (data.index % 2 == 0))]  # make C rarer
    data = pd.concat([data, data.iloc[:5]], ignore_index=True)
    unique = data.drop_duplicates(TEXT)
    train, val, test, duplicates = split_rows(data, 0.3, 0.2, seed=4)
    assert duplicates == 5
    texts = [set(part[TEXT]) for part in (train, val, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert len(train) + len(val) + len(test) == len(unique)
    assert set().union(*texts) == set(unique[TEXT])
    counts = unique[LABEL].value_counts().sort_index()
    # Both shares are of each label's rows: test first, validation from the rest.
    assert test[LABEL].value_counts().sort_index().tolist() == [round(n * 0.2) for n in counts]
    assert val[LABEL].value_counts().sort_index().tolist() == [round(n * 0.3) for n in counts]
    for part in (train, val, test):
        assert set(part[LABEL]) == {"A", "B", "C"}
    # Each row keeps its label.
    labelled = dict(zip(unique[TEXT], unique[LABEL], strict=True))
    for part in (train, val, test):
        assert all(labelled[t] == y for t, y in zip(part[TEXT], part[LABEL], strict=True))


def test_split_with_test_rows_is_seeded():
    data = synthetic_table(["A", "B", "C"], 20)
    first, again, other = (split_rows(data, 0.3, 0.2, seed) for seed in (5, 5, 6))
    for a, b in zip(first[:3], again[:3], strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert set(first.test[TEXT]) != set(other.test[TEXT])


@pytest.mark.parametrize(("val_size", "test_size"), [(0.01, 0.01), (0.5, 0.49), (0.98, 0.01)])
def test_split_keeps_one_row_of_each_label_in_each_of_three_splits(val_size, test_size):
    data = synthetic_table(["A", "B", "C"], 3)  # three rows per label: one for each split
    train, val, test, _ = split_rows(data, val_size, test_size, seed=0)
    for part in (train, val, test):
        assert part[LABEL].value_counts().to_dict() == {"A": 1, "B": 1, "C": 1}


def test_split_with_test_rows_names_a_label_of_two_rows():
    rows = [(f"a{i}", "A") for i in range(10)] + [("b0", "Rare"), ("b1", "Rare")]
    assert len(split_rows(table(rows), 0.3, 0.0, seed=0).val) > 0  # enough without test rows
    with pytest.raises(PipelineError) as info:
        split_rows(table(rows), 0.3, 0.2, seed=0)
    message = str(info.value)
    assert "'Rare' has fewer than three distinct rows" in message
    assert "train, validation and test" in message
    assert "split.test_size to 0" in message
