"""The conversion report of an export: one entry per field of the manifest.

It reuses the compose importer's vocabulary (``mariposa/compose/report.py``: ``Entry``, mapped,
mapped with a change, not mapped) so both directions read alike. ``Report.finish`` is the
no-silent-drops check: a field of the manifest that no rule gave an entry is reported as not
mapped, "no rule for this field", and the tests hold that no manifest ever gets that note.
"""

from __future__ import annotations

from mariposa.compose.report import CHANGED, MAPPED, UNMAPPED, Entry, counts, format_report
from mariposa.export.fields import Pos

__all__ = ["CHANGED", "MAPPED", "NO_RULE", "UNMAPPED", "Entry", "Report", "counts", "format_report"]

NO_RULE = "the exporter has no rule for this field"


class Report:
    """Entries by manifest path, positioned from ``fields`` (manifest_fields's answer)."""

    def __init__(self, fields: dict[str, Pos]) -> None:
        self.fields = fields
        self._entries: dict[str, Entry] = {}

    def add(self, path: str, status: str, note: str) -> None:
        line, col = self.fields.get(path, (0, 0))
        old = self._entries.get(path)
        if old is not None:  # two notes on one field (a service's options seen twice): keep both
            status = UNMAPPED if UNMAPPED in (old.status, status) else CHANGED if CHANGED in (old.status, status) \
                else MAPPED
            note = "; ".join(n for n in (old.note, note) if n)
        self._entries[path] = Entry(path, status, note, line, col)

    def mapped(self, path: str, note: str = "") -> None:
        self.add(path, MAPPED, note)

    def changed(self, path: str, note: str) -> None:
        self.add(path, CHANGED, note)

    def unmapped(self, path: str, why: str) -> None:
        self.add(path, UNMAPPED, why)

    def has(self, path: str) -> bool:
        return path in self._entries

    def finish(self) -> list[Entry]:
        """Every field written has an entry (one without gets ``NO_RULE``); entries for fields not
        written (defaults) are dropped: the report is about the user's text."""
        for path in self.fields:
            if path not in self._entries:
                self.unmapped(path, NO_RULE)
        return sorted((e for p, e in self._entries.items() if p in self.fields), key=lambda e: (e.line, e.column))

