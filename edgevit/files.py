"""Files a crash, a full disk or a user can damage: written atomically, read with one-line errors.

Every write goes to a temporary name beside its target and is renamed into place only when it is
complete, so a crash or a full disk leaves the previous good file and never a half-written one that
looks finished; a disk error becomes one `EdgevitError` line naming the file. Every read of a file
edgevit made (checkpoints, manifests, the teacher-logit cache) turns an empty, truncated or garbled
file into one line naming the file and what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError

_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}
_DISK_WORDS = ("No space left", "File too large", "file write failed", "Disk quota", "Read-only file system")


def disk_error(path: str | Path, exc: BaseException) -> EdgevitError | None:
    """A one-line error for a failed write caused by the disk (full, file too large, gone), else None.
    Libraries wrap the OS error (torch.save raises RuntimeError from an OSError), so the chain is searched."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS or any(w in str(seen) for w in _DISK_WORDS):
            why = os.strerror(seen.errno) if isinstance(seen, OSError) and seen.errno else "the write failed"
            return EdgevitError(
                f"could not write {path}: {why} (disk full or file-size limit?); free space "
                f"and run again; the previous file, if any, is kept"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _write_failed(path: Path, exc: BaseException) -> BaseException:
    err = disk_error(path, exc)
    if err is not None:
        return err
    if isinstance(exc, OSError):
        return EdgevitError(f"could not write {path}: {exc.strerror or exc}; check the folder exists and is writable")
    return exc


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        raise _write_failed(path, exc) from exc


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, default=str))


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk surfaces as OSError
        torch.save(obj, f)


def replace_dir(src: Path, final: Path) -> None:
    """Rename folder `src` to `final`; an older `final` is moved aside first and removed afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{time.time_ns()}")
        final.rename(old)
    src.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; it replaces `final` only when the block
    succeeds (an older `final` is removed afterwards), and is removed when it fails."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(final, exc) from exc


def _damaged(path: Path, what: str, fix: str, exc: BaseException | None = None) -> EdgevitError:
    if not path.exists():
        return EdgevitError(f"{path}: no such {what}; {fix}")
    if path.is_file() and path.stat().st_size == 0:
        return EdgevitError(f"{path} is empty (a {what} cut off before it was written?); {fix}")
    kind = f" ({type(exc).__name__})" if exc is not None else ""
    return EdgevitError(f"{path} is not a readable {what} (truncated or damaged{kind}); {fix}")


def read_torch(path: str | Path, what: str, fix: str) -> Any:
    """torch.load(weights_only=True) of a file edgevit or a user wrote; damage -> one line."""
    import torch

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise _damaged(path, what, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "damaged or not ours"
        raise _damaged(path, what, fix, exc) from None


def read_json(path: str | Path, what: str, fix: str) -> Any:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise _damaged(path, what, fix)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _damaged(path, what, fix, exc) from None
