"""One console for people (stderr, styled) and plain stdout for what scripts read."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line and return the Exit to raise: errors users cause never show a traceback."""
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {escape(line)}")
    return typer.Exit(code)


def say(message: str) -> None:
    err.print(f"[dim]›[/] {message}")
