"""A small async client of the Engine API's Swarm endpoints: nodes, services, tasks, overlay
networks, secrets and configs.

It speaks through the Docker driver's client (``drivers.docker.engine_client``): the same unix
socket or tcp:// host, the same pinned API version (1.41, Debian's 20.10 Engine), the same error
messages. Errors leave as the drivers' ``DriverError`` (``RuntimeUnavailable`` when the Engine
does not answer), so the layers above translate one family of errors.

A secret's value goes to the Engine in the request body only: no error or log line built here
ever carries a request body.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from mariposa.drivers.base import DriverError, RuntimeUnavailable
from mariposa.drivers.docker import _message, engine_client, engine_where

log = structlog.get_logger()


class SwarmError(DriverError):
    """The Engine refused a Swarm call (not a manager, a name taken, an out-of-date version)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _filters(**filters: Iterable[str] | None) -> dict[str, str]:
    return {"filters": json.dumps({k: list(v) for k, v in filters.items() if v})}


def _labels(labels: Mapping[str, str] | None) -> list[str] | None:
    return [f"{k}={v}" for k, v in labels.items()] if labels else None


def judge(info: Mapping[str, Any], where: str) -> tuple[bool, str]:
    """From ``GET /info``: (is a manager of an active swarm, a sentence saying what the engine is)."""
    swarm = info.get("Swarm") or {}
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active":
        return False, f"the engine at {where} is not in a swarm (LocalNodeState {state!r})"
    if not swarm.get("ControlAvailable"):
        return False, f"the engine at {where} is a swarm worker, not a manager"
    return True, (f"the engine at {where} manages swarm {str((swarm.get('Cluster') or {}).get('ID'))[:12]} "
                  f"({swarm.get('Nodes')} nodes, {swarm.get('Managers')} managers)")


class SwarmClient:
    """One connection pool to a Swarm manager's Engine API; ``aclose`` when done."""

    def __init__(self, docker_host: str | None = None) -> None:
        self.where = engine_where(docker_host)
        self._client = engine_client(docker_host)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> SwarmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, what: str, *, allow: tuple[int, ...] = (),
                    **kwargs: Any) -> httpx.Response:
        t0 = time.perf_counter()
        try:
            resp = await self._client.request(method, path, **kwargs)
        except (httpx.TransportError, OSError) as exc:
            raise RuntimeUnavailable(f"Docker Engine not reachable at {self.where}: {exc or type(exc).__name__}") \
                from None
        finally:
            log.debug("swarm call", call=f"{method} {path}", seconds=round(time.perf_counter() - t0, 4))
        if resp.status_code < 400 or resp.status_code in allow:
            return resp
        raise SwarmError(f"swarm: {what}: {_message(resp)}", resp.status_code)

    # ---- the engine and its nodes --------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        return (await self._call("GET", "/info", "engine info")).json()

    async def swarm_state(self) -> tuple[bool, str]:
        """(is a manager of an active swarm, a sentence saying what the engine is)."""
        return judge(await self.info(), self.where)

    async def nodes(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/nodes", "list nodes")).json()

    # ---- services ------------------------------------------------------------------------------

    async def create_service(self, spec: Mapping[str, Any]) -> str:
        """The new service's id. Images are not resolved against a registry (the version pinned
        its image already, and the registry may not be reachable): ``X-Registry-Auth`` absent and
        the image given by content id or local reference."""
        resp = await self._call("POST", "/services/create", f"create service {spec.get('Name')}", json=dict(spec))
        data = resp.json()
        for warning in data.get("Warnings") or ():
            log.info("swarm warning", service=spec.get("Name"), warning=warning)
        return data["ID"]

    async def inspect_service(self, service: str) -> dict[str, Any] | None:
        resp = await self._call("GET", f"/services/{quote(service, safe='')}", f"inspect service {service}",
                                allow=(404,))
        return None if resp.status_code == 404 else resp.json()

    async def update_service(self, service: str, version: int, spec: Mapping[str, Any],
                             rollback: bool = False) -> list[str]:
        """Replace the service's spec; ``version`` is the ``Version.Index`` it was read at, so a
        change made meanwhile by someone else is refused (409/500 "update out of sequence")
        rather than overwritten. The Engine's warnings come back."""
        params: dict[str, Any] = {"version": version}
        if rollback:
            params["rollback"] = "previous"
        resp = await self._call("POST", f"/services/{quote(service, safe='')}/update", f"update service {service}",
                                params=params, json=dict(spec))
        return list((resp.json() or {}).get("Warnings") or ())

    async def scale_service(self, service: str, replicas: int) -> None:
        """Read, set ``Replicas``, write back at the version read."""
        current = await self.inspect_service(service)
        if current is None:
            raise SwarmError(f"swarm: scale service {service}: no such service", 404)
        spec = current["Spec"]
        spec.setdefault("Mode", {}).setdefault("Replicated", {})["Replicas"] = replicas
        await self.update_service(current["ID"], current["Version"]["Index"], spec)

    async def remove_service(self, service: str) -> bool:
        """False when there was no such service (a replay of a removal)."""
        resp = await self._call("DELETE", f"/services/{quote(service, safe='')}", f"remove service {service}",
                                allow=(404,))
        return resp.status_code != 404

    async def services(self, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        resp = await self._call("GET", "/services", "list services", params=_filters(label=_labels(labels)))
        return resp.json()

    async def tasks(self, service: str | None = None, labels: Mapping[str, str] | None = None,
                    desired_state: str | None = None) -> list[dict[str, Any]]:
        """Tasks of a service (by name or id; none when there is no such service) and/or with the
        service's labels: the Engine matches a task's ``label`` filter on its service's labels."""
        resp = await self._call("GET", "/tasks", "list tasks", allow=(404,), params=_filters(
            service=[service] if service else None, label=_labels(labels),
            **{"desired-state": [desired_state] if desired_state else None}))
        return [] if resp.status_code == 404 else resp.json()

    # ---- networks, secrets, configs ------------------------------------------------------------

    async def ensure_overlay(self, name: str, labels: Mapping[str, str]) -> str:
        """An attachable overlay network ``name`` (made, or found when it exists): attachable, so
        the daemon (or a helper container) can join it and reach the tasks' addresses."""
        resp = await self._call("GET", f"/networks/{quote(name, safe='')}", f"inspect network {name}", allow=(404,))
        if resp.status_code == 200 and resp.json().get("Name") == name:
            found = resp.json()
            if found.get("Driver") != "overlay" or found.get("Scope") != "swarm":
                raise SwarmError(f"swarm: network {name} exists and is a {found.get('Scope')} "
                                 f"{found.get('Driver')} network, not a swarm overlay")
            return found["Id"]
        body = {"Name": name, "Driver": "overlay", "Attachable": True, "CheckDuplicate": True,
                "Labels": dict(labels)}
        resp = await self._call("POST", "/networks/create", f"create network {name}", json=body)
        return resp.json()["Id"]

    async def networks(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        resp = await self._call("GET", "/networks", "list networks", params=_filters(label=_labels(labels)))
        return resp.json()

    async def remove_network(self, network: str) -> bool:
        resp = await self._call("DELETE", f"/networks/{quote(network, safe='')}", f"remove network {network}",
                                allow=(404,))
        return resp.status_code != 404

    async def create_secret(self, name: str, value: bytes, labels: Mapping[str, str]) -> str:
        return await self._create_object("secrets", name, value, labels)

    async def secrets(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return (await self._call("GET", "/secrets", "list secrets", params=_filters(label=_labels(labels)))).json()

    async def remove_secret(self, secret: str) -> bool:
        resp = await self._call("DELETE", f"/secrets/{quote(secret, safe='')}", f"remove secret {secret}",
                                allow=(404,))
        return resp.status_code != 404

    async def create_config(self, name: str, value: bytes, labels: Mapping[str, str]) -> str:
        return await self._create_object("configs", name, value, labels)

    async def configs(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return (await self._call("GET", "/configs", "list configs", params=_filters(label=_labels(labels)))).json()

    async def remove_config(self, config: str) -> bool:
        resp = await self._call("DELETE", f"/configs/{quote(config, safe='')}", f"remove config {config}",
                                allow=(404,))
        return resp.status_code != 404

    async def _create_object(self, kind: str, name: str, value: bytes, labels: Mapping[str, str]) -> str:
        """A secret or config: immutable on the Swarm, so a new value is a new object (and a
        service update to point at it). The value travels base64 in the body, never in a message."""
        body = {"Name": name, "Labels": dict(labels), "Data": base64.b64encode(value).decode("ascii")}
        resp = await self._call("POST", f"/{kind}/create", f"create {kind[:-1]} {name}", json=body)
        return resp.json()["ID"]


SWARM_INIT_FIX = "docker swarm init --advertise-addr ADDRESS (or join this engine to a swarm as a manager)"


async def require_manager(docker_host: str | None) -> str:
    """For ``cluster = "swarm"``: the sentence saying which swarm the engine manages, or
    ``SwarmError`` saying why it cannot be used (not in a swarm, a worker, not answering)."""
    async with SwarmClient(docker_host) as client:
        try:
            ok, why = await client.swarm_state()
        except DriverError as exc:
            raise SwarmError(f"cluster = \"swarm\": cannot ask the engine whether it is a swarm manager: {exc}") \
                from None
    if not ok:
        raise SwarmError(f"cluster = \"swarm\": {why}; fix: {SWARM_INIT_FIX}")
    return why
