"""The `fmnist` command's root: which commands there are, and the one place where errors become
one `error:` line and an exit code.

The root is a lazy group (click's LazyGroup pattern): it knows each command's module and its
one-line help, and imports a command's module only to run it or show its own --help. So
`fmnist --help` imports neither PyTorch nor the training engine, and `fmnist serve` never
loads what `fmnist train` needs.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

import typer
from typer import Abort
from typer.core import TyperGroup

from fmnist._version import __version__
from fmnist.cli.errors import dash_file_hint, os_error_line
from fmnist.cli.options import OptionalValueCommand, app
from fmnist.core.errors import FmnistError

try:  # recent Typer vendors its own copy of Click
    from typer._click.exceptions import ClickException, NoSuchOption, UsageError
    from typer._click.utils import make_default_short_help
except ImportError:  # pragma: no cover - older Typer with Click installed
    from click.exceptions import ClickException, NoSuchOption, UsageError
    from click.utils import make_default_short_help

HELP = "Train, understand, improve and use a Fashion-MNIST classifier. `fmnist --version` prints the version."


@dataclass(frozen=True)
class Entry:
    """A command as the root knows it before its module is imported."""

    target: str  # "module:attribute": a Typer app (a group) or a command function
    help: str  # the first sentence of the command's own help, for `fmnist --help`
    extra: str | None = None  # the pip extra its module needs, for a one-line hint when it is missing
    needs: tuple[str, ...] = ()  # the extra's top-level packages


# In the order of `fmnist --help`. The help is each command's first sentence (a test compares them).
COMMANDS: dict[str, Entry] = {
    "ablate": Entry(
        "fmnist.cli.studies:ablate",
        "Add one improvement at a time to the notebook's recipe and measure each over seeds.",
    ),
    "transfer-study": Entry(
        "fmnist.cli.studies:transfer_study",
        "Pretrain on five classes, fine-tune on the other five with few labels, against training from scratch.",
    ),
    "train": Entry(
        "fmnist.cli.train:train", "Train a model; writes config.json, metrics.csv, model.safetensors and summary.json."
    ),
    "tune": Entry(
        "fmnist.cli.tune:tune",
        "Search hyperparameters with Optuna (TPE, pruning on validation accuracy; never the test set).",
        extra="tune",
        needs=("optuna", "sqlalchemy"),
    ),
    "evaluate": Entry(
        "fmnist.cli.evaluate:evaluate",
        "Test-set accuracy and loss, per-class precision/recall/F1, the confusion matrix, and the expected "
        "calibration error (ECE) before and after temperature scaling.",
    ),
    "predict": Entry(
        "fmnist.cli.predict:predict",
        "Predicted vs actual label of test images, whether they match, and the confidence (the calibrated "
        "probability: temperature-scaled softmax); or the predicted class of your own images (exit code 1 if "
        "some could not be read, 2 if none).",
    ),
    "report": Entry(
        "fmnist.cli.evaluate:report",
        "Write one self-contained HTML page (curves, confusion matrix, mistakes, calibration before and after "
        "temperature scaling, model, configuration) into the run folder; prints its path.",
    ),
    "calibrate": Entry(
        "fmnist.cli.evaluate:calibrate",
        "Fit (or refit) the run's temperature on its validation split and store it in its model file.",
    ),
    "audit": Entry(
        "fmnist.cli.studies:audit",
        "Likely label errors in the training and test sets, by confident learning (cleanlab) on out-of-sample "
        "probabilities: K-fold cross-validation on the training set, the run's model on the test set.",
    ),
    "export": Entry(
        "fmnist.cli.export:export",
        "Export to ONNX, checked against PyTorch on all 10,000 test images before it is written.",
    ),
    "serve": Entry(
        "fmnist.cli.serve:serve",
        "A REST API and a web page for the model (FastAPI on Uvicorn): open http://HOST:PORT/ for the page, "
        "/docs for the API.",
    ),
    "runs": Entry(
        "fmnist.cli.runs:app",
        "Every run folder found, one line each; `fmnist runs compare A B` puts runs side by side.",
    ),
    "data": Entry("fmnist.cli.data:app", "Locate, verify, describe and draw the data set."),
    "model": Entry("fmnist.cli.model:app", "The model architectures."),
    "preset": Entry("fmnist.cli.model:presets", "The named training recipes."),
    "version": Entry(
        "fmnist.cli.model:version", "The versions of fmnist, PyTorch and ONNX Runtime, and the CPU this runs on."
    ),
}


def load(name: str, entry: Entry) -> Any:
    """The click command of ``entry``, importing its module now."""
    module, _, attribute = entry.target.partition(":")
    try:
        target = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as e:
        if entry.extra is None or (e.name or "").split(".")[0] not in entry.needs:
            raise
        raise FmnistError(f"fmnist {name} needs {e.name}: pip install 'fmnist[{entry.extra}]'") from None
    if not isinstance(target, typer.Typer):
        one = app()
        one.command(name, cls=OptionalValueCommand)(target)
        target = one
    return typer.main.get_command(target)


class LazyGroup(TyperGroup):
    """The root group: lists :data:`COMMANDS` from what it knows, loads one when it is used."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in COMMANDS:
            return None
        if name not in self.loaded:
            self.loaded[name] = load(name, COMMANDS[name])
        return self.loaded[name]

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name = args[0]
        command = self.get_command(ctx, name)
        if command is None and not ctx.resilient_parsing:
            if name.startswith("-"):
                self.parse_args(ctx, args)  # an unknown option: click's own message
            matches = get_close_matches(name, list(COMMANDS))
            hint = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return (name if command else None), command, args[1:]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # from what the root knows: listing the commands imports none of them
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(name, make_default_short_help(entry.help, limit)) for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


root = LazyGroup(name="fmnist", help=HELP, no_args_is_help=True, rich_markup_mode=None)


def main() -> None:
    """Entry point: user mistakes end in one line on stderr and exit code 2."""
    # Our warnings (e.g. --no-verify) as one plain line, not a source listing.
    warnings.showwarning = lambda message, category, *a, **k: print(f"warning: {message}", file=sys.stderr)
    # `fmnist --version`: the version alone, before any command is loaded (`fmnist version` says
    # more). Handled here, not as a click option: the root group is Typer's, whose option class
    # changes between releases.
    if sys.argv[1:] == ["--version"]:
        print(f"fmnist {__version__}")
        sys.exit(0)
    try:
        code = root.main(standalone_mode=False)
    except FmnistError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except UsageError as e:
        name = getattr(e, "option_name", None) if isinstance(e, NoSuchOption) else None
        hint = dash_file_hint(name, sys.argv[1:]) or (f" (see `{e.ctx.command_path} --help`)" if e.ctx else "")
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print(
            "error: out of memory; use a smaller --batch-size or --eval-batch-size, or a smaller model", file=sys.stderr
        )
        sys.exit(2)
    except (Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
