"""Writing outputs so that a failed or interrupted stage never leaves a file that looks finished."""

import glob
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

# The part of mkstemp's name after ".<name>": a dot, its random letters, ".tmp".
_TMP_NAME = re.compile(r"\.[A-Za-z0-9_]{6,}\.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An OSError (a parent that is a file, no permission, a full disk) becomes a PipelineError
    naming `path`.

    A process killed with SIGKILL (the OOM killer, a power cut) cannot remove its temporary
    file; the next write of `path` removes such leftovers first. Only one process writes a given
    output at a time (DVC's lock, rank 0 alone in distributed training), so none is in use.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _cannot_write(path, err) from None
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
    try:
        yield Path(tmp)
        _hold_for_tests()
        os.replace(tmp, path)
    except OSError as err:
        raise _cannot_write(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_leftovers(path: Path) -> None:
    """Remove temporary files an earlier, killed write of `path` left beside it."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if _TMP_NAME.fullmatch(stale.name[len(path.name) + 1 :]) and stale.is_file():
            stale.unlink(missing_ok=True)


def _hold_for_tests() -> None:
    """Tests only (PIPELINE_TEST_HOLD_TMP=seconds): wait with the written temporary file not yet
    renamed, so that a test can kill the stage at that moment (tests/test_crashes.py)."""
    seconds = os.environ.get("PIPELINE_TEST_HOLD_TMP")
    if seconds:
        time.sleep(float(seconds))


def _cannot_write(path: Path, err: OSError) -> PipelineError:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        reason = f"{blocker} is a file, not a directory"
    elif path.is_dir():
        reason = "a directory of that name is in the way"
    else:
        reason = (err.strerror or str(err)).lower()
    return PipelineError(f"Cannot write {path}: {reason}; choose another output path.")


@contextmanager
def all_or_nothing(*outputs: Path) -> Iterator[None]:
    """Remove what the block wrote to `outputs` (files, or the files anywhere inside directories)
    if it fails, so that a stage which stops halfway leaves no mix of new and old outputs."""
    before = _files(outputs)
    try:
        yield
    except BaseException:
        for path, identity in _files(outputs).items():
            if before.get(path) != identity:
                path.unlink()
        raise


def _files(outputs: tuple[Path, ...]) -> dict[Path, tuple[int, int]]:
    """(inode, mtime) of every output file: atomic_path's rename gives a new file a new inode."""
    files = {}
    for output in map(Path, outputs):
        for path in output.rglob("*") if output.is_dir() else [output]:
            if path.is_file():
                stat = path.stat()
                files[path] = (stat.st_ino, stat.st_mtime_ns)
    return files


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    """Write JSON with sorted keys and a final newline, so equal data gives equal bytes."""
    atomic_write_text(
        path, json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
