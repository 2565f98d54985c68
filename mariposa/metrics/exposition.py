"""The Prometheus text exposition format (version 0.0.4), written here rather than with
``prometheus_client``: the daemon has no registry of long-lived metric objects to keep in step
with its state, only numbers read at scrape time, and the format is a page of rules. The tests
parse what this writes with ``prometheus_client.parser``, which is what a scraper runs.

The rules kept: one ``# HELP`` and one ``# TYPE`` line per family, before its samples; label
values escaped (backslash, double quote, newline); HELP text escaped (backslash, newline);
floats as Go writes them (``+Inf``, ``-Inf``, ``NaN``); a histogram's buckets cumulative with
``le``, ending at ``+Inf``, then ``_sum`` and ``_count``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@attrs.define
class Family:
    name: str
    type: str  # gauge | counter | histogram
    help: str
    samples: list[tuple[str, Mapping[str, str], float]] = attrs.field(factory=list)  # (suffix, labels, value)

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> Family:
        self.samples.append((suffix, labels or {}, value))
        return self


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, labels, value in family.samples:
            lines.append(f"{family.name}{suffix}{_labels(labels)} {number(value)}")
    return "\n".join(lines) + "\n"


def histogram(family: Family, buckets: Iterable[tuple[float, int]], total: float, count: int,
              labels: Mapping[str, str] | None = None) -> Family:
    """A histogram's samples: cumulative ``(upper bound, count)`` pairs ending at +Inf."""
    for bound, n in buckets:
        family.add(n, {**(labels or {}), "le": number(bound)}, "_bucket")
    family.add(total, labels, "_sum")
    family.add(count, labels, "_count")
    return family
