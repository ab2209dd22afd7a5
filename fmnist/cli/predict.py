"""`fmnist predict`: the notebook's question for test images, or the class of the user's images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from fmnist.cli.options import (
    json_option,
    model_source,
    optional_run_argument,
    pretrained_option,
    with_settings,
)
from fmnist.cli.output import out
from fmnist.core.errors import FmnistError
from fmnist.core.files import dumps
from fmnist.runtime.predict import Prediction, PredictSettings, predict_files
from fmnist.runtime.predict import predict as predict_images


@with_settings(PredictSettings)
def predict(
    run: Optional[Path] = optional_run_argument(),
    files: Optional[list[Path]] = typer.Argument(
        None, help="Your own image files (PNG, JPEG, GIF, ...), one garment each. Omit to predict test images."
    ),
    as_json: bool = json_option(),
    pretrained: bool = pretrained_option(),
    *,
    settings: PredictSettings,
):
    """Predicted vs actual label of test images, whether they match, and the confidence (the
    calibrated probability: temperature-scaled softmax); or the predicted class of your own
    images (exit code 1 if some could not be read, 2 if none)."""
    if pretrained and run is not None:  # `fmnist predict --pretrained photo.jpg`: the first path is an image
        files = [run, *(files or [])]
    run = model_source(run, pretrained)
    if files:
        if settings.index:
            raise FmnistError("pass image FILES or --index, not both")
        raise typer.Exit(print_files(run, files, settings, as_json))
    preds = predict_images(run, settings=settings)
    if as_json:
        items = [p.to_dict() for p in preds]
        print(dumps(items[0] if len(items) == 1 else items))
        return
    for p in preds:
        verdict = "yes" if p.match else "NO"
        out.print(
            f"test image {p.index}: predicted {p.predicted} ({p.predicted_name}), actual {p.actual} ({p.actual_name}), "
            f"match: {verdict}, confidence {p.confidence * 100:.2f}%"
        )
        out.print("  top: " + top_line(p))


def top_line(p: Prediction) -> str:
    return ", ".join(f"{t['name']} {t['probability'] * 100:.2f}%" for t in p.top)


def print_files(run: Path, files: list[Path], settings: PredictSettings, as_json: bool) -> int:
    """Prints each file's prediction (errors on stderr); returns the exit code."""
    results = predict_files(run, files, settings=settings)
    failed = sum(isinstance(r, FmnistError) for _, r in results)
    if as_json:
        items = [
            r.to_dict() if not isinstance(r, FmnistError) else {"source": str(p), "error": str(r)} for p, r in results
        ]
        print(dumps(items[0] if len(items) == 1 else items))
    for path, r in results:
        if isinstance(r, FmnistError):
            print(f"error: {r}", file=sys.stderr)
        elif not as_json:
            out.print(f"{path}: predicted {r.predicted} ({r.predicted_name}), confidence {r.confidence * 100:.2f}%")
            out.print("  top: " + top_line(r))
            if r.preprocessed:
                out.print(f"  the model saw: {r.preprocessed}")
    return 0 if not failed else 2 if failed == len(results) else 1
