"""Transfer learning: start a model from other weights, replace its head, freeze parts of it.

Sources for ``--init-from``:

- an fmnist model file (or run folder) of the same architecture and arguments;
- a checkpoint in the key layout torchvision and timm publish for ResNet-18 (``conv1``,
  ``bn1``, ``layer1.0.conv1``, ..., ``fc``), as ``.safetensors`` or as ``.pth``/``.pt`` read with
  ``torch.load(weights_only=True)`` (tensors only: never a full unpickle). The first
  convolution's three colour channels are summed into the one grey channel, and an ImageNet
  head (1,000 classes) is replaced by a new 10-class one.

The *head* is a model's last dense layer; ``--freeze`` names parts whose weights (and batch-norm
statistics) stay bit-identical while training: ``stem`` (the first convolution and its batch
norm), ``body`` (everything but the head: a linear probe) or a comma-separated list of
parameter-name prefixes (``layer1,layer2,layer3`` for every ResNet-18 stage but the last).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fmnist.core.errors import FmnistError
from fmnist.models import canonical_name
from fmnist.runtime.modelfile import ModelFileError, load_model, read_model_info, resolve_model_path

PRETRAINED_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def head_name(model: nn.Module) -> str:
    """The module name of the model's last dense layer (its classifier head)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise FmnistError(f"{type(model).__name__} has no dense output layer to treat as its head")
    return names[-1]


def stem_names(model: nn.Module) -> list[str]:
    """The first convolution and, if one follows it directly, its batch norm."""
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    if not modules or not isinstance(modules[0][1], nn.Conv2d):
        raise FmnistError("this model has no convolutional stem to freeze")
    out = [modules[0][0]]
    if len(modules) > 1 and isinstance(modules[1][1], nn.BatchNorm2d):
        out.append(modules[1][0])
    return out


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def frozen_prefixes(model: nn.Module, spec: str) -> list[str]:
    """The module-name prefixes that ``--freeze spec`` keeps fixed."""
    spec = spec.strip()
    if not spec or spec == "none":
        return []
    if spec == "stem":
        return stem_names(model)
    head = head_name(model)
    if spec == "body":  # every module with weights, but the head
        return sorted({n.rpartition(".")[0] for n, _ in model.named_parameters() if not _under(n, [head])})
    prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    names = {n for n, _ in model.named_parameters()}
    for p in prefixes:
        if not any(_under(n, [p]) for n in names):
            children = ", ".join(n for n, _ in model.named_children())
            raise FmnistError(f"--freeze {p!r} names no part of this model; its parts are: {children} (or stem, body)")
    if any(_under(n, prefixes) for n in names if _under(n, [head])):
        raise FmnistError(f"--freeze {spec!r} would freeze the head ({head}), leaving nothing to train")
    return prefixes


def freeze(model: nn.Module, spec: str) -> list[str]:
    """Stop gradients to the parts ``spec`` names; returns their module-name prefixes."""
    prefixes = frozen_prefixes(model, spec)
    for name, p in model.named_parameters():
        if _under(name, prefixes):
            p.requires_grad_(False)
    return prefixes


def keep_frozen_norms_still(model: nn.Module, prefixes: list[str]) -> None:
    """Put the batch norms inside frozen parts in eval mode, so their running statistics do
    not move either. Call after every ``model.train()``."""
    if not prefixes:
        return
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and _under(name, prefixes):
            m.eval()


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a published checkpoint (safetensors, or a tensors-only torch file)."""
    path = Path(path)
    if not path.is_file():
        raise FmnistError(f"--init-from {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch.load raise many types for damaged or unsafe files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FmnistError(
            f"--init-from {path}: not a readable checkpoint of tensors ({first[:160]}); files that need a full "
            "unpickle are refused on purpose"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FmnistError(f"--init-from {path}: holds no dictionary of named tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def initialise(
    model: nn.Module, model_name: str, model_args: dict, source: str | os.PathLike, reset_head: bool
) -> list[str]:
    """Copy ``source``'s weights into ``model``; returns notes for the user (head replaced, channels summed)."""
    notes: list[str] = []
    path = Path(source)
    fmnist_file = False
    try:
        model_path = resolve_model_path(path)
        fmnist_file = model_path.suffix == ".safetensors" and _is_fmnist(model_path)
    except ModelFileError:
        model_path = path
    if fmnist_file:
        src, info = load_model(model_path)
        # canonical: a file from before a model's rename still fits a run under the new name
        if canonical_name(info.model, note=False) != model_name or info.model_args != model_args:
            raise FmnistError(
                f"--init-from {model_path}: a {info.model} {info.model_args or ''} model, but this run trains "
                f"{model_name} {model_args or ''}; use the same --model and --model-arg values"
            )
        state = src.state_dict()
    else:
        if path.suffix not in PRETRAINED_SUFFIXES:
            raise FmnistError(f"--init-from {path}: expected an fmnist run, or a {'/'.join(PRETRAINED_SUFFIXES)} file")
        state = read_checkpoint(path)
    ours = model.state_dict()
    head = head_name(model)
    first_conv = stem_names(model)[0] + ".weight"
    if (
        first_conv in state
        and state[first_conv].ndim == 4
        and state[first_conv].shape[1] == 3
        and ours[first_conv].shape[1] == 1
    ):
        state = {**state, first_conv: state[first_conv].sum(dim=1, keepdim=True)}
        notes.append(f"summed the 3 colour channels of {first_conv} into one grey channel")
    keep_head = not reset_head and all(
        k in state and state[k].shape == v.shape for k, v in ours.items() if _under(k, [head])
    )
    missing = [k for k in ours if not _under(k, [head]) and k not in state]
    wrong = [k for k in ours if not _under(k, [head]) and k in state and state[k].shape != ours[k].shape]
    if missing or wrong:
        what = (
            f"{len(missing)} of its tensors are missing (first: {missing[0]})"
            if missing
            else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model needs {tuple(ours[wrong[0]].shape)}"
        )
        raise FmnistError(f"--init-from {path}: does not fit the {model_name} model: {what}")
    new = {k: (state[k] if (keep_head or not _under(k, [head])) else v) for k, v in ours.items()}
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in new.items()})
    if not keep_head:
        why = "as asked (--reset-head)" if reset_head else "its classes differ from these 10"
        notes.append(f"replaced the head ({head}) with a new, randomly initialised one: {why}")
    return notes


def _is_fmnist(path: Path) -> bool:
    try:
        read_model_info(path)
        return True
    except ModelFileError:
        return False
