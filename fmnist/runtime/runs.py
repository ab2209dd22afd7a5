"""The run folder: the one owner of its file names, whether it holds a finished run, how to
read what training wrote, the claim a training run holds on it, and the files other commands
derive from its model.

``fmnist train`` writes ``config.json`` first and ``summary.json`` last, so a folder with a
config but no summary holds an unfinished run (killed, interrupted or still training);
``resume.safetensors`` then holds the state to continue it.

Commands that derive files from the trained model (evaluate, report, export, audit) write
them with :meth:`RunFolder.write_derived`, which first records the name in
``.fmnist-derived``. ``--overwrite`` removes what that list names, so a new command's files
go stale with the model they came from without anyone adding their names to a list.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.core.files import (
    LOCK_NAME,
    FolderLock,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps,
    is_locked,
)
from fmnist.runtime.inference import ONNX_FILE
from fmnist.runtime.modelfile import MODEL_FILE, read_model_info
from fmnist.runtime.run_summary import RunSummary
from fmnist.runtime.runfiles import parse_run_json

RUN_FORMAT = "fmnist-run/1"  # the marker in config.json that says fmnist wrote the folder

CONFIG = "config.json"
METRICS = "metrics.csv"
MODEL = MODEL_FILE
SUMMARY = "summary.json"
RESUME = "resume.safetensors"
# Where --overwrite moves the old run until the new one finishes (restored if the new one fails first).
REPLACED = ".fmnist-replaced"
# The names write_derived wrote into the folder, one a line (appended: two commands may write at once).
DERIVED_LIST = ".fmnist-derived"
# Written by training.
TRAINING_FILES = (CONFIG, METRICS, MODEL, SUMMARY, RESUME, LOCK_NAME)

TEST_METRICS = "test_metrics.json"
CONFUSION = "confusion_matrix.png"
ONNX = ONNX_FILE
ONNX_INT8 = "model.int8.onnx"
REPORT = "report.html"
REPORT_FIGURES = (
    "training_curves.png",
    "confused_pairs.png",
    "misclassified.png",
    "reliability.png",
    "reliability_uncalibrated.png",
    "first_test_image.png",
)
# fmnist audit: the ranked suspects of both splits, a grid of each, a page; its fold runs in a folder.
AUDIT_TABLE = "label_audit.csv"
AUDIT_PAGE = "label_audit.html"
AUDIT_GRIDS = {"train": "label_audit_train.png", "test": "label_audit_test.png"}
AUDIT_DIR = "audit"
# fmnist train --tensorboard: a folder of TensorBoard event files (fmnist.tracking writes it).
TENSORBOARD = "tensorboard"
# The derived files fmnist wrote before .fmnist-derived existed, so that --overwrite finds them
# in older folders too. Complete as it is: a new derived file is recorded by write_derived.
DERIVED_FILES = (
    TEST_METRICS,
    CONFUSION,
    ONNX,
    ONNX_INT8,
    REPORT,
    *REPORT_FIGURES,
    AUDIT_TABLE,
    AUDIT_PAGE,
    *AUDIT_GRIDS.values(),
)


class RunFolder:
    """A folder written by ``fmnist train`` (or about to be)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- what is there ------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``missing`` (no folder), ``empty`` (no run in it), ``foreign`` (files named like
        a run's that fmnist did not write), ``unfinished`` or ``finished``."""
        if not self.path.exists():
            return "missing"
        if not (self / CONFIG).is_file():
            others = (MODEL, METRICS, SUMMARY, RESUME)
            return "foreign" if any((self / n).exists() for n in others) else "empty"
        if not self.is_ours():
            return "foreign"
        return "finished" if (self / SUMMARY).is_file() else "unfinished"

    def is_ours(self) -> bool:
        """Whether config.json is fmnist's (a user's own config.json is not)."""
        try:
            config = json.loads((self / CONFIG).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(config, dict):
            return False
        if config.get("format") == RUN_FORMAT:
            return True
        # fmnist 0.1 wrote no marker into config.json; its model file carries one.
        try:
            return "resolved" in config and bool(read_model_info(self / MODEL))
        except FmnistError:
            return False

    def owned_files(self) -> list[Path]:
        """The files in the folder that fmnist writes (and ``--overwrite`` may remove)."""
        names = dict.fromkeys((*TRAINING_FILES, *DERIVED_FILES, *self.recorded_derived(), DERIVED_LIST))
        return [self / n for n in names if n != LOCK_NAME and (self / n).is_file()]

    @property
    def running(self) -> bool:
        """Whether a live process is writing the folder now."""
        return is_locked(self.path)

    def warn_if_unfinished(self) -> None:
        """For commands that use a trained model: say so when training did not finish."""
        if self.status == "unfinished":
            if self.running:
                how = f"training is still running; its {MODEL} is the best epoch so far"
            else:
                how = f"training stopped early; continue it with `fmnist train --resume {self.path}` or retrain"
            warnings.warn(f"{self.path} holds an unfinished run: {how}", stacklevel=2)

    def lock(self, what: str = "written") -> FolderLock:
        self.path.mkdir(parents=True, exist_ok=True)
        return FolderLock(self.path, what)

    def claim(self, overwrite: bool = False, resuming: bool = False) -> Claim:
        """The hold a training run takes on the folder, as a context manager: see :class:`Claim`."""
        return Claim(self, overwrite, resuming)

    # --- reading and writing ------------------------------------------------------------

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run, checked for damage and impossible values (fmnist/runfiles.py)."""
        try:
            text = (self / name).read_text()
        except FileNotFoundError:
            raise FmnistError(
                f"{self / name}: no such file; is {self.path} a run folder from `fmnist train`?"
            ) from None
        except (OSError, ValueError) as e:
            raise FmnistError(f"{self / name}: unreadable or not JSON ({e}); retrain or restore it") from None
        return parse_run_json(self / name, text)

    def read_config(self) -> dict[str, Any]:
        return self.read_json(CONFIG)

    def read_summary(self) -> RunSummary:
        return RunSummary.from_dict(self.read_json(SUMMARY))

    def write_config(self, values: dict[str, Any]) -> None:
        atomic_write_json(self / CONFIG, {"format": RUN_FORMAT, **values})

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_json(self / SUMMARY, summary.to_dict())

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(history[0]))
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(self / METRICS, buf.getvalue())

    def read_metrics(self) -> list[dict[str, float]]:
        """One dict per epoch. A file with missing, extra-short or non-numeric rows is an
        :class:`FmnistError`, never a crash half-way through a report."""
        try:
            with open(self / METRICS, newline="") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise FmnistError(f"{self / METRICS}: no such file") from None
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise FmnistError(f"{self / METRICS}: unreadable ({e})") from None
        needed = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
        out = []
        for i, row in enumerate(rows, 2):
            try:
                out.append({k: float(v) for k, v in row.items() if k is not None})
            except (TypeError, ValueError):
                raise FmnistError(f"{self / METRICS}: line {i} is not all numbers; retrain or restore it") from None
            if not all(k in out[-1] for k in needed):
                raise FmnistError(f"{self / METRICS}: lacks one of the columns {', '.join(needed)}")
        return out

    # --- files derived from the model ---------------------------------------------------

    def write_derived(self, name: str, data: bytes | str | dict[str, Any]) -> Path:
        """Write ``name`` (bytes, text, or a dict as JSON) into the folder, atomically. In a
        folder that holds a run, the name is recorded first, so retraining with ``--overwrite``
        (which makes the file stale) removes it. Returns the path written."""
        target = self / name
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"{name!r} is not a file name")
        if not _derivable(name):
            raise FmnistError(f"{target} is one of the run's own files; write to another name")
        if isinstance(data, dict):
            data = dumps(data) + "\n"
        if name not in self.recorded_derived() and self.is_ours():
            try:
                # One short append (O_APPEND) per name: two commands writing at once lose neither.
                with open(self / DERIVED_LIST, "a", encoding="utf-8") as f:
                    f.write(name + "\n")
            except OSError as e:  # a read-only folder: name the file the user asked for
                raise OSError(e.errno, e.strerror or str(e), str(target)) from None
        atomic_write_bytes(target, data.encode("utf-8") if isinstance(data, str) else data)
        return target

    def recorded_derived(self) -> list[str]:
        """The names :meth:`write_derived` recorded in this folder."""
        try:
            text = (self / DERIVED_LIST).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
        # Whole lines only: an append cut short by a crash names no file.
        return [n for n in dict.fromkeys(text.split("\n")[:-1]) if _derivable(n)]

    # --- replacing a run ----------------------------------------------------------------

    def clear(self) -> None:
        """Remove the files fmnist wrote (the event folder of ``--tensorboard`` too), and nothing else."""
        for f in self.owned_files():
            f.unlink(missing_ok=True)
        if (self / TENSORBOARD).is_dir():
            shutil.rmtree(self / TENSORBOARD)

    def set_aside(self) -> None:
        """Move the run's files into ``.fmnist-replaced/`` (a rename: no copy, no extra space),
        where they stay until the new run finishes (:meth:`drop_aside`) or fails before it
        saved anything (:meth:`restore_aside`). If an older run is already set aside (a
        replacement that never finished), that one is kept and the current files are removed.
        The ``tensorboard/`` event folder goes with them."""
        aside = self / REPLACED
        if aside.is_dir():
            self.clear()
            return
        aside.mkdir()
        for f in self.owned_files():
            os.replace(f, aside / f.name)
        # The old run's curves: left in place, TensorBoard would draw them into the new run's.
        if (self / TENSORBOARD).is_dir():
            os.replace(self / TENSORBOARD, aside / TENSORBOARD)

    def restore_aside(self) -> None:
        """Put the run set aside back in place of what is in the folder now."""
        aside = self / REPLACED
        if not aside.is_dir():
            return
        self.clear()
        for f in aside.iterdir():
            os.replace(f, self / f.name)
        aside.rmdir()

    def drop_aside(self) -> None:
        """The new run is finished: delete the old one."""
        shutil.rmtree(self / REPLACED, ignore_errors=True)


def _derivable(name: str) -> bool:
    """A plain file name in the folder that is none of training's or the folder's own."""
    reserved = ("", ".", "..", *TRAINING_FILES, DERIVED_LIST, REPLACED)
    return Path(name).name == name and name not in reserved


class Claim:
    """A training run's hold on its run folder, from :meth:`RunFolder.claim`: the lock, the
    checks (never mix two runs, never touch files fmnist did not write) and, with
    ``overwrite``, the old run set aside, all before anything is written.

    Leaving the ``with`` block by an exception before :meth:`keep` gives the folder back as
    it was found: the new run's files removed, the old run restored, and the lock file and
    the folder removed if the claim made them. After :meth:`keep` (the run saved a model, or
    stopped on request with its state saved) everything stays for ``--resume``, and an old run
    stays in ``.fmnist-replaced/`` until a run in this folder finishes. A resumed run is kept
    from the start: its files were there before it."""

    def __init__(self, folder: RunFolder, overwrite: bool = False, resuming: bool = False):
        self.folder, self.overwrite, self.resuming = folder, overwrite, resuming
        self.kept = resuming
        self._lock: FolderLock | None = None
        self._claimed = self._set_aside = self._created = self._had_lock_file = False

    def keep(self) -> None:
        """The folder now holds something worth keeping: a failure from here on leaves it."""
        self.kept = True

    def __enter__(self) -> Claim:
        folder = self.folder
        self._created = not folder.path.exists()
        self._had_lock_file = (folder / LOCK_NAME).exists()
        try:
            if folder.path.exists() and not folder.path.is_dir():
                raise FmnistError(f"{folder.path} exists and is not a folder; choose another --out")
            self._lock = folder.lock().acquire()
            status = folder.status
            if self.resuming:
                self._check_resumable(status)
            else:
                self._check_replaceable(status)
                if status in ("unfinished", "finished"):
                    folder.set_aside()
                    self._set_aside = True
        except BaseException:
            self._give_back()
            raise
        self._claimed = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and not self.kept:
            with contextlib.suppress(OSError):
                self._give_back()
        elif exc is None and self.folder.status == "finished":
            # A finished run needs no lock file (fmnist's own, by its name): it is removed while
            # still held, so nothing of the run's claim is left in the folder.
            with contextlib.suppress(OSError):
                (self.folder / LOCK_NAME).unlink()
        self._release()

    def _check_resumable(self, status: str) -> None:
        path = self.folder.path
        if status == "finished":
            raise FmnistError(f"{path} is a finished run ({SUMMARY} is written); there is nothing to resume")
        if status != "unfinished":
            raise FmnistError(f"{path} holds no fmnist run to resume")
        if not (self.folder / RESUME).is_file():
            raise FmnistError(f"{path} has no resume state ({RESUME}); retrain with --overwrite")

    def _check_replaceable(self, status: str) -> None:
        path = self.folder.path
        if status == "foreign":
            raise FmnistError(
                f"{path} holds files fmnist did not write ({CONFIG}, model or metrics); "
                "choose another --out (--overwrite never removes them)"
            )
        if status in ("unfinished", "finished") and not self.overwrite:
            raise FmnistError(
                f"{path} already holds {'an unfinished' if status == 'unfinished' else 'a'} run; "
                "pass --overwrite to replace it, "
                + (f"--resume {path} to continue it, " if status == "unfinished" else "")
                + "or choose another --out"
            )

    def _give_back(self) -> None:
        folder = self.folder
        if self._set_aside:
            folder.restore_aside()
        elif self._claimed:  # a new run in a folder without one: only its own files go
            for name in TRAINING_FILES:
                if name != LOCK_NAME:
                    (folder / name).unlink(missing_ok=True)
        if self._lock is not None and not self._had_lock_file:
            (folder / LOCK_NAME).unlink(missing_ok=True)
        self._release()
        if self._created:
            with contextlib.suppress(OSError):
                folder.path.rmdir()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
