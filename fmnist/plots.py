"""Matplotlib figures, rendered off-screen to PNG bytes (used by the CLI and the report)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # never open a window; works on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .spec import CLASS_NAMES  # noqa: E402


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


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def training_curves_png(history: list[dict[str, float]], title: str = "Training curves") -> bytes:
    """Loss and accuracy per epoch, training vs validation (metrics.csv rows)."""
    epochs = [int(r["epoch"]) for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    # Markers too: a run of one or two epochs would otherwise draw nothing visible.
    style = {"marker": "o", "markersize": 3}
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train", **style)
    loss_ax.plot(epochs, [r["val_loss"] for r in history], label="validation", **style)
    acc_ax.plot(epochs, [r["train_accuracy"] * 100 for r in history], label="train", **style)
    acc_ax.plot(epochs, [r["val_accuracy"] * 100 for r in history], label="validation", **style)
    for ax, name in ((loss_ax, "loss (cross-entropy)"), (acc_ax, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    return to_png(fig)


def image_grid_png(
    images: np.ndarray, captions: list[str], cols: int = 8, title: str = "", colors: list[str] | None = None
) -> bytes:
    """Images in a grid, each with a (multi-line) caption above it."""
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.35, rows * 1.75 + 0.4), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        _bare(ax)
        if k < n:
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)
            ax.set_title(captions[k], fontsize=7, color=(colors[k] if colors else "black"))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return to_png(fig)


def confused_pairs_png(rows: list[tuple[str, np.ndarray, list[str]]], per_row: int = 8) -> bytes:
    """One row per confused pair: a label, then example images with captions."""
    fig, axes = plt.subplots(
        len(rows), per_row + 1, figsize=((per_row + 1) * 1.25, len(rows) * 1.45), dpi=100, squeeze=False
    )
    for r, (label, images, captions) in enumerate(rows):
        _bare(axes[r, 0])
        axes[r, 0].text(1.0, 0.5, label, ha="right", va="center", fontsize=8, transform=axes[r, 0].transAxes)
        for j in range(per_row):
            ax = axes[r, j + 1]
            _bare(ax)
            if j < len(images):
                ax.imshow(images[j], cmap="gray", vmin=0, vmax=255)
                ax.set_title(captions[j], fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def reliability_png(bins: dict[str, np.ndarray], ece: float, what: str = "") -> bytes:
    """Reliability diagram: accuracy vs confidence per bin against the diagonal, with how
    many images fall in each bin underneath."""
    edges, count = bins["edges"], bins["count"]
    width = np.diff(edges)
    centres = edges[:-1] + width / 2
    used = count > 0
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centres[used], bins["accuracy"][used], width=width[used], edgecolor="black", label="accuracy", alpha=0.8)
    ax.bar(
        centres[used],
        bins["confidence"][used] - bins["accuracy"][used],
        bottom=bins["accuracy"][used],
        width=width[used],
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability diagram{f', {what}' if what else ''} (ECE {ece:.4f})")
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(centres, count, width=width, color="gray", edgecolor="black")
    hist.set_yscale("log")
    hist.set_xlabel("confidence (probability of the predicted class)")
    hist.set_ylabel("images")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    return to_png(fig)


def prediction_png(image: np.ndarray, probs: np.ndarray, actual: int | None = None, title: str = "") -> bytes:
    """One image beside the model's probability for every class; the predicted class in
    blue, the actual one (if different) in red."""
    fig, (im_ax, bar_ax) = plt.subplots(1, 2, figsize=(8.5, 3.4), dpi=100, gridspec_kw={"width_ratios": [1, 1.8]})
    _bare(im_ax)
    im_ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    pred = int(np.argmax(probs))
    colors = ["lightgray"] * len(probs)
    if actual is not None and actual != pred:
        colors[actual] = "tab:red"
    colors[pred] = "tab:blue"
    k = len(probs)
    bar_ax.barh(range(k), probs * 100, color=colors)
    bar_ax.set_yticks(range(k), CLASS_NAMES[:k])
    bar_ax.invert_yaxis()
    bar_ax.set_xlim(0, 100)
    bar_ax.set_xlabel("probability (%)")
    for i, p in enumerate(probs):
        bar_ax.text(min(p * 100 + 1, 88), i, f"{p * 100:.1f}%", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return to_png(fig)
