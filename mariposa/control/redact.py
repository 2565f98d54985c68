"""The one redaction point: everything the control layer returns passes through ``redact``.

What must never leave the daemon is hidden here, once, instead of in each front end (the CLI
used to hide environment values while the API returned them verbatim). Today that is the values
of every ``environment`` a service spec carries; the secrets issue adds its own rules here.
Keys stay visible: knowing *which* variables a service gets is useful and harmless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

REDACTED = "<redacted>"
_PAIRS = frozenset({"environment"})  # keys whose value is a list of (name, value) pairs


_PLAIN = (str, int, float, bool, type(None))


def redact(data: Any) -> Any:
    kind = type(data)
    if kind in _PLAIN:  # the common leaves first: ABC checks cost more than the copy (logs pass here a line at a time)
        return data
    if kind is dict or isinstance(data, Mapping):
        return {k: _pairs(v) if k in _PAIRS else redact(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
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
