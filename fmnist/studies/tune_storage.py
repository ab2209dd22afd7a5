"""A study's storage when workers crash: the journal repaired or refused with one line, and
trials whose worker died found, marked failed and run again.

Every trial a worker runs is *claimed* while it runs, so that another worker can tell a live
trial from one whose worker is gone (kill -9, a power cut, a lost machine):

- the journal file (no ``--storage``): an OS lock (``flock``) on ``.trial-locks/NNNN.lock``
  in the study folder, held from ``ask`` to ``tell``. The kernel drops it the moment the
  process dies, so a dead worker's trial is known at once, and a live one's never looks dead
  however long its trial trains. Asking for a trial and locking it happen under one more
  lock (``ask.lock``) that the search for dead trials takes too: a trial is never seen
  between the two. The journal's workers share one machine (its file lock), so OS locks
  reach all of them.
- a database (``--storage``): Optuna's heartbeats. A thread records the trial's heartbeat
  every ``heartbeat`` seconds; a trial silent for :data:`GRACE_BEATS` heartbeats is taken
  for dead (``optuna.storages.fail_stale_trials``, on the database server's clock). Four
  missed beats, not two, so that a loaded machine's late beat never gives away a live trial.

A dead trial is marked FAIL and queued again with the same values
(:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`), up to :data:`RETRIES` times: a
trial that kills its worker every time (running out of memory) is not retried for ever.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from fmnist.core.errors import FmnistError

HEARTBEAT_SECONDS = 30
GRACE_BEATS = 4
RETRIES = 2
POLL_SECONDS = 1.0  # how often a worker waiting for other workers' trials looks again
LOCKS = ".trial-locks"
# Optuna writes each record as one line of compact ASCII JSON that starts with its op code.
RECORD_START = b'{"op_code":'


# --- the journal -------------------------------------------------------------------------


def open_journal(path: Path) -> JournalStorage:
    """The journal at ``path``, its cut-short last record dropped first (see :func:`repair_journal`)."""
    repair_journal(path)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    # Records that parse but replay into nonsense (Optuna asserts on an unknown op code).
    except (KeyError, ValueError, TypeError, AttributeError, AssertionError) as e:
        detail = "a record of an unknown kind" if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
        raise FmnistError(
            f"{path}: Optuna cannot replay this journal ({detail[:200]}); "
            "restore it from a backup, or start the study afresh in another --out"
        ) from None


def repair_journal(path: Path) -> None:
    """A crash in the middle of a write leaves the journal's last record cut short: drop it,
    with a warning. Any other damage (junk, a broken record in the middle) is one error line
    that says how to keep the records before it."""
    if not path.is_file():
        return
    _, tail = _scan(path, path.read_bytes())
    if not tail:
        return
    # Writers append under the journal's own lock: with it held, a cut-short record is a dead
    # writer's, never one that a live writer is still writing.
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept, tail = _scan(path, data)
        if not tail:
            return
        whole = _is_record(tail)  # only its line end was lost
        with open(path, "r+b") as f:
            if whole:
                f.seek(len(data))
                f.write(b"\n")
                kept += 1
            else:
                f.truncate(len(data) - len(tail))
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    what = "lost its line end" if whole else "was cut short"
    warnings.warn(
        f"{path}: the last record {what} (a crash while it was written); "
        f"repaired the journal, keeping its {kept} complete records",
        stacklevel=2,
    )


def _scan(path: Path, data: bytes) -> tuple[int, bytes]:
    """The number of whole records and the cut-short tail after them (b"" when the file ends
    cleanly); raises :class:`FmnistError` for any other damage."""
    end = data.rfind(b"\n") + 1
    offset = 0
    lines = data[:end].split(b"\n")[:-1]
    for number, line in enumerate(lines, start=1):
        if not _is_record(line):
            raise _damaged(path, offset, number)
        offset += len(line) + 1
    tail = data[end:]
    if tail and not (tail.startswith(RECORD_START) and tail.isascii() and tail.decode().isprintable()):
        raise _damaged(path, end, len(lines) + 1)
    return len(lines), tail


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
        return False
    return isinstance(record, dict) and "op_code" in record


def _damaged(path: Path, offset: int, number: int) -> FmnistError:
    keep = (
        f"keep the {number - 1} records before it with `truncate -s {offset} {path}` (the trials they "
        "do not hold are lost), or restore the file from a backup"
        if number > 1
        else "restore the file from a backup, or start the study afresh in another --out"
    )
    return FmnistError(f"{path} is damaged: line {number} (byte {offset}) is not a journal record; {keep}")


# --- a database --------------------------------------------------------------------------


class Retry:
    """Optuna's retry of a dead trial, which also records the trials it was given: Optuna's
    ``fail_stale_trials`` calls it for exactly the trials this process failed."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # "experimental" in Optuna 5
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)
        self.seen: list[FrozenTrial] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.seen.append(trial)
        self.retry(study, copy.deepcopy(trial))  # it appends to the trial's own retry history


def open_database(url: str, engine_kwargs: dict[str, Any], heartbeat: int | None) -> RDBStorage:
    """An RDB storage; with ``heartbeat`` (seconds), one whose dead trials can be found."""
    beats: dict[str, Any] = {}
    if heartbeat is not None:
        beats = {
            "heartbeat_interval": heartbeat,
            "grace_period": GRACE_BEATS * heartbeat,
            "heartbeat_stale_trial_callback": Retry(),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental" in Optuna 5
        return RDBStorage(url, engine_kwargs=engine_kwargs, **beats)


# --- claims on running trials ------------------------------------------------------------


class Claims:
    """How one worker claims its trials and finds the trials of dead workers. This base
    class, for a storage that cannot tell (an in-memory one, a database without
    heartbeats), claims nothing and finds nothing."""

    def __init__(self, folder: Path, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep):
        self.folder, self.log, self.sleep = folder, log, sleep

    waiting_note = ""

    def ask(self, study: optuna.Study) -> optuna.Trial:
        return study.ask()

    def release(self) -> None:
        """Give up the claim on the trial :meth:`ask` returned (after ``tell``)."""

    def _fail_dead(self, study: optuna.Study) -> list[FrozenTrial]:
        """Mark the trials of dead workers FAIL and queue them again; return them, failed."""
        return []

    def recover(self, study: optuna.Study) -> None:
        failed = self._fail_dead(study)
        if not failed:
            return
        for t in failed:  # the half-written run folder of the dead trial
            shutil.rmtree(self.folder / "trials" / f"{t.number:04d}", ignore_errors=True)
        # Optuna's record of earlier tries (its retry_history() says the same, with a warning).
        again = [t.number for t in failed if len(t.system_attrs.get("retry_history", [])) < RETRIES]
        given_up = [t.number for t in failed if t.number not in again]
        text = f"found {len(failed)} trial(s) left RUNNING by a worker that died ({_numbers(failed)}): marked FAIL"
        if again:
            text += f"; queued {len(again)} to run again with the same values"
        if given_up:
            text += f"; not again: {', '.join(map(str, given_up))} (their worker died {RETRIES + 1} times)"
        self.log(text)

    def study_done(self, study: optuna.Study, trials: int, should_stop: Callable[[], bool]) -> bool:
        """Whether this worker should start no more trials: the study holds ``trials`` finished
        ones, or other workers' running trials make up the rest. Those are waited for, so
        that one whose worker died is found and run again here rather than left RUNNING."""
        said = False
        while True:
            self.recover(study)
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if len(finished) + len(running) < trials:
                return False
            if len(finished) >= trials or should_stop():
                return True
            if not said:
                self.log(f"waiting for trial(s) {_numbers(running)} of other workers to finish{self.waiting_note}")
                said = True
            self.sleep(POLL_SECONDS)


def _numbers(trials: list[FrozenTrial]) -> str:
    return ", ".join(str(t.number) for t in trials)


def _lock_fd(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


class JournalClaims(Claims):
    """Claims by OS locks in ``<study folder>/.trial-locks`` (see the module's docstring)."""

    def __init__(self, folder: Path, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep):
        super().__init__(folder, log, sleep)
        self.locks = folder / LOCKS
        self.held: tuple[int, Path] | None = None

    def _lock_path(self, number: int) -> Path:
        return self.locks / f"{number:04d}.lock"

    @contextlib.contextmanager
    def _asking(self) -> Iterator[None]:
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = _lock_fd(self.locks / "ask.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def ask(self, study: optuna.Study) -> optuna.Trial:
        with self._asking():
            trial = study.ask()
            path = self._lock_path(trial.number)
            fd = _lock_fd(path)
            # Uncontended: only a search for dead trials locks another's file, under ask.lock.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = (fd, path)
        return trial

    def release(self) -> None:
        if self.held is not None:
            fd, path = self.held
            self.held = None
            # Unlinking first is safe: a search that locks a new file of this name finds the
            # trial finished, and a finished trial cannot be marked FAIL.
            path.unlink(missing_ok=True)
            os.close(fd)

    def _alive(self, number: int) -> bool:
        fd = _lock_fd(self._lock_path(number))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _fail_dead(self, study: optuna.Study) -> list[FrozenTrial]:
        retry = Retry()
        with self._asking():
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if self._alive(t.number):
                    continue
                self._lock_path(t.number).unlink(missing_ok=True)
                try:
                    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:  # it finished between the listing and the lock
                    continue
                retry(study, copy.deepcopy(study._storage.get_trial(t._trial_id)))
        return retry.seen


class _Heartbeat:
    """Records a trial's heartbeat now and every ``interval`` seconds until stopped."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stopped = threading.Event()
        # At once: Optuna never finds a trial stale that has no heartbeat at all.
        storage.record_heartbeat(trial_id)
        self.thread = threading.Thread(target=self._beat, name="fmnist-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            # The database is away: the trial's own next write fails with the reason; a beat
            # that gets through again in time keeps the trial alive.
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                self.storage.record_heartbeat(self.trial_id)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


class HeartbeatClaims(Claims):
    """Claims by Optuna's heartbeats in a database (see the module's docstring)."""

    def __init__(
        self, storage: RDBStorage, folder: Path, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep
    ):
        super().__init__(folder, log, sleep)
        self.storage = storage
        self.beat: _Heartbeat | None = None
        grace = storage.grace_period
        self.waiting_note = f" (one whose worker is silent for {grace} s is taken for dead and run again here)"

    def ask(self, study: optuna.Study) -> optuna.Trial:
        with warnings.catch_warnings():
            # Optuna's heartbeats assume Study.optimize; ours are run by hand, below.
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
            trial = study.ask()
        self.beat = _Heartbeat(self.storage, trial._trial_id, self.storage.heartbeat_interval)
        return trial

    def release(self) -> None:
        if self.beat is not None:
            self.beat.stop()
            self.beat = None

    def _fail_dead(self, study: optuna.Study) -> list[FrozenTrial]:
        retry = self.storage.heartbeat_stale_trial_callback
        if not isinstance(retry, Retry):  # a storage not opened by open_database
            return []
        retry.seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(study)  # calls `retry` for each trial it failed
        return retry.seen


def claims_for(storage: Any, folder: Path, log: Callable[[str], None]) -> Claims:
    if isinstance(storage, JournalStorage):
        return JournalClaims(folder, log)
    if isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None:
        return HeartbeatClaims(storage, folder, log)
    return Claims(folder, log)
