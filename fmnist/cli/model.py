"""`fmnist model list | summary` and `fmnist preset list`: what can be trained, and how."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import torch
import typer

from fmnist._version import __version__
from fmnist.cli.options import app as make_app
from fmnist.cli.output import out
from fmnist.core.machine import cpu_kind
from fmnist.models import available, canonical_name, summary_table
from fmnist.runtime.modelfile import load_model
from fmnist.training.presets import ABOUT, PRESETS, preset_config

app = make_app("The model architectures.")
presets = make_app("The named training recipes.")


@app.command("list")
def model_list():
    """The architectures you can train."""
    models = available()
    width = max(map(len, models))
    for name, about in models.items():
        out.print(f"{name:<{width}} {about}")


@app.command("summary")
def model_summary(
    name: str = typer.Argument(..., help="Model name (see `fmnist model list`) or a run folder / model file."),
):
    """A Keras-style table: each layer, what it does, output shape, parameters, FLOPs."""
    if canonical_name(name, note=False) in available():
        out.print(summary_table(canonical_name(name)))
        return
    model, info = load_model(name)
    out.print(summary_table(canonical_name(info.model, note=False), model))


@presets.callback()
def preset_group():
    """The named training recipes."""


@presets.command("list")
def preset_list():
    """Each preset: its model, its epochs, and what it is for (`fmnist train --preset NAME`)."""
    rows = [(name, preset_config(name), ABOUT.get(name, "")) for name in PRESETS]
    width = max(len(name) for name, _, _ in rows)
    model_width = max(len(c.model) for _, c, _ in rows)
    for name, config, about in rows:
        out.print(f"{name:<{width}}  {config.model:<{model_width}}  {config.epochs:>3} epochs  {about}")


def version():
    """The versions of fmnist, PyTorch and ONNX Runtime, and the CPU this runs on."""
    print(f"fmnist {__version__}")
    print(f"PyTorch {torch.__version__}")
    ort = importlib.util.find_spec("onnxruntime")
    print(f"ONNX Runtime {importlib.metadata.version('onnxruntime') if ort else 'not installed (fmnist[onnx])'}")
    print(f"CPU {cpu_kind()}")
