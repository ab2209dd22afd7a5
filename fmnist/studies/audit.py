"""A label-error audit of the data set: which training and test images are likely labelled
wrongly, found with confident learning (Northcutt et al., 2021, via the ``cleanlab``
library) on out-of-sample probabilities.

- Training set: K-fold cross-validation over all 60,000 training images. Each fold's model
  is trained on the other K-1 folds with a cheap recipe (a preset with few epochs: the
  audit needs probabilities that are out of sample, not the best model) and predicts the
  fold it never saw. The fold runs are ordinary run folders under ``<run>/audit/``; an
  audit run again with the same recipe reuses the finished ones.
- Test set: the run's own trained model, which never saw a test image, with its calibrated
  probabilities.

A flagged image is a suspect, not a proven error: cleanlab flags an image when the models
are confidently sure of another class, which is also what an ambiguous image or a blind spot
of the models looks like. Needs ``pip install 'fmnist[audit]'``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.core.errors import FmnistError
from fmnist.core.files import check_writable
from fmnist.core.schema import data_dir_param, device_param, param, verify_param
from fmnist.core.spec import CLASS_NAMES
from fmnist.data import load_split
from fmnist.reporting import html as h
from fmnist.reporting.plots import image_grid_png
from fmnist.runtime.inference import predict_logits, softmax, temperature_of
from fmnist.runtime.modelfile import load_model, resolve_model_path
from fmnist.runtime.runs import AUDIT_DIR, AUDIT_GRIDS, AUDIT_PAGE, AUDIT_TABLE, RunFolder
from fmnist.training.config import TrainConfig
from fmnist.training.data import fixed_split
from fmnist.training.presets import PRESETS, preset_config
from fmnist.training.trainer import Callback, Trainer


@dataclass
class AuditSettings:
    """How the audit gets its out-of-sample probabilities."""

    folds: int = param(5, "K of the cross-validation on the training set.", min=2, max=20, flags=("--folds", "-k"))
    preset: str = param("notebook", "Recipe of each fold's model (a preset's values).", choices=tuple(PRESETS))
    epochs: int = param(2, "Epochs per fold model (cheap: it only needs probabilities).", min=1)
    # 256, not the notebook's 32: 4x faster per epoch on a CPU
    batch_size: int = param(256, "Batch of the fold models.", min=1)
    lr: float = param(3e-3, "Learning rate of the fold models.", min=0)
    seed: int = param(0, "Seed of the fold assignment and the fold models.", min=0)
    model: str | None = param(None, "Architecture of the fold models (default: the preset's).")
    grid: int = param(40, "Suspects per split shown in the grids and the page.", min=1, max=200)
    device: str = device_param()
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()
    overrides: dict[str, Any] = param(factory=dict, cli=False)  # any other TrainConfig values

    def fold_config(self, out: Path) -> TrainConfig:
        values = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, **self.overrides}
        values |= {"model": self.model, "model_args": {}} if self.model else {}
        values |= {"seed": self.seed, "val_size": 0, "early_stop": 0, "out": str(out), "overwrite": True}
        values |= {"data_dir": self.data_dir, "verify": self.verify, "device": self.device}
        config = preset_config(self.preset).merged(values)
        config.validate()
        return config


AuditOptions = AuditSettings  # the name before the settings schema


@dataclass
class Suspect:
    split: str
    index: int  # in the split's own file (0..59,999 or 0..9,999)
    given: int
    suggested: int
    probability: float  # of the suggested class
    given_probability: float
    rank: int  # 1 = the most likely label error of the split

    def row(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "rank": self.rank,
            "index": self.index,
            "given": self.given,
            "given_name": CLASS_NAMES[self.given],
            "suggested": self.suggested,
            "suggested_name": CLASS_NAMES[self.suggested],
            "probability": round(self.probability, 4),
            "given_probability": round(self.given_probability, 4),
        }


@dataclass
class AuditResult:
    suspects: dict[str, list[Suspect]]  # "train", "test"
    sizes: dict[str, int]
    test_errors: int  # the run's model's mistakes on the test set
    test_errors_flagged: int  # of which on flagged test images
    options: AuditSettings
    written: list[Path] = field(default_factory=list)


def _find_label_issues():
    try:
        from cleanlab.filter import find_label_issues  # optional: `fmnist[audit]`
    except ImportError:
        raise FmnistError("fmnist audit needs cleanlab: pip install 'fmnist[audit]'") from None
    return find_label_issues


def find_suspects(labels: np.ndarray, probs: np.ndarray, split: str) -> list[Suspect]:
    """The images confident learning flags as likely label errors, most likely first."""
    find_label_issues = _find_label_issues()
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    order = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    out = []
    for rank, i in enumerate(order, 1):
        suggested = int(probs[i].argmax())
        out.append(
            Suspect(
                split, int(i), int(labels[i]), suggested, float(probs[i, suggested]), float(probs[i, labels[i]]), rank
            )
        )
    return out


def fold_assignment(n: int, folds: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """Each image's fold, 0..K-1: stratified (every class spread evenly), seeded."""
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return fold


class _Log(Callback):
    def __init__(self, log: Callable[[str], None], name: str):
        self.log, self.name = log, name

    def on_epoch_end(self, row: dict[str, float]) -> None:
        self.log(
            f"  {self.name} epoch {int(row['epoch'])}: train acc {row['train_accuracy']:.2%}, {row['seconds']:.0f} s"
        )


def cross_validated_probabilities(
    labels: np.ndarray, images: np.ndarray, opts: AuditSettings, folder: Path, log: Callable[[str], None] = print
) -> np.ndarray:
    """Out-of-sample probabilities for every training image: fold k's from a model trained
    on the other folds. Finished fold runs with the same recipe are reused."""
    if not 2 <= opts.folds <= 20:
        raise FmnistError(f"--folds must be between 2 and 20, got {opts.folds}")
    fold = fold_assignment(len(labels), opts.folds, labels, opts.seed)
    probs = np.zeros((len(labels), len(CLASS_NAMES)))
    for k in range(opts.folds):
        out = folder / f"fold-{k + 1}-of-{opts.folds}"
        config = opts.fold_config(out)
        held = np.flatnonzero(fold == k)
        if not _reusable(out, config):
            log(f"fold {k + 1}/{opts.folds}: training {config.model} on {len(labels) - len(held):,} images")
            # Trained on the other folds with nothing held out: the fold itself is held out.
            split = fixed_split(np.flatnonzero(fold != k))
            Trainer(config, [_Log(log, f"fold {k + 1}")], split=split).run()
        else:
            log(f"fold {k + 1}/{opts.folds}: reusing {out}")
        model, info = load_model(out)
        x = torch.from_numpy(images[held]).unsqueeze(1)
        probs[held] = softmax(predict_logits(model, x, tta=info.tta), temperature_of(info))
    return probs


def _reusable(out: Path, config: TrainConfig) -> bool:
    folder = RunFolder(out)
    if folder.status != "finished":
        return False
    try:
        stored = {k: v for k, v in folder.read_config().items() if k not in ("format", "resolved")}
    except FmnistError:
        return False
    return stored == config.to_dict()


def audit(run: str | os.PathLike, opts: AuditSettings | None = None, log: Callable[[str], None] = print) -> AuditResult:
    """Audit the labels of the training and test sets with a run's model (test) and K fold
    models (training); write the table, the grids and the page into the run folder."""
    opts = opts or AuditSettings()
    model_path = resolve_model_path(run)
    folder = RunFolder(model_path.parent)
    folder.warn_if_unfinished()
    model, info = load_model(model_path)  # a damaged model file fails here, before any training
    check_writable(folder.path)  # a read-only folder fails now, not after the folds are trained
    opts.fold_config(folder / AUDIT_DIR)  # a bad recipe too
    _find_label_issues()  # cleanlab missing: say so now
    train = load_split("train", opts.data_dir, verify=opts.verify)
    test = load_split("test", opts.data_dir, verify=opts.verify)

    x_test = torch.from_numpy(test.images).unsqueeze(1)
    test_probs = softmax(predict_logits(model, x_test, tta=info.tta), temperature_of(info))
    train_probs = cross_validated_probabilities(train.labels, train.images, opts, folder / AUDIT_DIR, log)
    suspects = {
        "train": find_suspects(train.labels, train_probs, "train"),
        "test": find_suspects(test.labels, test_probs, "test"),
    }
    wrong = test_probs.argmax(1) != test.labels
    flagged = np.zeros(len(test.labels), dtype=bool)
    flagged[[s.index for s in suspects["test"]]] = True
    result = AuditResult(
        suspects=suspects,
        sizes={"train": len(train), "test": len(test)},
        test_errors=int(wrong.sum()),
        test_errors_flagged=int((wrong & flagged).sum()),
        options=opts,
    )
    result.written = write_audit(folder, result, {"train": train.images, "test": test.images}, opts.grid)
    return result


def write_audit(folder: RunFolder, result: AuditResult, images: dict[str, np.ndarray], grid: int) -> list[Path]:
    """The ranked table (CSV), one grid per split (PNG) and a page that shows both."""
    buf = io.StringIO()
    rows = [s.row() for split in ("train", "test") for s in result.suspects[split]]
    writer = csv.DictWriter(buf, fieldnames=list(Suspect("x", 0, 0, 0, 0, 0, 0).row()))
    writer.writeheader()
    writer.writerows(rows)
    pngs = {}
    for split in ("train", "test"):
        top = result.suspects[split][:grid]
        if top:
            pngs[split] = image_grid_png(
                images[split][[s.index for s in top]],
                [
                    f"{split} #{s.index}\ngiven {CLASS_NAMES[s.given]}\n→ {CLASS_NAMES[s.suggested]} {s.probability:.0%}"
                    for s in top
                ],
                title=f"The {len(top)} most likely label errors in the {split} set (suspects, not proven errors)",
            )
    written = [folder.write_derived(AUDIT_TABLE, buf.getvalue())]
    written += [folder.write_derived(AUDIT_GRIDS[split], png) for split, png in pngs.items()]
    written.append(folder.write_derived(AUDIT_PAGE, _page(folder, result, pngs, grid)))  # last: the page shows the rest
    return written


def _page(folder: RunFolder, r: AuditResult, pngs: dict[str, bytes], grid: int) -> str:
    o = r.options
    method = h.paragraph(
        "Likely label errors found with confident learning (cleanlab) on out-of-sample probabilities: "
        f"{o.folds}-fold cross-validation on the training set (each fold's model: preset {o.preset}, "
        f"{o.epochs} epochs, batch {o.batch_size}, lr {o.lr:g}, seed {o.seed}), and this run's model on the test set. ",
        h.strong("A flagged image is a suspect, not a proven error"),
        ": an ambiguous garment or a blind spot of the models looks the same to the method. Look at the images.",
    )
    flagged = h.paragraph(
        f"Flagged: {len(r.suspects['train']):,} of {r.sizes['train']:,} training images "
        f"({len(r.suspects['train']) / r.sizes['train']:.2%}), {len(r.suspects['test']):,} of {r.sizes['test']:,} "
        f"test images ({len(r.suspects['test']) / r.sizes['test']:.2%}). "
        f"{r.test_errors_flagged:,} of the model's {r.test_errors:,} test mistakes fall on flagged test images "
        "(by construction in part: the test flags come from the same model's probabilities)."
    )
    return h.page(
        f"Label audit: {folder.path.name}", method, flagged, *(_split_html(r, s, pngs, grid) for s in ("train", "test"))
    )


def _split_html(r: AuditResult, split: str, pngs: dict[str, bytes], grid: int) -> h.Html:
    """One split's grid and its table of the most likely label errors."""
    top = r.suspects[split][:grid]
    if not top:
        return h.section(f"{split}-set", f"{split} set", h.note(f"No image of the {split} set is flagged."))
    rows = [
        [
            s.rank,
            s.index,
            CLASS_NAMES[s.given],
            CLASS_NAMES[s.suggested],
            f"{s.probability:.3f}",
            f"{s.given_probability:.3f}",
        ]
        for s in top
    ]
    caption = "Each image: its index in the split, the given label, and the suggested label with its probability."
    return h.section(
        f"{split}-set",
        f"{split} set",
        h.figure(pngs[split], f"{split} suspects", caption, saved_as=AUDIT_GRIDS[split]),
        h.table(["rank", "index", "given label", "suggested", "p(suggested)", "p(given)"], rows, text_cols=(2, 3)),
        h.paragraph("All of them: ", h.code(AUDIT_TABLE), "."),
    )


def options_from(**values: Any) -> AuditSettings:
    """AuditSettings from keyword values, None meaning the default."""
    return dataclasses.replace(AuditSettings(), **{k: v for k, v in values.items() if v is not None})
