"""What the command modules share: the consoles, exit codes, the error exit, the progress bar, CSV text."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_PARTIAL", "console", "err_console", "fail", "progress"]

console = Console()
err_console = Console(stderr=True)
EXIT_OK, EXIT_FAIL, EXIT_PARTIAL = 0, 1, 2


def fail(exc: BaseException) -> typer.Exit:
    """Print the error (rich markup in it escaped) and return the exit to raise."""
    err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_FAIL)


def progress():  # noqa: ANN201 - rich type only needed at run time
    """A transient progress bar on stderr (description, bar, done/total, elapsed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    )
