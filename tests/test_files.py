"""Writing outputs atomically."""

import json
import os
import stat

import pytest

from pipeline.errors import PipelineError
from pipeline.files import all_or_nothing, atomic_path, atomic_write_text, write_json


def test_atomic_write_text_writes_content_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "héllo\nwörld\n")
    assert path.read_bytes() == "héllo\nwörld\n".encode()
    assert os.listdir(path.parent) == ["out.txt"]


def test_atomic_write_text_replaces_an_existing_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old content that is longer", encoding="utf-8")
    atomic_write_text(path, "new")
    assert path.read_text(encoding="utf-8") == "new"


def test_written_file_is_world_readable(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_path_writes_nothing_visible_until_the_block_ends(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("partial", encoding="utf-8")
        assert tmp.parent == tmp_path
        assert tmp != path
        assert not path.exists()
    assert path.read_text(encoding="utf-8") == "partial"
    assert not tmp.exists()


def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_text("half written", encoding="utf-8")
        raise RuntimeError("boom")
    assert not path.exists()
    assert not tmp.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("finished earlier", encoding="utf-8")
    with pytest.raises(ValueError), atomic_path(path) as tmp:
        tmp.write_text("broken", encoding="utf-8")
        raise ValueError
    assert path.read_text(encoding="utf-8") == "finished earlier"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_json_sorted_keys_and_trailing_newline(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": {"z": 2.5, "y": "é"}})
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert text.index('"a"') < text.index('"b"')
    assert text.index('"y"') < text.index('"z"')
    assert "é" in text  # not escaped
    assert json.loads(text) == {"a": {"y": "é", "z": 2.5}, "b": 1}


def test_write_json_equal_dicts_give_equal_bytes(tmp_path):
    one = {"accuracy": 0.5, "per_class": {"B": {"f1": 1.0, "support": 2}, "A": {"f1": 0.0}}}
    two = {"per_class": {"A": {"f1": 0.0}, "B": {"support": 2, "f1": 1.0}}, "accuracy": 0.5}
    assert list(one) != list(two)
    write_json(tmp_path / "one.json", one)
    write_json(tmp_path / "two.json", two)
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_atomic_path_under_a_file_names_it(tmp_path):
    (tmp_path / "blocker").write_text("x", encoding="utf-8")
    with pytest.raises(PipelineError, match="blocker is a file, not a directory"):
        atomic_write_text(tmp_path / "blocker" / "sub" / "out.txt", "x")
    assert os.listdir(tmp_path) == ["blocker"]


def test_atomic_path_onto_a_directory_leaves_no_temporary_file(tmp_path):
    (tmp_path / "out.txt").mkdir()
    with pytest.raises(PipelineError, match="directory of that name is in the way"):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert os.listdir(tmp_path) == ["out.txt"]


def test_all_or_nothing_removes_only_what_the_failed_block_wrote(tmp_path):
    old, new, untouched = tmp_path / "old.txt", tmp_path / "d" / "new.txt", tmp_path / "d" / "u"
    atomic_write_text(old, "earlier run")
    atomic_write_text(untouched, "not an output of this run")
    with pytest.raises(PipelineError), all_or_nothing(old, tmp_path / "d"):
        atomic_write_text(new, "this run")
        atomic_write_text(old, "this run")
        raise PipelineError("later step failed")
    assert not old.exists() and not new.exists()
    assert untouched.read_text(encoding="utf-8") == "not an output of this run"


def test_all_or_nothing_keeps_outputs_when_the_block_succeeds(tmp_path):
    with all_or_nothing(tmp_path / "a.txt"):
        atomic_write_text(tmp_path / "a.txt", "done")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "done"
