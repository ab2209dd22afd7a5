"""The architectures, each taking 1×28×28 pixel values in [0, 255] and returning logits, and
their summary. Importing the package registers every architecture."""

# Importing the architecture modules registers them, small ones first (the order of `fmnist model list`).
from fmnist.models import small  # noqa: F401

# isort: split
from fmnist.models import resnets  # noqa: F401

# isort: split
from fmnist.models.layers import Normalize, PatchWhitening, fit_to_data
from fmnist.models.registry import available, build_model, canonical_name, register
from fmnist.models.summary import LayerRow, count_params, flops_per_image, summarize, summary_table

__all__ = [
    "LayerRow",
    "Normalize",
    "PatchWhitening",
    "available",
    "build_model",
    "canonical_name",
    "count_params",
    "fit_to_data",
    "flops_per_image",
    "register",
    "summarize",
    "summary_table",
]
