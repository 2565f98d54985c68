"""The conversion report: one entry per field of the compose file, saying whether it was mapped
as it is, mapped with a change (and which), or not mapped (and why). A field is never dropped
silently: ``convert`` checks that every key path of the file has an entry before it answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import attrs

MAPPED = "mapped"
CHANGED = "changed"  # mapped with a change
UNMAPPED = "not mapped"
STATUSES = (MAPPED, CHANGED, UNMAPPED)


@attrs.frozen
class Entry:
    path: str  # the key path in the compose file: services.web.deploy.replicas
    status: str  # MAPPED | CHANGED | UNMAPPED
    note: str  # what changed, or why it is not mapped ("" when mapped as it is)
    line: int  # 1-based, in the compose file
    column: int

    def to_json(self) -> dict:
        return attrs.asdict(self)


def counts(entries: Iterable[Entry]) -> dict[str, int]:
    found = Counter(e.status for e in entries)
    return {status: found.get(status, 0) for status in STATUSES}


def format_report(entries: Iterable[Entry], filename: str, form: str) -> str:
    """The report as people read it: one line per field, in file order, then the totals."""
    entries = sorted(entries, key=lambda e: (e.line, e.column))
    width = min(max((len(e.path) for e in entries), default=10), 48)
    lines = [f"conversion report for {filename} ({form}):"]
    for e in entries:
        where = f"{e.line}:{e.column}"
        note = f"  {e.note}" if e.note else ""
        lines.append(f"  {where:>7}  {e.path:<{width}}  {e.status:<10}{note}".rstrip())
    total = counts(entries)
    lines.append(f"{total[MAPPED]} mapped, {total[CHANGED]} mapped with a change, {total[UNMAPPED]} not mapped")
    return "\n".join(lines)
