"""`fmnist runs [DIR...]` (every run found, one line each) and `fmnist runs compare A B ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from fmnist.core.console import make_console
from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes, dumps
from fmnist.reporting.runs_compare import MISSING, compare, curves_png, format_seconds, write_page
from fmnist.reporting.runs_table import RunRow, list_runs

out = make_console()


class _RunsGroup(TyperGroup):
    """`fmnist runs DIR...` lists and `fmnist runs compare ...` compares: a first argument that
    names a command is that command, not a folder to list (Click would take it as a DIR).
    So the listing's options may also follow its folders, as in `fmnist runs runs/ --json`."""

    allow_interspersed_args = True

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            super().parse_args(ctx, [])  # the listing's own options, at their defaults
            ctx._protected_args, ctx.args = args[:1], args[1:]
            return ctx.args
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunsGroup,
    help="Every run folder found, one line each; `fmnist runs compare A B` puts runs side by side.",
    invoke_without_command=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def runs_cmd(
    ctx: typer.Context,
    dirs: Optional[list[Path]] = typer.Argument(None, help="Folders to search (default runs/), at any depth."),
    sort: str = typer.Option(
        "date", "--sort", help="Field to sort by (a key of --json), -FIELD for descending, e.g. -val_accuracy."
    ),
    where: Optional[list[str]] = typer.Option(
        None, "--where", help="Only runs where FIELD=VALUE (also !=, >, >=, <, <=; 90% for accuracies), repeatable."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
):
    """A table of every run folder below DIR: state (finished, interrupted and resumable, running,
    failed, damaged, foreign), preset, model, parameters, epochs, best validation accuracy, test
    accuracy and ECE (once evaluated), training time, the CPU or GPU it ran on, and date."""
    if ctx.invoked_subcommand:
        return
    rows = list_runs(dirs or [Path("runs")], where or [], sort)
    if as_json:
        print(dumps([r.to_dict() for r in rows]))
        return
    if not rows:
        out.print("no run folders found" + (" that match --where" if where else ""))
        return
    out.print(runs_table(rows), width=_width())
    notes = [f"{r.name}: {r.note}" for r in rows if r.note]
    for line in notes:
        out.print(line, highlight=False)


def runs_table(rows: list[RunRow]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    cols = (
        "run",
        "state",
        "preset",
        "model",
        "params",
        "epochs",
        "val acc",
        "test acc",
        "ECE",
        "time",
        "ran on",
        "date",
    )
    for c in cols:
        table.add_column(c, justify="left" if c in ("run", "state", "preset", "model", "ran on", "date") else "right")
    for r in rows:
        epochs = f"{_n(r.epochs_run)}/{_n(r.epochs)}" if r.epochs is not None else _n(r.epochs_run)
        table.add_row(
            r.name,
            r.state,
            r.preset or MISSING,
            r.model or MISSING,
            f"{r.params:,}" if r.params is not None else MISSING,
            epochs,
            _pct(r.val_accuracy),
            _pct(r.test_accuracy),
            f"{r.ece:.4f}" if r.ece is not None else MISSING,
            format_seconds(r.train_seconds) if r.train_seconds is not None else MISSING,
            _ran_on(r),
            r.date or MISSING,
        )
    return table


def _ran_on(r: RunRow) -> str:
    """The CPU kind up to its core count (--json has the instruction sets too) or the GPU's
    name; a run from before fmnist recorded it shows its device ("cpu", "cuda")."""
    if r.hardware:
        return ",".join(r.hardware.split(",")[:2]) if "cores" in r.hardware else r.hardware
    return r.device or MISSING


def _width() -> int | None:
    """A table's room: the terminal's, or (into a file or pipe) as wide as it needs, where
    Rich would squeeze it into 80 columns."""
    return None if out.is_terminal else out.width


def _n(v: int | None) -> str:
    return MISSING if v is None else str(v)


def _pct(v: float | None) -> str:
    return MISSING if v is None else f"{v * 100:.2f}%"


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders."),
    plot: Path = typer.Option(Path("compare.png"), "--plot", help="PNG of the overlaid validation curves."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write one HTML page with all of it."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs and the differing settings as JSON."),
):
    """The settings that differ between runs, their metrics side by side, and their validation
    curves overlaid (a PNG; --html: one page with all three)."""
    if len(runs) < 2:
        raise FmnistError("compare needs two or more run folders, e.g. fmnist runs compare runs/a runs/b")
    c = compare(runs)
    png = curves_png(c)
    if as_json:
        print(dumps(c.to_dict()))
    else:
        settings = Table(title="settings that differ", box=None, header_style="bold")
        for name in ("setting", *c.names):
            settings.add_column(name)
        for key, values in c.settings.items():
            settings.add_row(key, *map(str, values))
        out.print(settings if c.settings else "settings that differ: none", width=_width())
        metrics = Table(title="metrics", box=None, header_style="bold")
        metrics.add_column("")
        for name in c.names:
            metrics.add_column(name, justify="right")
        for label, values in c.metrics():
            metrics.add_row(label, *values)
        out.print(metrics, width=_width())
    atomic_write_bytes(plot, png)
    written = [plot]
    if html is not None:
        written.append(write_page(c, html, png))
    if not as_json:
        out.print("wrote " + " and ".join(str(p) for p in written))
