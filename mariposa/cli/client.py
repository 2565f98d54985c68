"""The CLI's side of the control socket: a synchronous httpx client over the unix socket."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from mariposa.errors import ERROR_KINDS, DaemonUnreachable, MariposaError
from mariposa.errors import TaskFailed as TaskDidNotComplete

TERMINAL_STATES = ("completed", "failed", "terminated")


def socket_path(explicit: str | None) -> str:
    if explicit or os.environ.get("MARIPOSA_SOCKET"):
        return explicit or os.environ["MARIPOSA_SOCKET"]
    from mariposa.config import DEFAULT_SOCKET  # the configuration (and the manifest package) only when needed

    return DEFAULT_SOCKET


class Client:
    def __init__(self, socket: str, timeout: float = 60.0):
        self.socket = socket
        # verify=False: a unix socket has no TLS, and loading the system CA bundle for nothing
        # cost every CLI call 0.05 s on a quiet machine and 0.6-1.5 s on a loaded one
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket, verify=False), base_url="http://mariposa", timeout=timeout
        )

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        try:
            resp = self.http.request(method, path, json=json,
                                     params={k: v for k, v in (params or {}).items() if v is not None})
        except (httpx.ConnectError, httpx.TransportError, FileNotFoundError, ConnectionRefusedError) as exc:
            if "Permission denied" in str(exc) or isinstance(exc, httpx.RemoteProtocolError):
                raise DaemonUnreachable(
                    f"permission denied on the control socket {self.socket}: run as root or as a member of "
                    f"the socket's group (socket_group in /etc/mariposa/mariposa.toml)"
                ) from None
            raise DaemonUnreachable(
                f"cannot reach the mariposa daemon at {self.socket} ({exc.__class__.__name__}); "
                f"is 'mariposa daemon' running? (set --socket or MARIPOSA_SOCKET)"
            ) from None
        body: Any = resp.json() if resp.content else None
        if resp.status_code >= 400:
            body = body or {}
            cls = ERROR_KINDS.get(body.get("error"), MariposaError)
            raise cls(body.get("message") or f"HTTP {resp.status_code}", details=body.get("details"))
        return body

    def follow(self, path: str, params: dict):
        """Newline-delimited JSON, as the daemon streams it, until it ends or is interrupted. An
        error after the stream began comes as its last line and is raised here."""
        import json as _json

        try:
            with self.http.stream("GET", path, params={k: v for k, v in params.items() if v is not None},
                                  timeout=None) as resp:
                if resp.status_code >= 400:
                    body = _json.loads(resp.read() or b"{}")
                    cls = ERROR_KINDS.get(body.get("error"), MariposaError)
                    raise cls(body.get("message") or f"HTTP {resp.status_code}")
                for line in resp.iter_lines():
                    if line.strip():
                        item = _json.loads(line)
                        if isinstance(item, dict) and "error" in item and "message" in item:
                            cls = ERROR_KINDS.get(item["error"], MariposaError)
                            raise cls(item["message"], details=item.get("details"))
                        yield item
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"cannot reach the mariposa daemon at {self.socket} ({exc.__class__.__name__})"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise DaemonUnreachable(f"the mariposa daemon at {self.socket} went away ({exc})") from None

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body or {})

    def wait_for(self, task_ids: list[str], on_progress=None, timeout: float | None = None) -> list[dict]:
        """Follow tasks until each ends; the caller decides what a failure means."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(task_ids)
        finished: dict[str, dict] = {}
        while pending:
            for task_id in list(pending):
                task = self.get(f"/v1/queue/{task_id}")
                if on_progress:
                    on_progress(task)
                if task["state"] in TERMINAL_STATES:
                    finished[task_id] = task
                    pending.remove(task_id)
            if pending:
                if deadline is not None and time.monotonic() > deadline:
                    raise TaskDidNotComplete(f"timed out waiting for task(s) {', '.join(t[:12] for t in pending)}")
                time.sleep(0.05)  # a local socket: following closely costs little
        return [finished[t] for t in task_ids]
