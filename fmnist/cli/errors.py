"""Operating-system errors as one line that says what to do."""

from __future__ import annotations

import errno
from pathlib import Path

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (or choose another --out) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you may write to, or fix its permissions",
    errno.EPERM: "permission denied: choose a folder you may write to, or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EEXIST: "something of that name is already there",
}


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: the path, the cause, and what to do."""
    where = e.filename if e.filename is not None else "(no path)"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    cause = e.strerror or str(e)
    hint = _OS_HINTS.get(e.errno)
    return f"{where}: {cause}" + (f" ({hint})" if hint else "")


def dash_file_hint(option_name: str | None, argv: list[str]) -> str:
    """Click reads `-dash.png` as the options -d, -a, ...: when such a name is a file, say how to pass it."""
    for arg in argv if option_name else ():
        if (arg == option_name or (arg.startswith(option_name) and not option_name.startswith("--"))) and Path(
            arg
        ).exists():
            return f" ({arg} is a file: to pass it, write `-- {arg}` or `./{arg}`)"
    return ""
