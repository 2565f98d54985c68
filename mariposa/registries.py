"""Registries: which one an image reference names, and the credentials Mariposa keeps for them.

Why Mariposa keeps credentials itself instead of the Docker CLI's ``~/.docker/config.json``: the
daemon pulls for every user of the control socket, so the credentials are the daemon's, under
its state directory, readable by it alone (mode 0600, written whole and renamed into place, so a
crash never leaves half a file). They are never printed: ``listing`` gives hosts and usernames,
and ``RegistryAuth`` keeps the password out of its ``repr``. (Encryption at rest comes with the
secrets work; until then the file mode is the protection.)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mariposa.drivers.base import RegistryAuth
from mariposa.errors import MariposaError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?")
FILE_NAME = "registries.json"


def normalize_host(host: str) -> str:
    """A registry host as keys are stored: lower case, no scheme or trailing slash, Docker Hub's
    many names as ``docker.io``. Raises ValueError for something that is not a host[:port]."""
    text = host.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    if text.endswith("/v1") or text.endswith("/v2"):
        text = text[:-3]
    if not HOST.fullmatch(text):
        raise ValueError(f"'{host}' is not a registry host (HOST or HOST:PORT)")
    text = text.lower()
    return DOCKER_HUB if text in _HUB_ALIASES else text


def registry_of(image: str) -> str:
    """The registry an image reference names, by Docker's rule: the first part of the path is a
    host when it has a '.' or a ':' or is 'localhost'; otherwise the image is on Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        try:
            return normalize_host(first)
        except ValueError:
            return first.lower()
    return DOCKER_HUB


def split_reference(image: str) -> tuple[str, str]:
    """(repository, tag or digest) of a reference; no tag means ``latest``, as `docker pull`
    does (the Engine's API would otherwise pull every tag of the repository)."""
    name, at, digest = image.partition("@")
    if at:
        return name, digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


class Credentials:
    """The credentials file under the state directory: {host: {username, password}}. One daemon
    owns the state directory (its lock), so reads come from memory and each change rewrites the
    file. ``path`` None keeps them in memory only (tests of the control layer)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._entries: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text() or "{}")
            except (ValueError, UnicodeDecodeError) as exc:  # the message names a position, not the content
                raise MariposaError(f"{path} is not a registry credentials file ({exc}): "
                                 "fix it or remove it (then log in again)") from None
            if isinstance(data, dict):
                self._entries = {
                    str(h): {"username": str(v.get("username", "")), "password": str(v.get("password", ""))}
                    for h, v in data.items() if isinstance(v, dict)}
            os.chmod(path, 0o600)  # whatever made it looser, it is the daemon's alone

    def auth_for(self, image: str) -> RegistryAuth | None:
        host = registry_of(image)
        entry = self._entries.get(host)
        return None if entry is None else RegistryAuth(host, entry["username"], entry["password"])

    def listing(self) -> list[dict[str, str]]:
        """Hosts and usernames; never a password."""
        return [{"host": h, "username": e["username"]} for h, e in sorted(self._entries.items())]

    def put(self, auth: RegistryAuth) -> None:
        self._entries[auth.server] = {"username": auth.username, "password": auth.password}
        self._save()

    def remove(self, host: str) -> bool:
        found = self._entries.pop(host, None) is not None
        if found:
            self._save()
        return found

    def _save(self) -> None:
        """Written whole to a new file that is 0600 from its first byte, then renamed over the
        old one: never readable by others, never half written."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask, and the file may have existed
            with os.fdopen(fd, "w") as f:
                json.dump(self._entries, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)
