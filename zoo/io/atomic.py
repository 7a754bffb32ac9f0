"""Write-then-rename helpers: a reader never sees a half-written file or directory.

Every writer in ``zoo`` produces its output under a temporary name in the *same* directory as the target (so the
final ``os.replace`` is a same-filesystem rename, which POSIX makes atomic) and renames it only once the content is
complete. A crash leaves at most a hidden ``.<name>.<pid>.<random>.tmp*`` entry behind, never a truncated target.
Files are not fsync'ed: the guarantee covers crashed or killed processes, not power loss.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_dir", "temp_sibling", "write_json", "read_json_object"]


def temp_sibling(path: str | os.PathLike, keep_suffix: bool = True) -> Path:
    """A fresh hidden name next to ``path``; it keeps the suffix because numpy, soundfile and ffmpeg pick the
    format from it (``np.save`` would otherwise append ``.npy`` and the rename would miss the file)."""
    path = Path(path)
    suffix = "".join(path.suffixes[-1:]) if keep_suffix else ""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it is renamed over ``path`` when the block exits
    normally and deleted when it raises. Parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data, **dumps_options) -> None:
    """Write ``data`` as indented JSON (a trailing newline) to ``path`` atomically; ``dumps_options`` go to
    :func:`json.dumps` (e.g. ``sort_keys=True``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, **dumps_options) + "\n")


def read_json_object(path: str | os.PathLike, hint: str = "") -> dict:
    """The JSON object in ``path`` (a record :func:`write_json` wrote); one :class:`~zoo.errors.DataError` line naming
    the file, followed by ``hint`` (e.g. how to recover), when it cannot be read, parsed or is not an object."""
    from zoo.errors import DataError

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot parse {path}: {error}{hint}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object{hint}")
    return record


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``path`` when the block exits normally.

    An existing ``path`` is replaced: it is first renamed aside and removed after the new directory is in place,
    so ``path`` is always either the complete old or the complete new content (absent for an instant between the
    two renames).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, keep_suffix=False)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if path.exists():
            old = temp_sibling(path, keep_suffix=False)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
