"""``mariposa export``: a project's current version as files another engine runs (compose,
``docker stack deploy``, Nomad, Kubernetes), with a conversion report that lists every field of
the manifest as mapped, mapped with a change, or not representable and why.

Pure: text and spec in, files and report out; no I/O, no clock. The control layer
(``control/exports.py``) finds the version, authorizes secret values, and runs this on a worker
thread. What the rest may use is listed here.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mariposa.errors import BadRequest
from mariposa.export import compose, kubernetes, nomad
from mariposa.export.common import TARGETS, Export, note_templates
from mariposa.export.fields import manifest_fields
from mariposa.export.report import CHANGED, MAPPED, NO_RULE, UNMAPPED, Entry, Report, counts, format_report
from mariposa.model import ProjectSpec

__all__ = ["CHANGED", "MAPPED", "NO_RULE", "TARGETS", "UNMAPPED", "Entry", "Result", "export", "refusal"]

_BUILDERS = {"compose": compose.build, "swarm-stack": compose.build, "nomad": nomad.build,
             "kubernetes": kubernetes.build}


@attrs.frozen
class Result:
    target: str
    files: dict[str, str]  # file name -> text
    entries: list[Entry]

    @property
    def unmapped(self) -> list[Entry]:
        return [e for e in self.entries if e.status == UNMAPPED]

    def report(self, filename: str) -> str:
        return format_report(self.entries, filename, self.target)

    def to_json(self, filename: str) -> dict:
        return {"target": self.target, "files": self.files, "entries": [e.to_json() for e in self.entries],
                "counts": counts(self.entries), "report": self.report(filename)}


def export(target: str, spec: ProjectSpec, text: str, project: str, filename: str = "<manifest>",
           secret_values: Mapping[str, str] | None = None) -> Result:
    """``spec`` parsed from ``text`` (the version's manifest), for project ``project``.
    ``secret_values`` (name -> value) only for a caller allowed to reveal them; without it
    secrets are exported as references."""
    if target not in _BUILDERS:
        raise BadRequest(f"'to' must be one of {', '.join(TARGETS)}, not {target!r}")
    ex = Export(target, project, spec, Report(manifest_fields(text, filename)), secret_values)
    files = _BUILDERS[target](ex)
    note_templates(ex)
    ex.fill_from_table()
    return Result(target, files, ex.report.finish())


def refusal(result: Result, filename: str) -> str:
    """Why ``--strict`` refuses the export: every field that is not representable."""
    lines = [f"export to {result.target} refused (--strict): {len(result.unmapped)} field(s) not representable:"]
    lines += [f"  {e.line}:{e.column} {e.path}: {e.note}" for e in result.unmapped]
    return "\n".join(lines)
