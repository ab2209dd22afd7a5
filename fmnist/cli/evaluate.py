"""`fmnist evaluate`, `fmnist report` and `fmnist calibrate`: a trained run measured on data it
never trained on (the test set; the validation split for the temperature)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.table import Table

from fmnist.cli.options import (
    json_option,
    model_source,
    optional_run_argument,
    pretrained_option,
    run_argument,
    with_settings,
)
from fmnist.cli.output import out, pct, save_or_explain
from fmnist.core.files import dumps
from fmnist.core.spec import CLASS_NAMES
from fmnist.reporting.evaluate import (
    CalibrateSettings,
    EvalResult,
    EvaluateSettings,
    ReportSettings,
    save_evaluation,
)
from fmnist.reporting.evaluate import calibrate as fit_calibration
from fmnist.reporting.evaluate import evaluate as evaluate_run
from fmnist.reporting.report import write_report
from fmnist.runtime.calibration import expected_calibration_error
from fmnist.runtime.inference import softmax
from fmnist.runtime.pretrained import describe_card, pretrained_card


@with_settings(EvaluateSettings)
def evaluate(
    run: Optional[Path] = optional_run_argument(),
    as_json: bool = json_option("Print the metrics as JSON."),
    pretrained: bool = pretrained_option(),
    *,
    settings: EvaluateSettings,
):
    """Test-set accuracy and loss, per-class precision/recall/F1, the confusion matrix, and
    the expected calibration error (ECE) before and after temperature scaling."""
    # Compute, show, then save: a read-only run folder or a full disk still shows the results.
    source = model_source(run, pretrained)
    r = evaluate_run(source, write=False, settings=settings)
    folder = source if source.is_dir() else source.parent
    # The packaged model's folder is the installed package: nothing is written there.
    save = (lambda: None) if pretrained else (lambda: save_or_explain(lambda: save_evaluation(folder, r)))
    if as_json:
        print(dumps(r.to_dict()))
        save()
        return
    d = r.to_dict()
    out.print(
        f"test accuracy {pct(r.accuracy)} ({d['test_images'] - d['errors']:,}/{d['test_images']:,}), "
        f"loss {r.loss:.4f}, macro F1 {d['macro_f1']:.4f}" + (", flip TTA" if r.tta else "")
    )
    out.print(calibration_line(r))
    out.print(per_class_table(r))
    out.print(confusion_table(r))
    if pretrained:
        out.print(describe_card(pretrained_card()))
        return
    written = save_or_explain(lambda: save_evaluation(folder, r))
    out.print(f"wrote {written[0]} and {written[1]}")


def per_class_table(r: EvalResult) -> Table:
    table = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in r.per_class:
        table.add_row(
            f"{c['class']} {c['name']}",
            f"{c['precision']:.3f}",
            f"{c['recall']:.3f}",
            f"{c['f1']:.3f}",
            str(c["support"]),
        )
    return table


def confusion_table(r: EvalResult) -> Table:
    cm = Table(title="confusion matrix (rows: actual, columns: predicted)")
    cm.add_column("")
    for i in range(len(CLASS_NAMES)):
        cm.add_column(str(i), justify="right")
    for i, row in enumerate(r.confusion):
        cm.add_row(f"{i} {CLASS_NAMES[i]}", *[str(v) for v in row])
    return cm


def calibration_line(r: EvalResult) -> str:
    """ECE before and after temperature scaling, and which of them the figures above use."""
    t = r.info.temperature
    if t is None:
        return f"ECE {r.ece:.4f} (raw softmax; this model file has no fitted temperature: run `fmnist calibrate`)"
    after = r.ece if r.calibrated else expected_calibration_error(softmax(r.logits, t), r.labels)
    shown = "calibrated" if r.calibrated else "raw softmax (--no-calibrate)"
    return f"ECE {r.ece_raw:.4f} raw softmax -> {after:.4f} with temperature {t:.3f} (probabilities shown: {shown})"


@with_settings(ReportSettings)
def report(run: Path = run_argument("Run folder (or its model file)."), *, settings: ReportSettings):
    """Write one self-contained HTML page (curves, confusion matrix, mistakes, calibration
    before and after temperature scaling, model, configuration) into the run folder; prints its path."""
    print(write_report(run, settings=settings))


@with_settings(CalibrateSettings)
def calibrate(
    run: Path = run_argument("Run folder from `fmnist train`."),
    as_json: bool = json_option("Print what was fitted as JSON."),
    *,
    settings: CalibrateSettings,
):
    """Fit (or refit) the run's temperature on its validation split and store it in its model
    file. Training does this itself; use it on model files from before temperature scaling.
    The weights are unchanged; re-run `fmnist export` afterwards if the run has an ONNX file."""
    c = fit_calibration(run, settings=settings)
    if as_json:
        print(dumps({"path": str(c.path), "temperature": c.temperature, "previous": c.previous, **c.summary}))
        return
    s = c.summary
    before = f" (was {c.previous:.3f})" if c.previous is not None else " (the file had none: raw softmax)"
    out.print(
        f"temperature {c.temperature:.3f}{before}, fitted on {s['images']:,} validation images: "
        f"ECE {s['ece_before']:.4f} -> {s['ece_after']:.4f}, NLL {s['nll_before']:.4f} -> {s['nll_after']:.4f}; "
        f"wrote {c.path}"
    )
