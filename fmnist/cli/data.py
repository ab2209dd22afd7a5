"""`fmnist data fetch | info | show`: the data set's files, facts and a sample grid."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fmnist.cli.options import app as make_app
from fmnist.cli.options import with_settings
from fmnist.cli.output import out
from fmnist.core.files import atomic_write_bytes
from fmnist.core.schema import DataSettings
from fmnist.core.spec import CLASS_NAMES, FILES
from fmnist.data import load_split, locate, pixel_stats, validation_split, verify_file
from fmnist.reporting.plots import sample_grid_png

app = make_app("Locate, verify, describe and draw the data set.")


@app.command("fetch")
@with_settings(DataSettings, exclude=("verify",))
def fetch(
    settings: DataSettings,
    no_download: bool = typer.Option(False, "--no-download", help="Never download; fail if no local copy exists."),
):
    """Find the four files (or download them into the cache) and verify their checksums."""
    src = locate(settings.data_dir, download=False if no_download else None)
    for key, spec in FILES.items():
        verify_file(src.paths[key], spec)
    out.print(f"Fashion-MNIST verified in {src.directory} (source: {src.origin})")


@app.command("info")
@with_settings(DataSettings)
def info(settings: DataSettings):
    """Where the files came from, whether they verified, counts per class, pixel mean/std."""
    train = load_split("train", settings.data_dir, verify=settings.verify)
    test = load_split("test", settings.data_dir, verify=settings.verify)
    out.print(f"source: {train.source.origin} ({train.source.directory})")
    for key, path in train.source.paths.items():
        out.print(f"  {key:<13} {path}")
    out.print(
        f"checksums: {'verified (SHA-256 of decompressed content)' if train.verified else 'NOT verified (--no-verify)'}"
    )
    mean, std = pixel_stats(train.images)
    out.print(f"images: {len(train):,} train + {len(test):,} test, 28×28 grayscale, 10 classes")
    out.print(f"training pixels after scaling to [0, 1]: mean {mean:.4f}, std {std:.4f}")
    _, val_idx = validation_split(train.labels)
    table = Table(title="images per class")
    for col in ("label", "class", "train", "of which validation", "test"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, name in enumerate(CLASS_NAMES):
        table.add_row(
            str(c),
            name,
            f"{(train.labels == c).sum():,}",
            f"{(train.labels[val_idx] == c).sum():,}",
            f"{(test.labels == c).sum():,}",
        )
    out.print(table)


@app.command("show")
@with_settings(DataSettings)
def show(
    *,
    out_path: Path = typer.Option(Path("grid.png"), "--out", help="PNG file to write."),
    split: str = typer.Option("train", help="train or test."),
    per_class: int = typer.Option(8, "--per-class", min=1, max=30, help="Examples per class (one row per class)."),
    seed: int = typer.Option(0, help="Which random examples."),
    settings: DataSettings,
):
    """Draw a grid of sample images, one row per class, labelled with class names."""
    s = load_split(split, settings.data_dir, verify=settings.verify)
    atomic_write_bytes(out_path, sample_grid_png(s.images, s.labels, per_class, seed, f"Fashion-MNIST {split} samples"))
    out.print(f"wrote {out_path}")
