"""Matplotlib figures, rendered off-screen to PNG bytes (used by the CLI and the report)."""

from __future__ import annotations

import io

import numpy as np

from fmnist.core.spec import CLASS_NAMES


def _pyplot():
    """matplotlib.pyplot on the off-screen Agg backend, imported on first use: an optional
    heavy import (about a second) that commands which draw nothing never pay for."""
    import matplotlib

    matplotlib.use("Agg")  # never open a window; works on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` for figures that end in :func:`to_png`."""
    return _pyplot().subplots(*args, **kwargs)


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def _mosaic_png(
    tiles: list[list[np.ndarray | None]],
    captions: list[list[str]] | None = None,
    colors: list[list[str]] | None = None,
    row_labels: list[str] | None = None,
    title: str = "",
    tile_inches: float = 1.25,
) -> bytes:
    """Grayscale tiles (0-255, all one shape; None leaves a gap) in rows, with an optional
    caption above each tile and a label left of each row, drawn as one picture: one axes and
    one imshow, where an axes per tile took 10x longer to draw (3 s for a 10x10 grid)."""
    first = next((t for row in tiles for t in row if t is not None), np.zeros((28, 28)))
    th, tw = first.shape
    nrows, ncols = len(tiles), max((len(row) for row in tiles), default=1)
    gap = max(2, tw // 7)
    unit = tile_inches / (tw + gap)  # inches per tile pixel
    lines = max((c.count("\n") + 1 for row in captions or [] for c in row if c), default=0)
    line = 7 / 72 * 1.2 / unit  # a 7-point caption line, in tile pixels
    cap = int(np.ceil(lines * line)) + (1 if lines else 0)
    cw, ch = tw + gap, th + gap + cap
    canvas = np.full((nrows * ch, ncols * cw), np.nan)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is not None:
                y, x = r * ch + cap + gap // 2, c * cw + gap // 2
                canvas[y : y + th, x : x + tw] = tile
    label_in = 0.07 * max((len(s) for s in row_labels or []), default=0) + (0.15 if row_labels else 0.05)
    title_in = 0.45 if title else 0.05
    width, height = ncols * cw * unit, nrows * ch * unit
    fig_w, fig_h = label_in + width + 0.05, title_in + height + 0.05
    plt = _pyplot()
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    ax = fig.add_axes((label_in / fig_w, 0.05 / fig_h, width / fig_w, height / fig_h))
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=255, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for r, row in enumerate(captions or []):
        for c, text in enumerate(row):
            if text:
                color = colors[r][c] if colors else "black"
                x, y = c * cw + cw / 2 - 0.5, r * ch + cap + gap // 2 - 1
                ax.text(x, y, text, ha="center", va="bottom", fontsize=7, color=color, linespacing=1.1)
    for r, label in enumerate(row_labels or []):
        ax.text(-gap, r * ch + cap + gap // 2 + th / 2, label, ha="right", va="center", fontsize=9)
    if title:
        fig.text(0.5, 1 - 0.08 / fig_h, title, ha="center", va="top", fontsize=12)
    return to_png(fig)


def sample_grid_png(
    images: np.ndarray, labels: np.ndarray, per_class: int = 8, seed: int = 0, title: str = ""
) -> bytes:
    """A grid with one row per class and ``per_class`` random examples, labelled by class name."""
    rng = np.random.default_rng(seed)
    rows, names = [], []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        rows.append([images[i] for i in chosen] + [None] * (per_class - len(chosen)))
        names.append(f"{c} {CLASS_NAMES[c]}")
    return _mosaic_png(rows, row_labels=names, title=title, tile_inches=0.9)


def confusion_png(cm: np.ndarray, title: str = "Confusion matrix (test set)") -> bytes:
    """The confusion matrix as a heat map with counts, PNG bytes."""
    fig, ax = subplots(figsize=(7.5, 6.5), dpi=110)
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
    fig, (loss_ax, acc_ax) = subplots(1, 2, figsize=(10, 3.8), dpi=100)
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
    at = [list(range(r * cols, min(n, (r + 1) * cols))) for r in range(rows)]
    return _mosaic_png(
        [[images[k] for k in row] for row in at],
        [[captions[k] for k in row] for row in at],
        [[colors[k] for k in row] for row in at] if colors else None,
        title=title,
        tile_inches=1.35,
    )


def confused_pairs_png(rows: list[tuple[str, np.ndarray, list[str]]], per_row: int = 8) -> bytes:
    """One row per confused pair: a label, then example images with captions."""
    return _mosaic_png(
        [list(images[:per_row]) for _, images, _ in rows],
        [list(captions[:per_row]) for _, _, captions in rows],
        row_labels=[label for label, _, _ in rows],
    )


def reliability_png(bins: dict[str, np.ndarray], ece: float, what: str = "") -> bytes:
    """Reliability diagram: accuracy vs confidence per bin against the diagonal, with how
    many images fall in each bin underneath."""
    edges, count = bins["edges"], bins["count"]
    width = np.diff(edges)
    centres = edges[:-1] + width / 2
    used = count > 0
    fig, (ax, hist) = subplots(2, 1, figsize=(5.5, 6), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
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
    fig, (im_ax, bar_ax) = subplots(1, 2, figsize=(8.5, 3.4), dpi=100, gridspec_kw={"width_ratios": [1, 1.8]})
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
