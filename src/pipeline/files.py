"""Writing outputs so that a failed or interrupted stage never leaves a file that looks finished."""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An OSError (a parent that is a file, no permission, a full disk) becomes a PipelineError
    naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _cannot_write(path, err) from None
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise _cannot_write(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
