"""The console the CLI prints through."""

from __future__ import annotations

from rich.console import Console


class StreamConsole(Console):
    """A Rich console that never wraps a line when its output is not a terminal: Rich then
    assumes 80 columns, which split `make run`'s one-line answer over two lines in logs.
    Whether the output is a terminal is decided at each print (tests swap sys.stdout)."""

    def print(self, *objects, **kwargs) -> None:
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)

    @property
    def width(self) -> int:
        width = Console.width.fget(self)
        return width if self.is_terminal else max(width, 200)

    @width.setter
    def width(self, value: int) -> None:
        Console.width.fset(self, value)


def make_console(file=None) -> Console:
    return StreamConsole(file=file)
