"""Writing files so that nothing is ever half-written, and locking a folder against a second
writer. A leaf below everything that writes: imports only :mod:`fmnist.errors`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half:
    a temporary file in the same folder, flushed to disk, then renamed over the target."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file the user asked for, not our temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    try:
        # mkstemp makes the file owner-only; give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            # A full disk fails in write() or fsync(), which name no file: name the target.
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def missing_reason(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be opened although it may look present: ``Path.exists`` says False
    for a symbolic link that loops or points nowhere as for a name that is not there."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a loop of symbolic links (it points back to itself); point the link at a real file"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        if e.errno != errno.ENOENT:
            return e.strerror or str(e)
    return "no such file"


def check_writable(folder: str | os.PathLike) -> None:
    """Raise the OSError that writing into ``folder`` would raise (read-only, no permission,
    a file in the way), before a long computation rather than after it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fmnist-probe.", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: ``NaN`` and ``Infinity`` are
    not JSON, and a reader in another language would reject the whole file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (no NaN), with non-finite numbers written as null."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps(obj) + "\n")


LOCK_NAME = ".fmnist.lock"


class FolderLock:
    """An exclusive OS lock (``flock``) on ``<folder>/.fmnist.lock``, which also records the
    holder's PID. The kernel releases it when the process dies, even by ``kill -9``, so a
    crashed writer never leaves a folder locked. A second writer gets one line naming the
    holder instead of mixing its files with the first one's."""

    def __init__(self, folder: str | os.PathLike, what: str = "written"):
        self.folder = Path(folder)
        self.what = what
        self.fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise FmnistError(
                f"{self.folder} is being {self.what} by another fmnist process (PID {holder_pid(self.folder) or '?'}); "
                "wait for it to finish, stop it, or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_pid(folder: str | os.PathLike) -> int | None:
    """The PID written by the last process that locked ``folder`` (it may have ended)."""
    try:
        return int((Path(folder) / LOCK_NAME).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_locked(folder: str | os.PathLike) -> bool:
    """Whether a live process holds ``folder``'s lock right now."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
