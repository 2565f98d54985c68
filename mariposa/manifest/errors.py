"""Manifest problems carry positions because the manifest is a file people edit by hand.

Validation collects every problem before raising, so one run shows the user everything to fix;
``ManifestError`` is that whole list, printed one ``FILE:LINE:COL: field: message`` per line,
the format editors and terminals turn into clickable locations.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


def excerpt(text: object, limit: int) -> str:
    """Problems quote what the file says, and the file may hold what must not travel far (a
    secret, another file's lines): no message or field carries more than a short excerpt."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _field(text: object) -> str:
    return excerpt(text, 80)


def _message(text: object) -> str:
    return excerpt(text, 200)


@attrs.frozen
class ManifestProblem:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    field: str = attrs.field(converter=_field)  # a dotted path: "services.web.scale"; "" for the document
    message: str = attrs.field(converter=_message)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if not self.field:
            return f"{where}: {self.message}"
        return f"{where}: {self.field}: {self.message}"

    def to_json(self) -> dict:
        return attrs.asdict(self)


class ManifestError(Exception):
    """Every problem found in one manifest, in file order."""

    def __init__(self, problems: Iterable[ManifestProblem]):
        # A stable sort keeps problems at the same position in the order they were found.
        self.problems: list[ManifestProblem] = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
