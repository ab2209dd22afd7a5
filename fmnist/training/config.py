"""The training configuration. Every :class:`TrainConfig` field is a setting of the one schema
(:mod:`fmnist.core.schema`), with its help text and its allowed values: the ``fmnist train``
options are generated from it, a JSON or TOML file is read through it, and one
:meth:`TrainConfig.validate` checks any of them before anything on disk changes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fmnist.core.errors import FmnistError
from fmnist.core.schema import check, data_dir_param, device_param, param, problem, updated, verify_param
from fmnist.core.spec import VALIDATION_SIZE
from fmnist.models import available, build_model, canonical_name, count_params
from fmnist.runtime.inference import EVAL_BATCH, resolve_device
from fmnist.runtime.runfiles import CONFIG_REMEDY
from fmnist.runtime.runs import CONFIG, RunFolder
from fmnist.training.budget import Plan, parse_duration
from fmnist.training.transfer import frozen_prefixes

# Keys a run's config.json carries beside the settings; reading it as a config skips them.
RUN_FILE_KEYS = ("format", "resolved")
MAX_SEED = 2**31 - 1


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults reproduce the original notebook's recipe
    (the `seed` CNN, Adam at 1e-3, batch 32, 5 epochs)."""

    # model
    model: str = param("seed", "Architecture (see `fmnist model list`).", choices=tuple(available()))
    model_args: dict[str, Any] = param(
        help="Architecture arguments as KEY=VALUE, repeatable, e.g. --model-arg widths=48,96,192 --model-arg stem=16 "
        "(see `fmnist model list`).",
        factory=dict,
        flags=("--model-arg",),
        multiple=True,
        metavar="KEY=VALUE",
        parse=lambda items: parse_model_args(items),
    )
    # transfer learning
    init_from: str | None = param(
        None,
        path=True,
        help="Start from these weights: an fmnist run or model file of the same architecture, or (with --model "
        "resnet18) a ResNet-18 checkpoint in torchvision/timm layout (.safetensors, or .pth read tensors-only).",
    )
    reset_head: bool = param(False, "With --init-from: a new head even when the old one fits (other classes).")
    freeze: str = param(
        "",
        "Parts kept fixed while training: stem, body (all but the head) or module names, e.g. layer1,layer2,layer3.",
    )
    head_lr: float = param(0.0, "Learning rate of the head (the last dense layer); 0 = the same as --lr.", min=0)
    # optimisation
    epochs: int = param(5, "Full passes over the training images.", min=1)
    batch_size: int = param(32, "Images per optimizer step (the global batch, over all processes).", min=1)
    lr: float = param(1e-3, "Peak learning rate.", above=0)
    weight_decay: float = param(0.0, "Weight decay (on conv/dense weights only, unless --decay-norm-and-bias).", min=0)
    optimizer: str = param("adam", "adam, adamw or sgd (with Nesterov momentum).", choices=("adam", "adamw", "sgd"))
    momentum: float = param(0.9, "SGD momentum (0 turns Nesterov off).", min=0, below=1)
    schedule: str = param(
        "constant", "Learning-rate schedule after the warm-up.", choices=("constant", "onecycle", "cosine")
    )
    warmup_epochs: float = param(
        0.0, "Linear warm-up, in epochs (onecycle: 0 means a quarter of training).", min=0, max=1000
    )
    label_smoothing: float = param(0.0, "Label smoothing of the cross-entropy target.", min=0, below=1)
    decay_norm_and_bias: bool = param(False, "Apply weight decay to norms and biases too (usually harmful).")
    # augmentation, applied to whole batches on the device
    flip: bool = param(False, "Random horizontal flips.")
    translate: int = param(0, "Random shifts of up to N pixels (a random crop of a zero-padded image).", min=0, max=14)
    erase: float = param(0.0, "Random-erasing probability per image.", min=0, max=1)
    mixup: float = param(0.0, "MixUp Beta(alpha, alpha); 0 = off.", min=0, max=100)
    cutmix: float = param(0.0, "CutMix Beta(alpha, alpha); 0 = off.", min=0, max=100)
    # weights and evaluation
    ema: float = param(0.0, "Decay of the exponential moving average of the weights; 0 = off.", min=0, below=1)
    tta: bool = param(False, "Flip test-time augmentation: average the logits of each image and its mirror.")
    early_stop: int = param(0, "Stop after N epochs without a better validation accuracy; 0 = off.", min=0)
    # time
    time_budget: str | None = param(
        None,
        "Train for a time instead of --epochs: the whole call, from start to a saved, calibrated model, e.g. "
        "90s, 2m, 1h (a short probe measures this machine; the plan it makes is saved in config.json).",
    )
    plan: dict[str, Any] = param(
        help="The steps a --time-budget bought (steps, steps_per_epoch, changes), written by fmnist: a config "
        "that has one repeats that run step for step, on any machine, with no budget.",
        factory=dict,
        cli=False,
    )
    # data
    val_size: int = param(VALIDATION_SIZE, "Training images held out (stratified) to choose the best epoch.", min=0)
    split_seed: int = param(0, "Seed of the validation split.", min=0, max=MAX_SEED)
    subset: int = param(0, "Train on only this many images (smoke runs); 0 = all.", min=0)
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()
    # machinery
    seed: int = param(0, "Random seed (same seed, same machine, same thread count: same result).", min=0, max=MAX_SEED)
    device: str = device_param()
    precision: str = param("auto", "auto (bf16 where it is fast), fp32 or bf16.", choices=("auto", "fp32", "bf16"))
    channels_last: bool = param(True, "Channels-last memory format (faster convolutions on CPU and GPU).")
    compile: bool = param(False, "torch.compile the model (pays off only for long GPU runs).")
    threads: int = param(0, "PyTorch CPU threads; 0 = PyTorch's default.", min=0, max=4096)
    eval_batch_size: int = param(EVAL_BATCH, "Images per batch when validating.", min=1)
    save_every: int = param(
        1, "Write the resume state every N epochs (0: only when stopped by Ctrl-C or SIGTERM).", min=0
    )
    # tracking (fmnist.tracking): written beside the run folder's own records, never instead of them
    tensorboard: bool = param(False, "Write TensorBoard event files into RUN/tensorboard/ (needs fmnist[track]).")
    mlflow: str | None = param(
        None,
        "Log to this MLflow tracking store: sqlite:///mlruns.db, postgresql://USER@HOST/DB or http://HOST:5000; "
        "alone (or 'default'): $FMNIST_MLFLOW_URI, else sqlite:///mlruns.db (needs fmnist[track]).",
        flag_value="default",
        metavar="[URI]",
    )
    out: str | None = param(None, "Run folder (default runs/<model>-<timestamp>).", path=True)
    overwrite: bool = param(False, "Replace a run already in --out (only the files fmnist wrote).")
    preset: str | None = param(
        None, "Start from a named recipe; its values are recorded as the run's preset (see --show-config).", cli=False
    )

    def __post_init__(self) -> None:
        # A renamed model's old name (in an old config.json, a --config file, --model) still
        # works, with a note; the run records the new name.
        if isinstance(self.model, str):
            self.model = canonical_name(self.model)

    # --- reading ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str | None = None) -> TrainConfig:
        """A config from ``values`` (a file's content, a preset); unknown keys and wrong
        types are an :class:`FmnistError` naming the key. Does not :meth:`validate`."""
        return cls().merged(values, source)

    def merged(self, overrides: dict[str, Any], source: str | None = None) -> TrainConfig:
        """A copy with ``overrides`` applied (None values are ignored; ``model_args`` are
        merged key by key, so ``--model-arg stem=32`` keeps a preset's widths; a different
        ``model`` without ``model_args`` starts from that model's defaults)."""
        base = TrainConfig(**self.to_dict())  # a deep copy: the two share no dict or list
        model, values = overrides.get("model"), dict(overrides)
        other_model = isinstance(model, str) and canonical_name(model, note=False) != self.model
        if other_model and values.get("model_args") is None:
            base.model_args = {}
        if isinstance(values.get("model_args"), dict):
            values["model_args"] = {**base.model_args, **values["model_args"]}
        return updated(base, values, source, ignore=RUN_FILE_KEYS)

    # --- checking -----------------------------------------------------------------------

    def validate(self, source: str | None = None) -> None:
        """Every check that needs no data: types, ranges, finiteness, choices, the device,
        and the model (built on PyTorch's ``meta`` device, so no memory is spent)."""
        check(self, source)
        resolve_device(self.device)
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if self.plan:
            Plan.from_dict(self.plan, source or "--config")
        check_model(self.model, self.model_args, self.batch_size, source)
        if self.freeze:
            with torch.device("meta"):
                frozen_prefixes(build_model(self.model, **self.model_args), self.freeze)
        if self.init_from is not None and not Path(self.init_from).exists():
            raise FmnistError(f"--init-from {self.init_from}: no such file or folder")


def check_model(name: str, args: dict[str, Any], batch_size: int = 1, source: str | None = None) -> int:
    """Build the model on the meta device (no memory) to check its arguments; refuse one whose
    weights alone would not fit in this machine's memory. Returns its parameter count."""
    if not _finite(args):
        raise problem("model_args", f"for model {name!r} must be finite numbers, got {args}", source)
    try:
        with torch.device("meta"):
            model = build_model(name, **args)
    except FmnistError as e:
        raise problem("model_args", f"do not fit model {name!r}: {e}", source) from None
    except (ValueError, RuntimeError, TypeError, OverflowError) as e:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise problem("model_args", f"do not fit model {name!r}: {text}", source) from None
    params = count_params(model)
    # weights, gradients, two optimizer moments and an EMA copy: five float32 copies
    need = 5 * 4 * params
    have = _memory_bytes()
    if have and need > have:
        raise problem(
            "model_args",
            f"make a model of {params:,} parameters, which needs about {need / 2**30:.1f} GiB to train; "
            f"this machine has {have / 2**30:.1f} GiB",
            source,
        )
    return params


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in a JSON or TOML file (a run's own config.json included)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FmnistError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FmnistError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise FmnistError(f"--config {path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise FmnistError(f"--config {path}: expected a table of settings, got {type(values).__name__}")
    return values


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """``["widths=48,96,192", "stem=16"]`` -> ``{"widths": [48, 96, 192], "stem": 16}``.
    A value is JSON if it parses as JSON, a list if it has commas, a string otherwise."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FmnistError(f"--model-arg {item!r}: use KEY=VALUE, e.g. --model-arg widths=48,96,192")
        args[key.strip()] = _parse_value(text.strip())
    return args


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "," in text:
        return [_parse_value(t.strip()) for t in text.split(",")]
    return text


def read_run_config(folder: RunFolder) -> dict[str, Any]:
    """A run's config.json, checked by the rules of ``fmnist train --config`` (types, ranges,
    known keys), without the checks that depend on this machine (the device, the model's size):
    a damaged file or one edited into an impossible state is one error line; a valid hand edit
    keeps working."""
    path = folder / CONFIG
    values = folder.read_config()
    try:
        config = TrainConfig.from_mapping({k: v for k, v in values.items() if k not in RUN_FILE_KEYS}, str(path))
        check(config, str(path))
    except FmnistError as e:
        raise FmnistError(f"{e}; {CONFIG_REMEDY}") from None
    return values
