"""The one redaction point: everything the control layer returns passes through ``redact``.

What must never leave the daemon is hidden here, once, instead of in each front end (the CLI
used to hide environment values while the API returned them verbatim):

- the values of every ``environment`` a service spec carries (keys stay visible: knowing *which*
  variables a service gets is useful and harmless);
- every secret value the daemon has seen (``remember``, called by ``mariposa.vault``): any string
  that contains one leaves with it replaced. No code path puts a value in an answer; this is the
  second line behind that, for what a program prints into its own logs, say.

The one thing let through is a ``Revealed`` value, which only ``secret reveal`` makes (after its
own, stricter authorization).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs

REDACTED = "<redacted>"
_PAIRS = frozenset({"environment"})  # keys whose value is a list of (name, value) pairs
MIN_SCRUBBED = 4  # shorter values would blank out ordinary words; they are still never put in answers

_PLAIN = (int, float, bool, type(None))
_known: set[str] = set()


@attrs.frozen
class Revealed:
    """A secret value the caller may see; ``redact`` unwraps it instead of hiding it."""

    value: str = attrs.field(repr=False)


def remember(value: bytes | str) -> None:
    """A secret value to scrub from every answer from now on (for the life of the daemon)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    for line in text.splitlines() or [text]:  # a multi-line value may be printed a line at a time
        if len(line.strip()) >= MIN_SCRUBBED:
            _known.add(line.strip())


def forget_all() -> None:
    """For tests."""
    _known.clear()


def scrub(text: str) -> str:
    for value in _known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact(data: Any) -> Any:
    kind = type(data)
    if kind is str:  # the common leaf first (logs pass here a line at a time)
        return scrub(data) if _known else data
    if kind in _PLAIN:
        return data
    if kind is Revealed:
        return data.value
    if kind is dict or isinstance(data, Mapping):
        return {k: _pairs(v) if k in _PAIRS else redact(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
    if isinstance(data, str):
        return redact(str(data))
    return data


def _pairs(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED for k in value}
    if isinstance(value, (list, tuple)):
        return [[pair[0], REDACTED] if isinstance(pair, (list, tuple)) and pair else REDACTED for pair in value]
    return REDACTED if value else value


async def redact_stream(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in items:
        yield redact(item)
