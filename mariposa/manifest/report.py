"""The bookkeeping every manifest check shares: nodes with their positions, the report that
collects problems, and the constants of the manifest's vocabulary."""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import attrs

from mariposa.manifest.errors import ManifestProblem
from mariposa.manifest.parse import Pos, item_pos, key_pos, value_pos
from mariposa.manifest.units import MIB

TOP_LEVEL_KEYS = ("services", "volumes", "networks", "webhooks")
SERVICE_TYPES = ("continuous", "scheduled", "event")
COMPUTE_TYPES = {
    "docker": "docker",
    "infrastructure": "infrastructure",
    "lx": "infrastructure",
    "smartmachine": "infrastructure",
    "kvm": "kvm",
    "vm": "kvm",
    "hvm": "kvm",
    "manta": "manta",
}
# Options only the Docker driver carries out; an LXC service (drivers/lxc.py) is refused them.
DOCKER_ONLY = ("entrypoint", "ports", "cap_add", "cap_drop", "devices", "extra_hosts", "read_only", "shm_size",
               "sysctls", "ulimits", "privileged", "network_mode")
RESTART_POLICIES = ("always", "unless-stopped", "no", "on-failure")
PRESERVE_STOPPED = ("on-failure", "no", "always")
HEALTHCHECK_TYPES = ("http", "https", "tcp", "command")
AFFINITY_OPS = ("==~", "!=~", "==", "!=")  # longest first, so "==~" is not read as "==" + "~..."
MIN_MEMORY = 4 * MIB
MAX_MEMORY = 1024**5  # no host has a PiB; past it a size is a typo, and past 4,300 digits unprintable
# More instances of one service than one host can hold is a typo (or an attack on the daemon's
# memory), never a plan: 1,000,000 took the daemon from 48 MB to 3.7 GB in 25 s.
MAX_SCALE = 10_000
RESERVED_TAG_PREFIX = "io.mariposa."

# The name becomes a DNS alias on the project network, hence a lowercase DNS label.
# Names are checked with fullmatch: a "$" anchor matches before a final newline, and "web\n" passed.
SERVICE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
DOMAIN_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
PORT_RE = re.compile(r"(?:(?P<host>[0-9]{1,9}):)?(?P<container>[0-9]{1,9})(?:/(?P<protocol>[A-Za-z]+))?")
AFFINITY_RE = re.compile(r"^(?P<key>.+?)(?P<op>==~|!=~|==|!=)(?P<value>.*)$")


# ---- the bookkeeping every check shares ---------------------------------------------------------


@attrs.frozen
class _At:
    """A value with where it was written: its own position, its key's, and its dotted path."""

    value: Any
    pos: Pos
    field: str
    key_pos: Pos

    def entries(self) -> Iterable[tuple[Any, _At]]:
        for key in self.value:
            name = _key_name(key)
            yield key, _At(
                self.value[key],
                value_pos(self.value, key, self.pos),
                f"{self.field}.{name}" if self.field else name,
                key_pos(self.value, key, self.pos),
            )

    def items(self) -> Iterable[_At]:
        for index, item in enumerate(self.value):
            pos = item_pos(self.value, index, self.pos)
            yield _At(item, pos, f"{self.field}[{index}]", pos)


def _key_name(key: Any) -> str:
    """A key as a field's name; a complex key holding an int of more than 4,300 digits has no
    str() (Python refuses to print it), and crashed the parser (found by tests/faults/fuzz.py)."""
    try:
        return str(key)
    except ValueError:
        return "<a key too large to show>"


class _Report:
    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[ManifestProblem] = []

    def add(
        self, at: _At | Pos, message: str, field: str | None = None, on_key: bool = False
    ) -> None:
        if isinstance(at, _At):
            pos = at.key_pos if on_key else at.pos
            field = at.field if field is None else field
        else:
            pos = at
        line, col = pos
        problem = ManifestProblem(self.filename, line + 1, col + 1, field or "", message)
        self.problems.append(problem)

    def wrong_type(self, at: _At, expected: str) -> None:
        if _is_unquoted_template(at.value):
            self.add(at, _INTERPOLATION)
        else:
            self.add(at, f"expected {expected}, got {_kind(at.value)}")


_INTERPOLATION = ("a value starting with '{{' must be quoted (\"{{ .meta.x }}\"): unquoted, YAML reads it "
                  "as a mapping")


def _is_unquoted_template(value: Any) -> bool:
    """``x: {{ .meta.y }}`` unquoted is a flow mapping keyed by a mapping, not a string."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(next(iter(value)), Mapping)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, AbstractSet):
        return "a set"
    tag = getattr(value, "tag", None)  # ruamel's TaggedScalar for tags it does not know
    if tag is not None:
        return f"a value tagged {tag}"
    return type(value).__name__


def _closest(word: Any, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return close[0] if close else None


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    guess = _closest(word, choices)
    return f"; did you mean {guess!r}?" if guess else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar_text(value: Any) -> str | None:
    """The string a YAML scalar stands for in an environment or tag value; ``None`` if none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None

