"""How ``mariposa top`` and ``service stats`` show numbers: bytes as KiB/MiB/GiB, rates a second,
CPU as percent of one core. rich is imported where a table is drawn (cli/output.py says why)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, step in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n:.0f} B"


def rate(n: float | None) -> str:
    return "-" if n is None else f"{size(n)}/s"


def percent(n: float | None) -> str:
    return "-" if n is None else f"{n:.1f}%"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, step in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= step:
            return f"{int(seconds // step)}{unit}"
    return f"{int(seconds)}s"


def memory(r: dict) -> str:
    text = size(r["memory"])
    return text + (f" ({r['memory_percent']:.0f}%)" if r.get("memory_percent") is not None else "")


TOP_COLUMNS: list[tuple[str, Any]] = [
    ("PROJECT", lambda r: r["project"]), ("SERVICE", lambda r: r["service"]), ("INSTANCE", lambda r: r["instance"]),
    ("TYPE", lambda r: r["compute_type"]), ("CPU", lambda r: percent(r["cpu"])), ("MEMORY", memory),
    ("NET RX", lambda r: rate(r["net_rx"])), ("NET TX", lambda r: rate(r["net_tx"])),
    ("BLOCK R", lambda r: rate(r["block_read"])), ("BLOCK W", lambda r: rate(r["block_write"])),
    ("HEALTH", lambda r: r["health"] or "-"), ("RESTARTS", lambda r: r["restarts"]),
    ("AGE", lambda r: age(r["age"])), ("STATE", lambda r: r["state"]),
]


def top_table(rows: list[dict]) -> Table:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for title, _ in TOP_COLUMNS:
        t.add_column(title, overflow="fold", justify="right" if title in ("CPU", "RESTARTS") else "left")
    for row in rows:
        t.add_row(*[str(fn(row)) for _, fn in TOP_COLUMNS])
    return t


STATS_COLUMNS: list[tuple[str, Any]] = [
    ("INSTANCE", lambda r: r["instance"]), ("SAMPLES", lambda r: r.get("count", "")),
    ("CPU", lambda r: percent(r["cpu"])), ("CPU MAX", lambda r: percent(r.get("cpu_max"))),
    ("MEMORY", lambda r: size(r["memory"])), ("MEMORY MAX", lambda r: size(r["memory_max"])),
    ("NET RX", lambda r: rate(r["net_rx"])), ("NET TX", lambda r: rate(r["net_tx"])),
    ("BLOCK R", lambda r: rate(r["block_read"])), ("BLOCK W", lambda r: rate(r["block_write"])),
]
