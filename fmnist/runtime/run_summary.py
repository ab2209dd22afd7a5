"""``summary.json``, the record a finished run leaves: one typed :class:`RunSummary`, built
from the best epoch's :class:`ModelInfo` plus the run's timings (written and read through
:class:`fmnist.runtime.runs.RunFolder`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fmnist.runtime.modelfile import ModelInfo


@dataclass
class RunSummary:
    """``summary.json``: what a finished run measured, written last (it marks the run
    finished). Built from the best epoch's :class:`ModelInfo` plus the run's timings; read
    back as stored (a file from an older fmnist may lack keys: they are None)."""

    model: str | None = None
    preset: str | None = None
    best_epoch: int | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None  # training + validation + calibration, over every session of the run
    params: int | None = None
    flops_per_image: int | None = None
    device: str | None = None
    precision: str | None = None
    threads: int | None = None  # PyTorch CPU threads per process
    processes: int | None = None
    temperature: float | None = None
    finished: str | None = None  # local time, ISO 8601
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys from a newer fmnist, kept

    @classmethod
    def of(cls, info: ModelInfo, *, epochs_run: int, train_seconds: float, threads: int, processes: int) -> RunSummary:
        return cls(
            **{k: getattr(info, k) for k in ("model", "preset", "val_accuracy", "val_loss")},
            best_epoch=info.epoch,
            epochs_run=epochs_run,
            train_seconds=train_seconds,
            **{k: getattr(info, k) for k in ("params", "flops_per_image", "device", "precision")},
            threads=threads,
            processes=processes,
            temperature=info.temperature,
            finished=datetime.now().isoformat(timespec="seconds"),
            versions=dict(info.versions),
        )

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **values}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSummary:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in values.items() if k in known},
            extra={k: v for k, v in values.items() if k not in known},
        )
