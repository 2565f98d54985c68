"""Where the CLI sends its requests: the local control socket, or a remote daemon's API.

Remote when a host is given, by (first found) ``--host``/``--token``, ``MARIPOSA_HOST`` and
``MARIPOSA_TOKEN``, or a named profile (whose token goes to its own host only, never to a host
named otherwise) of ``~/.config/mariposa/profiles.toml`` chosen with
``-p/--profile NAME`` (or ``MARIPOSA_PROFILE``), as ``triton -p`` does::

    [ci]
    host = "https://build.example.com:8443"
    token = "mrp_..."
    org = "default"        # optional: the organisation of every command (as -o)
    project = "web"        # optional: the project of every command (as -j)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mariposa.cli.pinning import config_dir
from mariposa.errors import BadRequest

DEFAULT_PORT = 8443
PROFILE_KEYS = {"host", "token", "org", "project"}


class Remote:
    """A remote daemon and the token to show it (never in a repr or a message)."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.host, self.port, self.token = host, port, token

    def __repr__(self) -> str:
        return f"Remote({self.url})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.where}"


def profiles_file() -> Path:
    return config_dir() / "profiles.toml"


def profile(name: str) -> dict[str, Any]:
    import tomllib

    path = profiles_file()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadRequest(f"no profile '{name}': {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadRequest(f"{path}: {exc}") from None
    found = data.get(name)
    if not isinstance(found, dict):
        names = ", ".join(k for k, v in data.items() if isinstance(v, dict)) or "none"
        raise BadRequest(f"no profile '{name}' in {path} (profiles: {names})")
    unknown = set(found) - PROFILE_KEYS
    if unknown:
        raise BadRequest(f"{path}: profile '{name}': unknown key {sorted(unknown)[0]!r} "
                         f"(keys: {', '.join(sorted(PROFILE_KEYS))})")
    for key, value in found.items():
        if not isinstance(value, str):
            raise BadRequest(f"{path}: profile '{name}': '{key}' must be a string")
    return found


def parse_host(text: str) -> tuple[str, int]:
    """``https://HOST[:PORT]`` (or ``HOST[:PORT]``) as (host, port); the remote API is HTTPS only."""
    rest = text.strip()
    if rest.startswith("http://"):
        raise BadRequest(f"MARIPOSA_HOST {text!r}: the remote API is HTTPS only (https://HOST:PORT)")
    rest = rest.removeprefix("https://").rstrip("/")
    if "/" in rest or not rest:
        raise BadRequest(f"MARIPOSA_HOST {text!r}: expected https://HOST:PORT")
    if rest.startswith("["):  # [::1]:8443
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host or (port and (not port.isdigit() or not 0 < int(port) < 65536)):
        raise BadRequest(f"MARIPOSA_HOST {text!r}: expected https://HOST:PORT")
    return host, int(port) if port else DEFAULT_PORT


def resolve(host: str | None, token: str | None, profile_name: str | None) -> tuple[Remote | None, dict[str, str]]:
    """The remote daemon (None: the local socket) and the profile's defaults (org, project)."""
    chosen = profile(profile_name) if profile_name else {}
    if not host:  # a host and its token go together: a profile's token only ever goes to its own host
        host, token = chosen.get("host"), chosen.get("token")
    if not host:
        if profile_name:  # a token alone (MARIPOSA_TOKEN left set) does not make the local socket remote
            raise BadRequest("a token needs a host: set MARIPOSA_HOST (or --host, or host in the profile)")
        return None, {}
    name, port = parse_host(host)
    return Remote(name, port, token), {k: v for k, v in chosen.items() if k in ("org", "project")}
