"""The CLI's side of the control socket: HTTP/1.1 over the unix socket, with the standard library.

Why not httpx (the daemon's client of the Engine): the CLI is a new process for every command,
and importing httpx costs it 0.2-1 s on a loaded 2-core host, four times what ``http.client``
costs; a command that waits on a scale-up of 3 s should not spend a third of it starting.
One connection per request: a unix socket connects in microseconds, and nothing stale is reused.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import socket as socketlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from mariposa import DEFAULT_SOCKET
from mariposa.errors import ERROR_KINDS, DaemonUnreachable, MariposaError
from mariposa.errors import TaskFailed as TaskDidNotComplete  # noqa: F401 - the CLI raises it by this name

TERMINAL_STATES = ("completed", "failed", "terminated")
# A followed stream that breaks (the daemon restarted) is opened again this many times in a row
# before the CLI gives up; any update in between resets the count.
FOLLOW_REOPENS = 5


def socket_path(explicit: str | None) -> str:
    return explicit or os.environ.get("MARIPOSA_SOCKET") or DEFAULT_SOCKET


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("mariposa", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error(status: int, raw: bytes) -> MariposaError:
    try:
        body = jsonlib.loads(raw or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    cls = ERROR_KINDS.get(str(body.get("error")), MariposaError)
    return cls(body.get("message") or f"HTTP {status}", details=body.get("details"))


class Client:
    def __init__(self, socket: str, timeout: float = 60.0):
        self.socket = socket
        self.timeout = timeout

    def _unreachable(self, exc: BaseException) -> DaemonUnreachable:
        if isinstance(exc, PermissionError) or isinstance(exc, http.client.RemoteDisconnected):
            return DaemonUnreachable(
                f"permission denied on the control socket {self.socket}: run as root or as a member of "
                f"the socket's group (socket_group in /etc/mariposa/mariposa.toml)"
            )
        return DaemonUnreachable(
            f"cannot reach the mariposa daemon at {self.socket} ({exc.__class__.__name__}); "
            f"is 'mariposa daemon' running? (set --socket or MARIPOSA_SOCKET)"
        )

    def _open(self, method: str, path: str, json: Any, params: dict | None,
              timeout: float | None) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        target = path + (f"?{query}" if query else "")
        headers = {"Host": "mariposa", "Accept": "application/json"}
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        conn = _UnixConnection(self.socket, timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unreachable(exc) from None

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        conn, resp = self._open(method, path, json, params, self.timeout)
        try:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise _error(resp.status, raw)
        return jsonlib.loads(raw) if raw else None

    def follow(self, path: str, params: dict, timeout: float | None = None) -> Iterator[Any]:
        """Newline-delimited JSON, as the daemon streams it, until it ends the stream (or the
        caller stops reading)."""
        conn, resp = self._open("GET", path, None, params, timeout)
        try:
            if resp.status >= 400:
                raise _error(resp.status, resp.read())
            try:
                for line in resp:
                    if line.strip():
                        yield jsonlib.loads(line)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
        finally:
            conn.close()

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body or {})

    def wait_for(self, task_ids: list[str], on_progress=None) -> list[dict]:
        """Follow tasks until each ends; the caller decides what a failure means. The daemon
        sends each task when it changes, so an end is seen as it happens."""
        finished: dict[str, dict] = {}
        reopens = 0
        while len(finished) < len(task_ids):
            pending = [t for t in task_ids if t not in finished]
            try:
                for task in self.follow("/v1/queue", {"follow": "1", "ids": ",".join(pending)}):
                    reopens = 0
                    if on_progress:
                        on_progress(task)
                    if task["state"] in TERMINAL_STATES:
                        finished[task["id"]] = task
            except DaemonUnreachable:
                if reopens >= FOLLOW_REOPENS:
                    raise
            reopens += 1
            if reopens > FOLLOW_REOPENS:
                raise DaemonUnreachable(f"the daemon at {self.socket} keeps ending the stream of tasks "
                                        f"{', '.join(t[:12] for t in pending)} before they end")
        return [finished[t] for t in task_ids]
