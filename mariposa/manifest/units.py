"""Memory sizes and command lines as people write them in manifests.

Sizes follow Docker's ``--memory`` rules (every suffix is binary, so ``512m`` and ``512MB`` both
mean 512 MiB) because the images and packages users copy from are sized that way. Arithmetic goes
through ``Decimal`` so ``1.5GiB`` is exact rather than a float approximation.
"""

from __future__ import annotations

import re
import shlex
from decimal import Decimal, InvalidOperation

KIB = 1024
MIB = 1024**2
GIB = 1024**3

_SIZE_RE = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE)

_UNITS = {
    "": 1,
    "b": 1,
    "k": KIB,
    "kb": KIB,
    "kib": KIB,
    "m": MIB,
    "mb": MIB,
    "mib": MIB,
    "g": GIB,
    "gb": GIB,
    "gib": GIB,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}


def parse_size(value: int | str) -> int:
    """Bytes for ``512m``, ``1g``, ``256M``, ``1.5GiB`` or a plain integer of bytes.

    Fractions of a byte are dropped. Raises ``ValueError`` with a message fit for the user.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size like 512m or 1g, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} must not be negative")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 512m or 1g, got {type(value).__name__}")
    match = _SIZE_RE.match(value)
    unit = match and _UNITS.get(match["unit"].lower())
    if not match or unit is None:
        raise ValueError(
            f"invalid size {value!r}; expected a number with an optional unit k, m, g or t"
            " (e.g. 512m, 1.5g)"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the regex only lets decimals through
        raise ValueError(f"invalid size {value!r}") from None
    return int(number * unit)


def format_size(size: int) -> str:
    """The shortest exact way to write ``size``, for messages (``4194304`` -> ``4m``)."""
    for suffix, unit in (("t", 1024**4), ("g", GIB), ("m", MIB), ("k", KIB)):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}b"


# A backslash that ends a line (or, once YAML has folded the lines of a plain scalar, a lone
# backslash between spaces) is a shell line continuation, not an escaped space. A backslash glued
# to a word (``my\ file``) is left alone so shlex still treats it as an escape.
_CONTINUATION_RE = re.compile(r"\\[ \t]*\r?\n\s*|(?:(?<=\s)|^)\\[ \t]+")


def split_command(text: str) -> list[str]:
    """Argv for a command written as one string, the way a shell would split it.

    Needed because the spec's multi-line example folds into ``/bin/containerpilot \\ /usr/...``;
    plain ``shlex.split`` would read ``\\ `` as an escaped space and glue the two words together.
    Raises ``ValueError`` (unbalanced quotes).
    """
    return shlex.split(_CONTINUATION_RE.sub(" ", text))
