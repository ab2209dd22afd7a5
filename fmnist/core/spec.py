"""The data set's facts: class names, image size, pixel statistics, the four files (names,
sizes, hashes) and where they come from. A leaf: imports nothing from fmnist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

# Pixel statistics of the 60,000 training images after scaling to [0, 1]; `fmnist data info`
# recomputes them from the files, and a test checks these constants against the real data.
MEAN = 0.2860405969887955
STD = 0.35302424451492254

OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
VALIDATION_SIZE = 5000


@dataclass(frozen=True)
class FileSpec:
    key: str
    name: str  # official file name, with .gz
    sha256: str  # of the decompressed content
    size: int  # decompressed bytes
    md5_gz: str  # of the official .gz download


FILES: dict[str, FileSpec] = {
    s.key: s
    for s in (
        FileSpec(
            "train-images",
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47_040_016,
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        FileSpec(
            "train-labels",
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60_008,
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        FileSpec(
            "t10k-images",
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7_840_016,
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        FileSpec(
            "t10k-labels",
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10_008,
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    )
}
SPLIT_FILES = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}
