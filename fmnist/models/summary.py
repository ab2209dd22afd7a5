"""The Keras-style summary of a model: each layer, what it does, its output shape,
parameters and FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fmnist.core.spec import IMAGE_SIZE, NUM_CLASSES
from fmnist.models.registry import available, build_model

# --- summary ---------------------------------------------------------------------------

DESCRIPTIONS: dict[type, str] = {
    nn.Conv2d: "detects local features such as edges and textures (learned 3×3 filters)",
    nn.ReLU: "keeps positive responses, zeroes the rest (non-linearity)",
    nn.MaxPool2d: "halves the resolution, keeps the strongest response in each 2×2 window",
    nn.AvgPool2d: "averages each window: smaller map, smoother response",
    nn.AdaptiveAvgPool2d: "averages each feature map to one number (global pooling)",
    nn.Flatten: "unrolls the feature maps into one vector for the dense layers",
    nn.Linear: "combines all features; each output is a weighted sum of every input",
    nn.BatchNorm2d: "re-centres and re-scales each channel: stable, faster training",
    nn.BatchNorm1d: "re-centres and re-scales each feature: stable, faster training",
    nn.Dropout: "randomly zeroes features while training so the model can't rely on any one",
    nn.Dropout2d: "randomly zeroes whole channels while training (regularization)",
    nn.Identity: "passes its input through unchanged",
}


@dataclass
class LayerRow:
    name: str
    kind: str
    description: str
    output_shape: tuple[int, ...]
    params: int
    flops: int  # floating-point operations per image (a multiply-add counts as 2)


def _units(module: nn.Module, prefix: str = ""):
    """The rows of the summary: leaves, or composite modules that describe themselves."""
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if hasattr(child, "description") or not any(True for _ in child.children()):
            yield full, child
        else:
            yield from _units(child, full + ".")


def _flops_hook(counter: list[int]):
    def hook(mod, inputs, output):
        if isinstance(mod, nn.Conv2d):
            per_out = 2 * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            counter[0] += per_out * output[0].numel()
        elif isinstance(mod, nn.Linear):
            counter[0] += 2 * mod.in_features * mod.out_features

    return hook


def summarize(model: nn.Module) -> list[LayerRow]:
    """One row per layer, from a forward pass of one blank image."""
    rows: list[LayerRow] = []
    handles = []
    counters: dict[str, list[int]] = {}
    units = list(_units(model))
    shapes: dict[str, tuple[int, ...]] = {}
    for name, unit in units:
        counters[name] = [0]
        for sub in unit.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                handles.append(sub.register_forward_hook(_flops_hook(counters[name])))
        handles.append(
            unit.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for name, unit in units:
        if name not in shapes:
            continue  # defined but unused in forward
        desc = getattr(unit, "description", None) or DESCRIPTIONS.get(type(unit), "")
        rows.append(
            LayerRow(
                name,
                type(unit).__name__,
                desc,
                shapes[name],
                sum(p.numel() for p in unit.parameters()),
                counters[name][0],
            )
        )
    return rows


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module) -> int:
    """Forward-pass FLOPs for one image (multiply-adds of convolutions and dense layers × 2)."""
    return sum(r.flops for r in summarize(model))


KERAS_NAMES = {
    "Normalize": "Input",
    "Conv2d": "Conv2D",
    "MaxPool2d": "MaxPooling2D",
    "Linear": "Dense",
    "BatchNorm2d": "BatchNormalization",
    "AdaptiveAvgPool2d": "GlobalAveragePooling2D",
}


def summary_table(name: str, model: nn.Module | None = None):
    """A Rich table in the spirit of Keras' ``model.summary()``, plus FLOPs per image."""
    from rich.table import Table

    model = model if model is not None else build_model(name)
    rows = summarize(model)
    table = Table(title=f"model '{name}': {available().get(name, '')}", title_justify="left")
    for col, kw in (
        ("Layer", {}),
        ("What it does", {"overflow": "fold"}),
        ("Output shape", {}),
        ("Params", {"justify": "right"}),
        ("FLOPs", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    table.add_row("Input", "a 28×28 grayscale image, pixel values 0–255", "(1, 28, 28)", "0", "0")
    for r in rows:
        kind = KERAS_NAMES.get(r.kind, r.kind)
        if r.kind == "Normalize":
            kind = "Normalize"
        table.add_row(f"{kind}", r.description, str(r.output_shape), f"{r.params:,}", _fmt_flops(r.flops))
    table.add_row(
        "Softmax", "turns the 10 scores into probabilities that sum to 1 (the output)", f"({NUM_CLASSES},)", "0", "-"
    )
    total_p = sum(r.params for r in rows)
    total_f = sum(r.flops for r in rows)
    table.add_section()
    table.add_row("Total", f"{total_p:,} trainable parameters", "", f"{total_p:,}", _fmt_flops(total_f))
    return table


def _fmt_flops(f: int) -> str:
    if f >= 1e9:
        return f"{f / 1e9:.2f} G"
    if f >= 1e6:
        return f"{f / 1e6:.2f} M"
    if f >= 1e3:
        return f"{f / 1e3:.1f} k"
    return str(f)
