"""A study's journal: Optuna's JSON-lines log in the study folder, replayed when it is opened.

Optuna ignores an unfinished last line (a writer killed mid-line, or one still writing), but a
damaged line before it, or a line that is JSON of the wrong shape, surfaces as whatever the
replay trips over (UnicodeDecodeError, TypeError, KeyError, an assertion): here that is one
:class:`FmnistError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from optuna.storages.journal import JournalFileBackend, JournalStorage

from .errors import FmnistError

# What Optuna 4-5's replay raises on a damaged journal (json, bytes and dict access, asserts).
REPLAY_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError)


def open_journal(path: Path) -> JournalStorage:
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except REPLAY_ERRORS as e:
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FmnistError(
            f"{path}: the study journal is damaged ({cause}); restore it, or start the study afresh in another --out"
        ) from None
