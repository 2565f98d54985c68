"""How ``service logs`` and ``instance logs`` print: as ``docker compose logs`` does.

Each line is prefixed with its instance's short name, padded to the longest name seen so far,
then `` | `` (``web-3f2a9c1d  | GET / 200``); with ``--timestamps`` the line's time (RFC 3339, UTC,
microseconds) comes after the bar, where compose puts Docker's. On a terminal each instance's
prefix has a colour of its own (compose's cycle); piped output is plain, so scripts and files
get the text as it was printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TextIO

import click

# compose's cycle: cyan, yellow, green, magenta, blue, then their bright variants
COLOURS = ("36", "33", "32", "35", "34", "36;1", "33;1", "32;1", "35;1", "34;1")

logs_options: list[Callable] = [
    click.option("-f", "--follow", is_flag=True,
                 help="Keep printing new lines, through restarts and new instances, until interrupted."),
    click.option("--since", help="Only lines from then on: a duration back (10m, 1h30m) or a time "
                                 "(2026-11-26T13:55:00Z, epoch seconds)."),
    click.option("--tail", help="Only the last N lines of each instance ('all' by default)."),
    click.option("-t", "--timestamps", is_flag=True, help="Show each line's time."),
    click.option("--no-color", is_flag=True, help="No colours, even on a terminal."),
    click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts."),
]


def with_logs_options(fn: Callable) -> Callable:
    for option in reversed(logs_options):
        fn = option(fn)
    return fn


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Printer:
    """Prints records as they come; ``prefix`` False for one instance (as ``docker logs``)."""

    def __init__(self, out: TextIO, *, prefix: bool, timestamps: bool, colour: bool, as_json: bool,
                 flush: bool) -> None:
        self.out, self.prefix, self.timestamps, self.colour = out, prefix, timestamps, colour
        self.as_json, self.flush = as_json, flush
        self.width = 0
        self.colours: dict[str, str] = {}

    def line(self, record: dict) -> str:
        if self.as_json:
            return json.dumps(record) + "\n"
        text = record["line"]
        if self.timestamps:
            text = f"{stamp(record['time'])} {text}"
        if not self.prefix:
            return text + "\n"
        name = record["name"]
        self.width = max(self.width, len(name))
        head = f"{name:<{self.width}} |"
        if self.colour:
            code = self.colours.setdefault(record["instance"], COLOURS[len(self.colours) % len(COLOURS)])
            head = f"\x1b[{code}m{head}\x1b[0m"
        return f"{head} {text}\n"

    def print_all(self, records: Iterable[dict]) -> None:
        for record in records:
            self.out.write(self.line(record))
            if self.flush:
                self.out.flush()
        self.out.flush()


def show(records: Iterable[dict], *, prefix: bool, follow: bool, timestamps: bool, no_color: bool,
         as_json: bool) -> None:
    """Print the stream; a reader that went away (``| head``) ends it quietly."""
    out = sys.stdout
    printer = Printer(out, prefix=prefix, timestamps=timestamps, colour=out.isatty() and not no_color,
                      as_json=as_json, flush=follow)
    try:
        printer.print_all(records)
    except BrokenPipeError:
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115  (so the interpreter's own flush is quiet)
        except OSError:
            pass
