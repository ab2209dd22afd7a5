"""`fmnist runs compare A B [C...]`: the settings in which runs differ, their metrics side by
side, their validation curves overlaid, and the same as one HTML page."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes, atomic_write_text
from fmnist.reporting.plots import subplots, to_png
from fmnist.reporting.runs_table import RunRow, flat_settings, read_row
from fmnist.runtime.runs import METRICS, RunFolder

MISSING = "—"  # a setting one run has and another lacks (a run from an older fmnist)


@dataclass
class Compared:
    """What `compare` shows: one column per run."""

    rows: list[RunRow]
    settings: dict[str, list[Any]]  # only those that differ: name -> one value per run
    histories: list[list[dict[str, float]]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    def metrics(self) -> list[tuple[str, list[str]]]:
        """(label, one text per run) for the metrics table."""
        return [(label, [fmt(getattr(r, key)) for r in self.rows]) for label, key, fmt in METRIC_ROWS]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [r.to_dict() for r in self.rows],
            "settings_that_differ": self.settings,
        }


def _pct(v: float | None) -> str:
    return f"{v * 100:.2f}%" if v is not None else MISSING


def _num(v: Any) -> str:
    if v is None:
        return MISSING
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


def _seconds(v: float | None) -> str:
    return format_seconds(v) if v is not None else MISSING


def _text(v: Any) -> str:
    return MISSING if v is None else str(v)


METRIC_ROWS = (
    ("state", "state", _text),
    ("best validation accuracy", "val_accuracy", _pct),
    ("best epoch", "best_epoch", _num),
    ("epochs run", "epochs_run", _num),
    ("test accuracy", "test_accuracy", _pct),
    ("test ECE", "ece", _num),
    ("parameters", "params", _num),
    ("training time", "train_seconds", _seconds),
    ("device", "device", _text),
    ("ran on", "hardware", _text),  # the CPU kind or GPU (runs from before it was recorded: —)
    ("precision", "precision", _text),
    ("date", "date", _text),
)


def format_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def compare(paths: list[str | Path]) -> Compared:
    """Read two or more run folders; a folder that is not a readable run is an error naming it."""
    if len(paths) < 2:
        raise FmnistError("compare needs two or more run folders, e.g. fmnist runs compare runs/a runs/b")
    rows, configs, histories = [], [], []
    for p in paths:
        folder = RunFolder(p)
        if folder.status in ("missing", "empty"):
            raise FmnistError(f"{p}: not a run folder to compare (no run in it)")
        row = read_row(str(p), folder.path)
        if row.state in ("foreign", "damaged"):
            raise FmnistError(f"{p}: not a run folder to compare ({row.state}: {row.note})")
        rows.append(row)
        configs.append(flat_settings(folder.read_config()))
        histories.append(folder.read_metrics() if (folder / METRICS).is_file() else [])
    return Compared(rows, differing_settings(configs), histories)


def differing_settings(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The settings whose values are not the same in every config, in config order."""
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys]
    marker = object()
    differ = {}
    for k in keys:
        values = [c.get(k, marker) for c in configs]
        if any(v != values[0] for v in values[1:]):
            differ[k] = [MISSING if v is marker else v for v in values]
    return differ


def curves_png(compared: Compared) -> bytes:
    """Validation accuracy and loss per epoch, one line per run."""
    fig, (acc_ax, loss_ax) = subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for name, history in zip(compared.names, compared.histories):
        rows = [r for r in history if math.isfinite(r["val_accuracy"])]
        epochs = [int(r["epoch"]) for r in rows]
        # Markers too: a run of one or two epochs would otherwise draw nothing visible.
        acc_ax.plot(epochs, [r["val_accuracy"] * 100 for r in rows], marker="o", markersize=3, label=name)
        loss_ax.plot(epochs, [r["val_loss"] for r in rows], marker="o", markersize=3, label=name)
    for ax, label in ((acc_ax, "validation accuracy (%)"), (loss_ax, "validation loss (cross-entropy)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.legend(fontsize=8)
    fig.suptitle("Validation curves")
    fig.tight_layout()
    return to_png(fig)


def write_plot(compared: Compared, path: str | Path) -> Path:
    atomic_write_bytes(path, curves_png(compared))
    return Path(path)


def write_page(compared: Compared, path: str | Path, png: bytes | None = None) -> Path:
    """One self-contained HTML page: the differing settings, the metrics, the curves."""
    png = png if png is not None else curves_png(compared)
    header = ["", *compared.names]
    settings = [[k, *map(_setting, v)] for k, v in compared.settings.items()]
    body = [
        section(
            "settings",
            "Settings that differ",
            table(header, settings) if settings else note("None: the runs share every setting."),
        ),
        section("metrics", "Metrics", table(header, [[label, *values] for label, values in compared.metrics()])),
        section(
            "curves", "Validation curves", figure(png, "validation accuracy and loss per epoch", "One line per run.")
        ),
    ]
    atomic_write_text(path, page("Runs compared", *body, subtitle=", ".join(compared.names)))
    return Path(path)


def _setting(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "none" if v is None else str(v)


# --- a small HTML helper with the calls of fmnist.reporting.html, whose page this becomes ----


def escape(x: Any) -> str:
    return html.escape(str(x))


def table(header: list[Any], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{escape(caption)}</figcaption></figure>'


def section(sid: str, title: str, *body: str) -> str:
    return f'<section id="{escape(sid)}"><h2>{escape(title)}</h2>{"".join(body)}</section>'


STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;color:#222;max-width:1040px;margin:0 auto;padding:1.2rem 1.5rem 3rem}"
    "table{border-collapse:collapse;font-variant-numeric:tabular-nums}"
    "th,td{padding:.22rem .65rem;border-bottom:1px solid #e4e4e4;text-align:right}"
    "th{background:#f4f4f4}th:first-child,td:first-child{text-align:left}img{max-width:100%}.note,.sub{color:#555}"
)


def page(title: str, *body: str, subtitle: str | None = None) -> str:
    sub = f'<p class="sub">{escape(subtitle)}</p>' if subtitle else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{sub}{''.join(body)}</body></html>\n"
    )
