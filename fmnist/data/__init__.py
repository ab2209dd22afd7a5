"""The data's first stage: the four IDX files found, verified and parsed; the splits; batch
augmentation; the user's own images."""

from fmnist.data.sources import DataSource, cache_dir, download_to, locate, verify_content, verify_file
from fmnist.data.splits import Split, load_fashion_mnist, load_split, pixel_stats, validation_split

__all__ = [
    "DataSource",
    "Split",
    "cache_dir",
    "download_to",
    "load_fashion_mnist",
    "load_split",
    "locate",
    "pixel_stats",
    "validation_split",
    "verify_content",
    "verify_file",
]
