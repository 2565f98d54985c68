"""How the CLI shows things: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mariposa.clock import wall_clock

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported where a table is drawn: most commands print a line or JSON, and importing rich
# costs more than some of them take in all.


def console() -> Console:
    import shutil

    from rich.console import Console

    # Piped output must not be cut to an 80-column guess: scripts and tests read it whole.
    width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 250
    return Console(width=width, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def ago(stamp: float | None) -> str:
    if not stamp:
        return "-"
    delta = max(0, wall_clock() - stamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def short(value: str | None, n: int = 12) -> str:
    return (value or "-")[:n]


Column = tuple[str, Callable[[dict], Any]]


def table(rows: Sequence[dict], columns: Sequence[Column]) -> None:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for title, _ in columns:
        t.add_column(title, overflow="fold")
    for row in rows:
        t.add_row(*[str(fn(row)) for _, fn in columns])
    console().print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        sys.stdout.write(f"{key + ':':<{width + 1}} {value}\n")
