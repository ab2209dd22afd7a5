"""The HTML report: one self-contained page per run (every figure embedded as a data URI,
no scripts, no network) that opens from disk and prints cleanly, plus each figure as a PNG
beside it. This module measures and draws; :mod:`fmnist.reporting.report_page` lays out the
page from what it measured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.core.errors import FmnistError
from fmnist.core.schema import accepts_settings
from fmnist.core.spec import CLASS_NAMES
from fmnist.data import load_split
from fmnist.models import summarize
from fmnist.reporting.evaluate import EvalResult, ReportSettings, evaluate
from fmnist.reporting.plots import (
    confused_pairs_png,
    confusion_png,
    image_grid_png,
    prediction_png,
    reliability_png,
    training_curves_png,
)
from fmnist.reporting.report_page import ReportData, render
from fmnist.runtime.calibration import calibration_bins, expected_calibration_error
from fmnist.runtime.inference import softmax
from fmnist.runtime.modelfile import ModelInfo, load_model, resolve_model_path
from fmnist.runtime.runs import CONFIG, CONFUSION, METRICS, REPORT, SUMMARY, TEST_METRICS, RunFolder
from fmnist.training.config import read_run_config

REPORT_FILE = REPORT


@accepts_settings(ReportSettings)
def write_report(
    run_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    mistakes: int = 40,
    pairs: int = 6,
    calibrate: bool = True,
) -> Path:
    """Evaluate the run on the test set and write ``<run>/report.html`` and its PNGs.
    Returns the HTML file's path. ``calibrate=False``: every probability on the page is the
    raw softmax (the calibration section still compares both)."""
    model_path = resolve_model_path(run_dir)
    run = RunFolder(model_path.parent)
    run.warn_if_unfinished()
    # A damaged config.json or summary.json is an error now, before the evaluation.
    config = read_run_config(run) if (run / CONFIG).is_file() else None
    summary = run.read_summary() if (run / SUMMARY).is_file() else None
    # Read (and verify) the test set once: the metrics need its labels, the pictures its pixels.
    test = load_split("test", data_dir, verify=verify)
    result = evaluate(model_path, data_dir, write=False, verify=verify, test=test, calibrate=calibrate)
    model, info = load_model(model_path)
    # A bare model file, a run from an older fmnist or a damaged file: the section says so.
    history = _optional(run, METRICS, run.read_metrics)
    pair_rows = _confused_pairs(result, test.images, pairs)
    wrong = _mistakes(result, mistakes)
    # Everything is drawn and the page built in memory first: a failure writes nothing.
    figures, ece_calibrated = _figures(result, info, test.images, history, pair_rows, wrong)
    page = render(
        ReportData(
            folder=run.path,
            result=result,
            info=info,
            layers=summarize(model),
            history=history,
            config=config,
            summary=summary,
            figures=figures,
            pairs=[row[3] for row in pair_rows],
            mistakes_shown=len(wrong),
            ece_calibrated=ece_calibrated,
        )
    )
    for name, data in {TEST_METRICS: result.to_dict(), **figures}.items():
        run.write_derived(name, data)
    return run.write_derived(REPORT_FILE, page)  # last: a report.html exists only with every figure beside it


def _figures(result: EvalResult, info: ModelInfo, images: np.ndarray, history, pair_rows, wrong: np.ndarray):
    """Every figure of the page as PNG bytes by file name, and the calibrated test ECE (None
    without a fitted temperature)."""
    figures: dict[str, bytes] = {CONFUSION: confusion_png(result.confusion)}
    if history:
        figures["training_curves.png"] = training_curves_png(history)
    if pair_rows:
        figures["confused_pairs.png"] = confused_pairs_png([r[:3] for r in pair_rows])
    if len(wrong):
        figures["misclassified.png"] = image_grid_png(
            images[wrong],
            [_mistake_caption(result, i) for i in wrong],
            title=f"The {len(wrong)} most confident mistakes",
        )
    ece_calibrated = None
    if info.temperature is not None:
        scaled = softmax(result.logits, info.temperature)
        ece_calibrated = expected_calibration_error(scaled, result.labels)
        figures["reliability.png"] = reliability_png(
            calibration_bins(scaled, result.labels), ece_calibrated, f"calibrated, T = {info.temperature:.3f}"
        )
    figures["reliability_uncalibrated.png"] = reliability_png(
        calibration_bins(result.raw_probs, result.labels), result.ece_raw, "raw softmax"
    )
    p0, a0 = int(result.predictions[0]), int(result.labels[0])
    first_title = (
        f"test image 0: predicted {CLASS_NAMES[p0]} ({result.probs[0, p0]:.1%}), actual {CLASS_NAMES[a0]}, "
        f"{'match' if p0 == a0 else 'NO match'}"
    )
    figures["first_test_image.png"] = prediction_png(images[0], result.probs[0], a0, first_title)
    return figures, ece_calibrated


def _optional(run: RunFolder, name: str, reader) -> Any:
    """What ``reader`` reads from the run's file ``name``; None when it is missing or damaged."""
    if not (run / name).is_file():
        return None
    try:
        return reader()
    except FmnistError:
        return None


def _confused_pairs(result: EvalResult, images: np.ndarray, pairs: int, per_pair: int = 8):
    """(label, example images, captions, (actual, predicted, count)) for the off-diagonal
    cells of the confusion matrix with the most images."""
    cm = result.confusion.copy()
    np.fill_diagonal(cm, 0)
    order = np.argsort(-cm, axis=None, kind="stable")[:pairs]
    preds, conf = result.predictions, result.probs.max(1)
    rows = []
    for flat in order:
        actual, pred = divmod(int(flat), cm.shape[1])
        if cm[actual, pred] == 0:
            break
        idx = np.flatnonzero((result.labels == actual) & (preds == pred))
        idx = idx[np.argsort(-conf[idx], kind="stable")][:per_pair]
        label = f"{CLASS_NAMES[actual]}\n→ {CLASS_NAMES[pred]}\n({cm[actual, pred]} images)"
        rows.append((label, images[idx], [f"#{i} {conf[i]:.0%}" for i in idx], (actual, pred, int(cm[actual, pred]))))
    return rows


def _mistakes(result: EvalResult, n: int) -> np.ndarray:
    """The most confident mistakes first: they show label noise and real blind spots."""
    wrong = np.flatnonzero(result.predictions != result.labels)
    conf = result.probs.max(1)
    return wrong[np.argsort(-conf[wrong], kind="stable")][:n]


def _mistake_caption(result: EvalResult, i: int) -> str:
    p = int(result.predictions[i])
    return f"#{i} {result.probs[i, p]:.0%}\npred {CLASS_NAMES[p]}\nactual {CLASS_NAMES[result.labels[i]]}"
