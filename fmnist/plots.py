"""Matplotlib figures, rendered off-screen to PNG bytes (used by the CLI and the report)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # never open a window; works on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .data import CLASS_NAMES  # noqa: E402


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def sample_grid_png(
    images: np.ndarray, labels: np.ndarray, per_class: int = 8, seed: int = 0, title: str = ""
) -> bytes:
    """A grid with one row per class and ``per_class`` random examples, labelled by class name."""
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    fig, axes = plt.subplots(k, per_class, figsize=(per_class * 0.9 + 1.6, k * 0.95), dpi=100)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(chosen):
                ax.imshow(images[chosen[j]], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].set_ylabel(f"{c} {CLASS_NAMES[c]}", rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return to_png(fig)


def confusion_png(cm: np.ndarray, title: str = "Confusion matrix (test set)") -> bytes:
    """The confusion matrix as a heat map with counts, PNG bytes."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    # Log-ish colour scale so off-diagonal confusions remain visible next to the ~950 diagonal.
    shown = np.log1p(cm)
    im = ax.imshow(shown, cmap="Blues")
    k = len(cm)
    ax.set_xticks(range(k), CLASS_NAMES[:k], rotation=45, ha="right")
    ax.set_yticks(range(k), CLASS_NAMES[:k])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    threshold = shown.max() * 0.6
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shown[i, j] > threshold else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log(1 + count)")
    fig.tight_layout()
    return to_png(fig)
