"""The run folder: the one place that knows its file names, whether it holds a finished run,
and how to read what training wrote.

``fmnist train`` writes ``config.json`` first and ``summary.json`` last, so a folder with a
config but no summary holds an unfinished run (killed, interrupted or still training);
``resume.safetensors`` then holds the state to continue it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.core.files import LOCK_NAME, FolderLock, atomic_write_json, atomic_write_text, is_locked
from fmnist.runtime.modelfile import MODEL_FILE, read_model_info

RUN_FORMAT = "fmnist-run/1"  # the marker in config.json that says fmnist wrote the folder

CONFIG = "config.json"
METRICS = "metrics.csv"
MODEL = MODEL_FILE
SUMMARY = "summary.json"
RESUME = "resume.safetensors"
# Where --overwrite moves the old run until the new one finishes (restored if the new one fails first).
REPLACED = ".fmnist-replaced"
# Written by training.
TRAINING_FILES = (CONFIG, METRICS, MODEL, SUMMARY, RESUME, LOCK_NAME)

TEST_METRICS = "test_metrics.json"
CONFUSION = "confusion_matrix.png"
ONNX = "model.onnx"
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
# Written later by evaluate, export, report and audit from the trained model: stale once it is retrained.
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
        return [self / n for n in (*TRAINING_FILES, *DERIVED_FILES) if (self / n).is_file() and n != LOCK_NAME]

    @property
    def running(self) -> bool:
        """Whether a live process is writing the folder now."""
        return is_locked(self.path)

    def warn_if_unfinished(self) -> None:
        """For commands that use a trained model: say so when training did not finish."""
        if self.status == "unfinished":
            if self.running:
                how = "training is still running; its model.safetensors is the best epoch so far"
            else:
                how = f"training stopped early; continue it with `fmnist train --resume {self.path}` or retrain"
            warnings.warn(f"{self.path} holds an unfinished run: {how}", stacklevel=2)

    def lock(self, what: str = "written") -> FolderLock:
        self.path.mkdir(parents=True, exist_ok=True)
        return FolderLock(self.path, what)

    # --- reading and writing ------------------------------------------------------------

    def read_json(self, name: str) -> dict[str, Any]:
        try:
            value = json.loads((self / name).read_text())
        except FileNotFoundError:
            raise FmnistError(
                f"{self / name}: no such file; is {self.path} a run folder from `fmnist train`?"
            ) from None
        except (OSError, ValueError) as e:
            raise FmnistError(f"{self / name}: unreadable or not JSON ({e}); retrain or restore it") from None
        if not isinstance(value, dict):
            raise FmnistError(f"{self / name}: expected a JSON object; retrain or restore it")
        return value

    def read_config(self) -> dict[str, Any]:
        return self.read_json(CONFIG)

    def read_summary(self) -> dict[str, Any]:
        return self.read_json(SUMMARY)

    def write_config(self, values: dict[str, Any]) -> None:
        atomic_write_json(self / CONFIG, {"format": RUN_FORMAT, **values})

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self / SUMMARY, summary)

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

    def clear(self) -> None:
        """Remove the files fmnist wrote, and nothing else."""
        for f in self.owned_files():
            f.unlink(missing_ok=True)

    def set_aside(self) -> None:
        """Move the run's files into ``.fmnist-replaced/`` (a rename: no copy, no extra space),
        where they stay until the new run finishes (:meth:`drop_aside`) or fails before it
        saved anything (:meth:`restore_aside`). If an older run is already set aside (a
        replacement that never finished), that one is kept and the current files are removed."""
        aside = self / REPLACED
        if aside.is_dir():
            self.clear()
            return
        aside.mkdir()
        for f in self.owned_files():
            os.replace(f, aside / f.name)

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
