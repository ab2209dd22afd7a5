"""The HTML report: one self-contained page per run (every figure embedded as a data URI,
no scripts, no network) that opens from disk and prints cleanly, plus each figure as a PNG
beside it."""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
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
from fmnist.runtime.calibration import calibration_bins, expected_calibration_error
from fmnist.runtime.inference import softmax
from fmnist.runtime.modelfile import load_model, resolve_model_path
from fmnist.runtime.runs import CONFUSION, METRICS, REPORT, TEST_METRICS, RunFolder

REPORT_FILE = REPORT
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
    folder = run.path
    # Read (and verify) the test set once: the metrics need its labels, the pictures its pixels.
    test = load_split("test", data_dir, verify=verify)
    result = evaluate(model_path, data_dir, write=False, verify=verify, test=test, calibrate=calibrate)
    model, info = load_model(model_path)
    # A bare model file, a run from an older fmnist or a damaged file: the section says so.
    history = _optional(run.read_metrics) if (run / METRICS).is_file() else None
    config = _optional(run.read_config) if (run / "config.json").is_file() else None
    summary = _optional(run.read_summary) if (run / "summary.json").is_file() else None

    # Everything is drawn and the page built in memory first: a failure writes nothing.
    figures: dict[str, bytes] = {CONFUSION: confusion_png(result.confusion)}
    if history:
        figures["training_curves.png"] = training_curves_png(history)
    pair_rows = _confused_pairs(result, test.images, pairs)
    if pair_rows:
        figures["confused_pairs.png"] = confused_pairs_png([r[:3] for r in pair_rows])
    wrong = _mistakes(result, mistakes)
    if len(wrong):
        figures["misclassified.png"] = image_grid_png(
            test.images[wrong],
            [_mistake_caption(result, i) for i in wrong],
            title=f"The {len(wrong)} most confident mistakes",
        )
    raw, ece_raw = result.raw_probs, result.ece_raw
    if info.temperature is not None:
        scaled = softmax(result.logits, info.temperature)
        figures["reliability.png"] = reliability_png(
            calibration_bins(scaled, result.labels),
            expected_calibration_error(scaled, result.labels),
            f"calibrated, T = {info.temperature:.3f}",
        )
    figures["reliability_uncalibrated.png"] = reliability_png(
        calibration_bins(raw, result.labels), ece_raw, "raw softmax"
    )
    p0, a0 = int(result.predictions[0]), int(result.labels[0])
    first_title = (
        f"test image 0: predicted {CLASS_NAMES[p0]} ({result.probs[0, p0]:.1%}), actual {CLASS_NAMES[a0]}, "
        f"{'match' if p0 == a0 else 'NO match'}"
    )
    figures["first_test_image.png"] = prediction_png(
        test.images[0], result.probs[0], int(result.labels[0]), first_title
    )
    page = _page(folder, result, info, model, history, config, summary, figures, pair_rows, len(wrong))
    atomic_write_json(folder / TEST_METRICS, result.to_dict())
    for name, png in figures.items():
        atomic_write_bytes(folder / name, png)
    target = folder / REPORT_FILE
    atomic_write_text(target, page)  # last: a report.html exists only with every figure beside it
    return target


def _optional(reader) -> Any:
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


# --- HTML ------------------------------------------------------------------------------

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1040px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
.sub { color: #666; margin-top: 0; }
nav ol { columns: 2; padding-left: 1.3rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .6rem 0; }
th, td { padding: .22rem .65rem; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { background: #f4f4f4; }
th:first-child, td:first-child, td.text { text-align: left; }
img { max-width: 100%; height: auto; }
figure { margin: .6rem 0; }
figcaption, .note { color: #555; font-size: .9rem; }
.bad { color: #b00020; font-weight: 600; }
.good { color: #1b5e20; font-weight: 600; }
pre { background: #f6f6f6; padding: .8rem; overflow: auto; font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  nav { display: none; }
  h2 { break-after: avoid; }
  figure, table, tr { break-inside: avoid; }
  pre { white-space: pre-wrap; background: none; border: 1px solid #ccc; }
  a { color: inherit; text-decoration: none; }
}
"""


def _seconds(x: Any) -> str:
    """A duration from summary.json, or a dash when it is missing or not a number."""
    return f"{x:.0f} s" if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else "–"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(figures: dict[str, bytes], name: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption} (also saved as <code>{_e(name)}</code>)</figcaption>"
    return f"<figure>{_img(figures[name], alt)}{cap}</figure>"


def _table(header: list[str], rows: list[list[Any]], text_cols: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=text' if j in text_cols else ''}>{c}</td>" for j, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(SECTIONS[sid])}</h2>{body}</section>'


def _ece_cell(result: EvalResult, info) -> str:
    if info.temperature is None:
        return f"{result.ece:.4f} (no fitted temperature: raw softmax)"
    scaled = "" if result.calibrated else " (shown: raw softmax, --no-calibrate)"
    return f"{result.ece:.4f}{scaled}; raw softmax {result.ece_raw:.4f}, temperature {info.temperature:.3f}"


def _calibration_html(figures: dict[str, bytes], result: EvalResult, info) -> str:
    """Both reliability diagrams, the temperature and what it changed."""
    about = (
        "Expected calibration error (ECE): the mean gap between confidence and accuracy over 15 confidence bins, "
        "weighted by the images in each. Bars below the diagonal mean over-confidence, above it under-confidence."
    )
    raw_fig = _figure(figures, "reliability_uncalibrated.png", "reliability diagram, raw softmax", "The raw softmax.")
    if info.temperature is None:
        return (
            f'<p class="note">{about}</p><p>This model file has no fitted temperature (written before temperature '
            "scaling): every probability is the raw softmax. <code>fmnist calibrate RUN</code> fits one on the "
            f"validation split.</p>{raw_fig}"
        )
    fit = info.calibration or {}
    val = ""
    if all(isinstance(fit.get(k), (int, float)) for k in ("images", "ece_before", "ece_after")):
        val = (
            f" On the {fit['images']:,} validation images it brought the ECE from {fit['ece_before']:.4f} "
            f"to {fit['ece_after']:.4f}."
        )
    return (
        f'<p class="note">{about}</p>'
        f"<p>Temperature scaling divides the logits by T = {info.temperature:.3f}, fitted on the validation split "
        f"after training (never on the test set).{val} On the test set: ECE {result.ece_raw:.4f} raw, "
        f"{expected_calibration_error(softmax(result.logits, info.temperature), result.labels):.4f} calibrated. "
        "It never changes the predicted class, so the accuracy is the same.</p>"
        + _figure(figures, "reliability.png", "reliability diagram, calibrated", "With the temperature.")
        + raw_fig
    )


def _page(folder, result, info, model, history, config, summary, figures, pair_rows, n_wrong) -> str:
    d = result.to_dict()
    pct = lambda x: f"{x * 100:.2f}%"  # noqa: E731
    overview = _table(
        ["measure", "value"],
        [
            ["model", _e(info.model)],
            ["test accuracy", f"{pct(result.accuracy)} ({d['test_images'] - d['errors']:,} / {d['test_images']:,})"],
            ["test loss", f"{result.loss:.4f}"],
            ["macro F1", f"{d['macro_f1']:.4f}"],
            ["expected calibration error", _ece_cell(result, info)],
            ["validation accuracy (best epoch)", pct(info.val_accuracy) if info.val_accuracy is not None else "–"],
            ["flip test-time augmentation", "yes" if result.tta else "no"],
            ["epochs run", _e(summary.get("epochs_run", "–")) if summary else "–"],
            ["training time", _seconds(summary.get("train_seconds")) if summary else "–"],
            ["trained on", _e(f"{info.device or '?'}, {info.precision or '?'}")],
        ],
        text_cols=(1,),
    )
    if history:
        curves = _figure(figures, "training_curves.png", "loss and accuracy per epoch", "Per epoch, from metrics.csv.")
    else:
        curves = '<p class="note">No metrics.csv in this run folder, so no curves.</p>'
    worst = min(result.per_class, key=lambda c: c["f1"])["class"]
    per_class = (
        _table(
            ["class", "precision", "recall", "F1", "test images"],
            [
                [
                    (
                        f'<span class="bad">{c["class"]} {_e(c["name"])}</span>'
                        if c["class"] == worst
                        else f"{c['class']} {_e(c['name'])}"
                    ),
                    f"{c['precision']:.3f}",
                    f"{c['recall']:.3f}",
                    f"{c['f1']:.3f}",
                    f"{c['support']:,}",
                ]
                for c in result.per_class
            ],
        )
        + f'<p class="note">Lowest F1 in red. Macro F1 {d["macro_f1"]:.4f}.</p>'
    )
    if pair_rows:
        pairs = _table(
            ["actual", "predicted as", "images", "share of the actual class"],
            [
                [_e(CLASS_NAMES[a]), _e(CLASS_NAMES[p]), f"{n:,}", pct(n / max(1, result.confusion[a].sum()))]
                for a, p, n in (row[3] for row in pair_rows)
            ],
            text_cols=(1,),
        ) + _figure(
            figures,
            "confused_pairs.png",
            "examples of the most confused class pairs",
            "Each row: an actual class the model mistook for another, with its most confident such mistakes "
            "(test index and confidence).",
        )
    else:
        pairs = '<p class="note">No mistakes on the test set.</p>'
    wrong = (
        _figure(
            figures,
            "misclassified.png",
            "misclassified test images",
            f"{d['errors']:,} test images are misclassified; shown: the {n_wrong} the model was most sure of, "
            "with test index, confidence, predicted and actual label.",
        )
        if n_wrong
        else '<p class="note">No mistakes on the test set.</p>'
    )
    calibration = _calibration_html(figures, result, info)
    p0 = int(result.predictions[0])
    a0 = int(result.labels[0])
    match = p0 == a0
    first = _table(
        ["", "test image 0"],
        [
            ["predicted", f"{p0} {_e(CLASS_NAMES[p0])}"],
            ["actual", f"{a0} {_e(CLASS_NAMES[a0])}"],
            ["match", f'<span class="{"good" if match else "bad"}">{"yes" if match else "no"}</span>'],
            ["confidence", pct(result.probs[0, p0])],
        ],
        text_cols=(1,),
    ) + _figure(
        figures,
        "first_test_image.png",
        "test image 0 and the predicted probabilities",
        "The image as the model sees it, and its probability for every class "
        "(blue: predicted; red: the actual class when the prediction is wrong).",
    )
    rows = summarize(model)
    model_table = _table(
        ["layer", "what it does", "output shape", "parameters", "FLOPs / image"],
        [[_e(r.kind), _e(r.description), _e(r.output_shape), f"{r.params:,}", f"{r.flops:,}"] for r in rows]
        + [
            [
                "<b>total</b>",
                "",
                "",
                f"<b>{sum(r.params for r in rows):,}</b>",
                f"<b>{sum(r.flops for r in rows):,}</b>",
            ]
        ],
        text_cols=(1,),
    )
    config_html = (
        f"<pre>{_e(json.dumps(config, indent=2))}</pre>"
        if config
        else '<p class="note">No config.json in this run folder.</p>'
    )
    body = "".join(
        [
            _section("overview", overview),
            _section("training-curves", curves),
            _section(
                "confusion-matrix",
                _figure(figures, "confusion_matrix.png", "confusion matrix", "Rows: actual class; columns: predicted."),
            ),
            _section("per-class", per_class),
            _section("confused-pairs", pairs),
            _section("misclassified", wrong),
            _section("calibration", calibration),
            _section("first-test-image", first),
            _section("model", model_table),
            _section("config", config_html + '<p class="note">Every resolved value, from config.json.</p>'),
        ]
    )
    nav = "<nav><ol>" + "".join(f'<li><a href="#{k}">{_e(v)}</a></li>' for k, v in SECTIONS.items()) + "</ol></nav>"
    title = f"fmnist report: {folder.name}"
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
        f'initial-scale=1"><title>{_e(title)}</title><style>{CSS}</style></head><body>'
        f"<h1>{_e(title)}</h1><p class=sub>{_e(info.model)} model, test accuracy "
        f"{pct(result.accuracy)}; written {when} from <code>{_e(folder)}</code></p>"
        f"{nav}{body}</body></html>\n"
    )
