"""Where and how the ``fathom`` command writes.

Two rules hold for every command:

- stdout carries the command's result only (with ``--json``, the JSON document and nothing else);
  progress, hints and errors go to stderr.
- Nothing wraps when the stream is not a terminal. Paths, URLs, ids and error messages are copied
  and grepped from logs; a line broken at 80 columns cannot be. On a terminal rich lays out as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from typer.core import MarkupMode, TyperGroup

# rich needs some width to lay out tables; this one is wider than any line we print, so a table is
# as wide as its content and text is never broken.
PIPED_WIDTH = 100_000


def _is_tty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a stream closed under us (end of a test run) is no terminal
        return False


class CliConsole(Console):
    """A rich console that lays out for the terminal when it writes to one, and never wraps otherwise.

    The check is made at each write, on the stream of the moment, and ignores COLUMNS and
    FORCE_COLOR: neither says whether a reader will copy a line out of a file.
    """

    def __init__(self, *, stderr: bool = False, soft_wrap: bool = False) -> None:
        super().__init__(stderr=stderr, soft_wrap=soft_wrap, highlight=False)

    @property
    def size(self) -> ConsoleDimensions:
        real = super().size
        return real if _is_tty(self.file) else ConsoleDimensions(PIPED_WIDTH, real.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not _is_tty(self.file):
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)


out_console = CliConsole()
err_console = CliConsole(stderr=True)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line whatever the message holds (no markup read in it)."""
    err_console.print(f"[red]error:[/red] {escape(message)}")


class CliGroup(TyperGroup):
    """Typer's group, with rich help and error panels only when both streams are terminals.

    Rich panels break lines at the terminal width (80 columns when piped, or COLUMNS). Piped, the
    whole command tree falls back to click's plain help and ``Error: <message>``, laid out as wide as
    their lines: nothing is broken.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if _is_tty(sys.stdout) and _is_tty(sys.stderr):
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        extra.setdefault("terminal_width", PIPED_WIDTH)
        extra.setdefault("max_content_width", PIPED_WIDTH)
        chosen = _set_markup_mode(self, None)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        finally:
            for command, mode in chosen:
                command.rich_markup_mode = mode  # type: ignore[attr-defined]


def _set_markup_mode(command: object, mode: MarkupMode) -> list[tuple[object, MarkupMode]]:
    """Set ``rich_markup_mode`` on a command and everything under it; return what each had."""
    before: list[tuple[object, MarkupMode]] = []
    if hasattr(command, "rich_markup_mode"):
        before.append((command, command.rich_markup_mode))
        command.rich_markup_mode = mode
    # Typer ships its own copy of click, so groups are told by their `commands`, not by class.
    for sub in dict(getattr(command, "commands", None) or {}).values():
        before.extend(_set_markup_mode(sub, mode))
    return before


def command_group(help_text: str) -> typer.Typer:
    """A ``typer.Typer`` for one area of the CLI, with the output rules above."""
    return typer.Typer(help=help_text, no_args_is_help=True, cls=CliGroup, pretty_exceptions_enable=False)
