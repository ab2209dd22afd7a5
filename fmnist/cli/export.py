"""`fmnist export`: the model as ONNX (and int8 ONNX), checked before it is written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fmnist.cli.options import json_option, run_argument, with_settings
from fmnist.cli.output import out, pct
from fmnist.core.files import dumps
from fmnist.runtime.export import ExportSettings, export_onnx


@with_settings(ExportSettings)
def export(
    run: Path = run_argument(),
    as_json: bool = json_option("Print what was measured as JSON."),
    *,
    settings: ExportSettings,
):
    """Export to ONNX, checked against PyTorch on all 10,000 test images before it is written."""
    r = export_onnx(run, settings=settings)
    if as_json:
        print(dumps(r))
        return
    out.print(
        f"wrote {r['path']} ({r['bytes'] / 1e6:.2f} MB, {r['exporter']} exporter, opset {r['opset']}); "
        f"ONNX Runtime agrees with PyTorch on {pct(r['top1_agreement'])} of {r['test_images']:,} test images, "
        f"max logit difference {r['max_abs_logit_diff']:.2g}; test accuracy {pct(r['onnx_accuracy'])}"
        + (" (one pass; predict, evaluate and serve add flip TTA on top)" if r["tta"] else "")
        + "; "
        f"its probabilities output uses temperature {r['temperature']:.3f} (max difference {r['max_abs_probability_diff']:.2g})"
    )
    if r.get("int8"):
        print_int8(r["int8"])


def print_int8(q: dict[str, Any]) -> None:
    out.print(
        f"wrote {q['path']} ({q['bytes'] / 1e6:.2f} MB): test accuracy {pct(q['accuracy'])} "
        f"({q['accuracy_change'] * 100:+.2f} points), same answer as float on {pct(q['top1_agreement_with_float'])}; "
        f"{q['images_per_second']:,.0f} vs {q['float_images_per_second']:,.0f} images/s float at batch 64 "
        f"({q['speedup']:.2f}×)"
    )
    if q["accuracy_change"] < -0.01:
        print("warning: int8 costs more than 1 point of accuracy; prefer the float model", file=sys.stderr)
