"""The report's page: its sections, laid out from what :mod:`fmnist.reporting.report` measured
and drew. Nothing here computes a metric or draws a figure; every number on the page comes in
a :class:`ReportData`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fmnist.core.spec import CLASS_NAMES
from fmnist.models.summary import LayerRow
from fmnist.reporting import html as h
from fmnist.reporting.evaluate import EvalResult
from fmnist.runtime.modelfile import ModelInfo
from fmnist.runtime.run_summary import RunSummary
from fmnist.runtime.runs import CONFIG, CONFUSION, METRICS

SECTIONS = {
    "overview": "Overview",
    "training-curves": "Training curves",
    "confusion-matrix": "Confusion matrix",
    "per-class": "Per-class precision, recall and F1",
    "confused-pairs": "Most confused pairs",
    "misclassified": "Misclassified test images",
    "calibration": "Calibration",
    "first-test-image": "The first test image",
    "model": "Model",
    "config": "Configuration",
}
NO_MISTAKES = h.note("No mistakes on the test set.")


@dataclass
class ReportData:
    """Everything the page shows. ``history``, ``config`` and ``summary`` are None when the
    run folder lacks the file (a bare model file, an older fmnist, a damaged file)."""

    folder: Path
    result: EvalResult
    info: ModelInfo
    layers: list[LayerRow]
    history: list[dict[str, float]] | None
    config: dict[str, Any] | None
    summary: RunSummary | None
    figures: dict[str, bytes]  # file name: PNG
    pairs: list[tuple[int, int, int]]  # (actual, predicted, images), the most confused first
    mistakes_shown: int
    ece_calibrated: float | None  # on the test set, with the fitted temperature


def render(r: ReportData) -> str:
    """The whole page, one section per entry of :data:`SECTIONS`."""
    body = {
        "overview": _overview(r),
        "training-curves": _curves(r),
        "confusion-matrix": _figure(r, CONFUSION, "confusion matrix", "Rows: actual class; columns: predicted."),
        "per-class": _per_class(r),
        "confused-pairs": _confused_pairs(r),
        "misclassified": _misclassified(r),
        "calibration": _calibration(r),
        "first-test-image": _first_test_image(r),
        "model": _model(r),
        "config": _config(r),
    }
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    subtitle = h.join(
        f"{r.info.model} model, test accuracy {_pct(r.result.accuracy)}; written {when} from ", h.code(r.folder)
    )
    return h.page(
        f"fmnist report: {r.folder.name}",
        h.contents(SECTIONS),
        *(h.section(sid, title, body[sid]) for sid, title in SECTIONS.items()),
        subtitle=subtitle,
    )


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _seconds(x: Any) -> str:
    """A duration from summary.json, or a dash when it is missing or not a number."""
    return f"{x:.0f} s" if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else "–"


def _figure(r: ReportData, name: str, alt: str, caption: str) -> h.Html:
    return h.figure(r.figures[name], alt, caption, saved_as=name)


def _overview(r: ReportData) -> h.Html:
    result, info, summary, d = r.result, r.info, r.summary, r.result.to_dict()
    rows = [
        ["model", info.model],
        ["test accuracy", f"{_pct(result.accuracy)} ({d['test_images'] - d['errors']:,} / {d['test_images']:,})"],
        ["test loss", f"{result.loss:.4f}"],
        ["macro F1", f"{d['macro_f1']:.4f}"],
        ["expected calibration error", _ece_cell(r)],
        ["validation accuracy (best epoch)", _pct(info.val_accuracy) if info.val_accuracy is not None else "–"],
        ["flip test-time augmentation", "yes" if result.tta else "no"],
        ["epochs run", summary.epochs_run if summary and summary.epochs_run is not None else "–"],
        ["training time", _seconds(summary.train_seconds) if summary else "–"],
        ["trained on", f"{info.device or '?'}, {info.precision or '?'}"],
    ]
    return h.table(["measure", "value"], rows, text_cols=(1,))


def _ece_cell(r: ReportData) -> str:
    result, t = r.result, r.info.temperature
    if t is None:
        return f"{result.ece:.4f} (no fitted temperature: raw softmax)"
    scaled = "" if result.calibrated else " (shown: raw softmax, --no-calibrate)"
    return f"{result.ece:.4f}{scaled}; raw softmax {result.ece_raw:.4f}, temperature {t:.3f}"


def _curves(r: ReportData) -> h.Html:
    if not r.history:
        return h.note(f"No {METRICS} in this run folder, so no curves.")
    return _figure(r, "training_curves.png", "loss and accuracy per epoch", f"Per epoch, from {METRICS}.")


def _per_class(r: ReportData) -> h.Html:
    worst = min(r.result.per_class, key=lambda c: c["f1"])["class"]
    rows = [
        [
            h.span(f"{c['class']} {c['name']}", "bad") if c["class"] == worst else f"{c['class']} {c['name']}",
            f"{c['precision']:.3f}",
            f"{c['recall']:.3f}",
            f"{c['f1']:.3f}",
            f"{c['support']:,}",
        ]
        for c in r.result.per_class
    ]
    return h.join(
        h.table(["class", "precision", "recall", "F1", "test images"], rows),
        h.note(f"Lowest F1 in red. Macro F1 {r.result.to_dict()['macro_f1']:.4f}."),
    )


def _confused_pairs(r: ReportData) -> h.Html:
    if not r.pairs:
        return NO_MISTAKES
    rows = [
        [CLASS_NAMES[a], CLASS_NAMES[p], f"{n:,}", _pct(n / max(1, r.result.confusion[a].sum()))] for a, p, n in r.pairs
    ]
    return h.join(
        h.table(["actual", "predicted as", "images", "share of the actual class"], rows, text_cols=(1,)),
        _figure(
            r,
            "confused_pairs.png",
            "examples of the most confused class pairs",
            "Each row: an actual class the model mistook for another, with its most confident such mistakes "
            "(test index and confidence).",
        ),
    )


def _misclassified(r: ReportData) -> h.Html:
    if not r.mistakes_shown:
        return NO_MISTAKES
    return _figure(
        r,
        "misclassified.png",
        "misclassified test images",
        f"{r.result.to_dict()['errors']:,} test images are misclassified; shown: the {r.mistakes_shown} the model "
        "was most sure of, with test index, confidence, predicted and actual label.",
    )


def _calibration(r: ReportData) -> h.Html:
    """Both reliability diagrams, the temperature and what it changed."""
    about = h.note(
        "Expected calibration error (ECE): the mean gap between confidence and accuracy over 15 confidence bins, "
        "weighted by the images in each. Bars below the diagonal mean over-confidence, above it under-confidence."
    )
    raw = _figure(r, "reliability_uncalibrated.png", "reliability diagram, raw softmax", "The raw softmax.")
    t, fit = r.info.temperature, r.info.calibration or {}
    if t is None:
        unfitted = h.paragraph(
            "This model file has no fitted temperature (written before temperature scaling): every probability is "
            "the raw softmax. ",
            h.code("fmnist calibrate RUN"),
            " fits one on the validation split.",
        )
        return h.join(about, unfitted, raw)
    val = ""
    if all(isinstance(fit.get(k), (int, float)) for k in ("images", "ece_before", "ece_after")):
        val = (
            f" On the {fit['images']:,} validation images it brought the ECE from {fit['ece_before']:.4f} "
            f"to {fit['ece_after']:.4f}."
        )
    fitted = h.paragraph(
        f"Temperature scaling divides the logits by T = {t:.3f}, fitted on the validation split after training "
        f"(never on the test set).{val} On the test set: ECE {r.result.ece_raw:.4f} raw, "
        f"{r.ece_calibrated:.4f} calibrated. It never changes the predicted class, so the accuracy is the same."
    )
    calibrated = _figure(r, "reliability.png", "reliability diagram, calibrated", "With the temperature.")
    return h.join(about, fitted, calibrated, raw)


def _first_test_image(r: ReportData) -> h.Html:
    result = r.result
    p0, a0 = int(result.predictions[0]), int(result.labels[0])
    match = p0 == a0
    rows = [
        ["predicted", f"{p0} {CLASS_NAMES[p0]}"],
        ["actual", f"{a0} {CLASS_NAMES[a0]}"],
        ["match", h.span("yes" if match else "no", "good" if match else "bad")],
        ["confidence", _pct(result.probs[0, p0])],
    ]
    return h.join(
        h.table(["", "test image 0"], rows, text_cols=(1,)),
        _figure(
            r,
            "first_test_image.png",
            "test image 0 and the predicted probabilities",
            "The image as the model sees it, and its probability for every class "
            "(blue: predicted; red: the actual class when the prediction is wrong).",
        ),
    )


def _model(r: ReportData) -> h.Html:
    rows: list[list[Any]] = [[x.kind, x.description, x.output_shape, f"{x.params:,}", f"{x.flops:,}"] for x in r.layers]
    params, flops = sum(x.params for x in r.layers), sum(x.flops for x in r.layers)
    rows.append([h.strong("total"), "", "", h.strong(f"{params:,}"), h.strong(f"{flops:,}")])
    return h.table(["layer", "what it does", "output shape", "parameters", "FLOPs / image"], rows, text_cols=(1,))


def _config(r: ReportData) -> h.Html:
    shown = h.preformatted(json.dumps(r.config, indent=2)) if r.config else h.note(f"No {CONFIG} in this run folder.")
    return h.join(shown, h.note(f"Every resolved value, from {CONFIG}."))
