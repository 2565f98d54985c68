"""Compose's value spellings that differ from the manifest's: durations (``1m30s``), ports
(``127.0.0.1:8000-8001:80-81/udp``, the long form) and health check tests (``CMD-SHELL``).

Pure functions raising ``ValueError`` with a message fit for the user, so the field mapping can
report a bad value at its line and column."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: Any) -> float:
    """Seconds for a compose duration: Go's spelling (``1m30s``, ``500ms``, ``2h``), or a bare
    number, which compose reads as seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as 30s or 1m30s, got {type(value).__name__}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d*)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"invalid duration {value!r}; expected e.g. 30s, 1m30s, 500ms or 2h")
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}")
    return seconds


def seconds_text(seconds: float) -> int | float:
    """A number of seconds as the manifest writes it: an integer when it is one."""
    return int(seconds) if float(seconds).is_integer() else round(seconds, 3)


# ---- ports -----------------------------------------------------------------------------------

_PORT_RE = re.compile(
    r"(?:(?P<ip>\[[^\]]*\]|\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*::[0-9a-fA-F:]*):)?"
    r"(?:(?P<host>\d*(?:-\d+)?):)?"
    r"(?P<container>\d+(?:-\d+)?)"
    r"(?:/(?P<protocol>[A-Za-z]+))?"
)
ANY_ADDRESS = ("", "0.0.0.0", "[::]", "::")


class Port:
    """One compose port entry, in parts: host address, host port(s), container port(s), protocol."""

    def __init__(self, ip: str, host: str, container: str, protocol: str):
        self.ip, self.host, self.container, self.protocol = ip, host, container, protocol.lower()

    @classmethod
    def parse(cls, value: Any) -> Port:
        if isinstance(value, bool):
            raise ValueError("expected a port, got a boolean")
        if isinstance(value, int):
            return cls("", "", str(value), "tcp")
        if isinstance(value, Mapping):
            return cls.long(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a port such as 80 or \"8080:80\", got {type(value).__name__}")
        match = _PORT_RE.fullmatch(value.strip())
        if not match:
            raise ValueError(f"invalid port {value!r}; expected [IP:][HOST:]CONTAINER[/PROTOCOL]")
        return cls(match["ip"] or "", match["host"] or "", match["container"], match["protocol"] or "tcp")

    @classmethod
    def long(cls, value: Mapping) -> Port:
        if "target" not in value:
            raise ValueError("a port mapping needs a 'target' (the container port)")
        published = value.get("published")
        return cls(str(value.get("host_ip") or ""), "" if published is None else str(published),
                   str(value["target"]), str(value.get("protocol") or "tcp"))

    def pairs(self) -> list[tuple[int | None, int]]:
        """(host port or None, container port) for each port of the entry, ranges expanded.
        A host range for one container port publishes it on an ephemeral port (None)."""
        containers = _port_range(self.container)
        if not self.host:
            return [(None, c) for c in containers]
        hosts = _port_range(self.host)
        if len(hosts) == len(containers):
            return list(zip(hosts, containers, strict=True))
        if len(containers) == 1:
            return [(None, containers[0])]
        raise ValueError(f"host ports {self.host} and container ports {self.container} differ in number")


def _port_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    lo, hi = int(first), int(last or first)
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"port range {text} is not within 1-65535, low to high")
    if hi - lo >= 1024:
        raise ValueError(f"port range {text} is over 1,024 ports")
    return list(range(lo, hi + 1))


def port_text(host: int | None, container: int, protocol: str) -> int | str:
    """The manifest's spelling: 80, "8080:80", "53/udp", "5353:53/udp"."""
    suffix = "" if protocol == "tcp" else f"/{protocol}"
    if host is None:
        return container if not suffix else f"{container}{suffix}"
    return f"{host}:{container}{suffix}"


# ---- health check tests ----------------------------------------------------------------------


def health_test(value: Any) -> tuple[list[str] | None, str]:
    """(argv of a command check, or None when the test disables checks; what was done to it)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the test must not be empty")
        return ["/bin/sh", "-c", value], "a string test runs in a shell, as CMD-SHELL: /bin/sh -c"
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise ValueError("expected a string, or a list starting with CMD, CMD-SHELL or NONE")
    kind, *rest = value
    if kind == "NONE":
        return None, "NONE: no health check, as without one"
    if kind == "CMD" and rest:
        return list(rest), "CMD: the command check runs these words"
    if kind == "CMD-SHELL" and len(rest) == 1:
        return ["/bin/sh", "-c", rest[0]], "CMD-SHELL -> a command check running /bin/sh -c"
    raise ValueError(f"a test list starts with CMD (then the words), CMD-SHELL (then one command line) or NONE; "
                     f"got {kind!r} with {len(rest)} more")
