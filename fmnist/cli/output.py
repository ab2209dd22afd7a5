"""What the commands print with: one console, percentages, and saving after showing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from fmnist.cli.errors import os_error_line
from fmnist.core.console import make_console

T = TypeVar("T")
out = make_console()


def pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def save_or_explain(save: Callable[[], T]) -> T:
    """Run ``save``; if the disk refuses, one `error:` line that says the results shown were not saved."""
    try:
        return save()
    except OSError as e:
        print(f"error: {os_error_line(e)}; the results above were not saved", file=sys.stderr)
        sys.exit(2)
