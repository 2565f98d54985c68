"""Registries: which one an image reference names, and the credentials Mariposa keeps for them.

Why Mariposa keeps credentials itself instead of the Docker CLI's ``~/.docker/config.json``: the
daemon pulls for every user of the control socket, so the credentials are the daemon's: secrets
in its store, encrypted at rest with the secret key (``mariposa.vault``). They are never
printed: ``listing`` gives hosts and usernames, and ``RegistryAuth`` keeps the password out of
its ``repr``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mariposa.drivers.base import RegistryAuth
from mariposa.errors import MariposaError
from mariposa.store.secrets import REGISTRY

if TYPE_CHECKING:
    from mariposa.vault import Vault

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
    """The registry logins, kept as secrets of kind ``registry`` (one per host, the value a JSON
    of username and password), encrypted with the secret key like every other secret. One daemon
    owns the store, so reads come from memory (pulls ask per image) and each change is written
    through. ``vault`` None keeps them in memory only (tests of the control layer).

    ``legacy`` is the plain ``registries.json`` of earlier versions: ``load`` moves what it holds
    into the store and then removes the file, so no password stays on disk in the clear."""

    def __init__(self, vault: Vault | None = None, legacy: Path | None = None) -> None:
        self.vault = vault
        self.legacy = legacy
        self._entries: dict[str, dict[str, str]] = {}

    async def load(self) -> int:
        """Read the logins from the store, migrating a legacy file; how many were migrated."""
        if self.vault is None:
            return 0
        for host, value in (await self.vault.get_all(REGISTRY)).items():
            entry = json.loads(value)
            self._entries[host] = {"username": entry["username"], "password": entry["password"]}
        if self.legacy is None or not self.legacy.exists():
            return 0
        import trio

        found = await trio.to_thread.run_sync(read_legacy, self.legacy)
        for host, entry in found.items():
            if host not in self._entries:
                await self.put(RegistryAuth(host, entry["username"], entry["password"]), "migration")
        await trio.to_thread.run_sync(self.legacy.unlink)
        return len(found)

    def auth_for(self, image: str) -> RegistryAuth | None:
        host = registry_of(image)
        entry = self._entries.get(host)
        return None if entry is None else RegistryAuth(host, entry["username"], entry["password"])

    def listing(self) -> list[dict[str, str]]:
        """Hosts and usernames; never a password."""
        return [{"host": h, "username": e["username"]} for h, e in sorted(self._entries.items())]

    async def put(self, auth: RegistryAuth, author: str) -> None:
        if self.vault is not None:
            value = json.dumps({"username": auth.username, "password": auth.password}).encode()
            await self.vault.put(REGISTRY, "", auth.server, value, author)
        self._entries[auth.server] = {"username": auth.username, "password": auth.password}

    async def remove(self, host: str) -> bool:
        found = self._entries.pop(host, None) is not None
        if self.vault is not None:
            found = await self.vault.remove(REGISTRY, "", host) or found
        return found


def read_legacy(path: Path) -> dict[str, dict[str, str]]:
    """What a ``registries.json`` of earlier versions holds: {host: {username, password}}."""
    try:
        data = json.loads(path.read_text() or "{}")
    except (ValueError, UnicodeDecodeError) as exc:  # the message names a position, not the content
        raise MariposaError(f"{path} is not a registry credentials file ({exc}): "
                            "fix it or remove it (then log in again)") from None
    if not isinstance(data, dict):
        return {}
    return {str(h): {"username": str(v.get("username", "")), "password": str(v.get("password", ""))}
            for h, v in data.items() if isinstance(v, dict)}
