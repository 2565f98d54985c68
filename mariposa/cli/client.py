"""The CLI's side of the control socket: HTTP/1.1 over the unix socket, in a few lines of its own.

Why not httpx (the daemon's client of the Engine) or even ``http.client``: the CLI is a new
process for every command, and the Docker CLI it is measured against starts in 20-70 ms. On a
loaded 2-core host importing httpx costs 0.2-1 s, and ``http.client`` 0.15-0.3 s (it brings the
``email`` package and ``ssl``). The daemon is ours and speaks plain HTTP/1.1 (h11): one request
per connection (``Connection: close``), answers with a Content-Length or chunked (streams), and
that is all this client needs to read.

Remote (``MARIPOSA_HOST``, cli/profiles.py) the same requests go over TCP + TLS with
``Authorization: Bearer``; ``ssl`` is imported then only, so a local command never pays for it.
The certificate is checked by its pinned fingerprint (cli/pinning.py), not by a CA: the
daemon's own is self-signed.
"""

from __future__ import annotations

import json as jsonlib
import os
import socket as socketlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlencode

from mariposa import DEFAULT_SOCKET
from mariposa.errors import ERROR_KINDS, DaemonUnreachable, MariposaError
from mariposa.errors import TaskFailed as TaskDidNotComplete  # noqa: F401 - the CLI raises it by this name

TERMINAL_STATES = ("completed", "failed", "terminated")
# A followed stream that breaks (the daemon restarted) is opened again this many times in a row
# before the CLI gives up; any update in between resets the count.
FOLLOW_REOPENS = 5
MAX_HEADER_LINE = 65536
CONNECT_TIMEOUT = 30.0

if TYPE_CHECKING:
    from mariposa.cli.profiles import Remote


def socket_path(explicit: str | None) -> str:
    return explicit or os.environ.get("MARIPOSA_SOCKET") or DEFAULT_SOCKET


class _Closed(Exception):
    """The daemon closed the connection before a whole answer."""


class _Response:
    """A response being read: status and headers at once, the body as it comes."""

    def __init__(self, sock: socketlib.socket) -> None:
        self.sock = sock
        self.file: IO[bytes] = sock.makefile("rb")
        status = self._line()
        if not status:
            raise _Closed("no answer")
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _Closed(f"not an HTTP answer: {status[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while line := self._line().rstrip(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _line(self) -> bytes:
        return self.file.readline(MAX_HEADER_LINE)

    def chunks(self) -> Iterator[bytes]:
        """The body, piece by piece (chunked, sized, or up to the close)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self._line()
                if not size_line:
                    raise _Closed("the chunked body was cut short")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = self.file.read(size)
                if len(data) < size:
                    raise _Closed("the chunked body was cut short")
                self.file.readline(2)  # the CRLF after each chunk
                yield data
        elif "content-length" in self.headers:
            size = int(self.headers["content-length"])
            data = self.file.read(size)
            if len(data) < size:
                raise _Closed("the body was cut short")
            yield data
        else:
            yield self.file.read()

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[bytes]:
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete
        if pending:
            yield pending

    def close(self) -> None:
        self.file.close()
        self.sock.close()


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
    def __init__(self, socket: str, timeout: float = 60.0, remote: Remote | None = None, org: str | None = None):
        self.socket = socket
        self.timeout = timeout
        self.remote = remote
        self.org = org  # a profile's organisation: sent with every request that names none

    @property
    def where(self) -> str:
        return self.remote.url if self.remote else self.socket

    def _unreachable(self, exc: BaseException) -> DaemonUnreachable:
        if self.remote is not None:
            return DaemonUnreachable(
                f"cannot reach the mariposa daemon at {self.remote.url} ({exc.__class__.__name__}: {exc}); "
                f"is its remote API on (listen in mariposa.toml)? (set --host or MARIPOSA_HOST)")
        if isinstance(exc, PermissionError) or (isinstance(exc, _Closed) and str(exc) == "no answer"):
            # the socket's mode, or the daemon's policy hanging up, refused us
            return DaemonUnreachable(
                f"permission denied on the control socket {self.socket}: run as root or as a member of "
                f"the socket's group (socket_group in /etc/mariposa/mariposa.toml)"
            )
        return DaemonUnreachable(
            f"cannot reach the mariposa daemon at {self.socket} ({exc.__class__.__name__}); "
            f"is 'mariposa daemon' running? (set --socket or MARIPOSA_SOCKET)"
        )

    def _open(self, method: str, path: str, json: Any, params: dict | None, timeout: float | None) -> _Response:
        params = dict(params or {})
        if self.org and not params.get("org"):
            params["org"] = self.org
        query = urlencode({k: v for k, v in params.items() if v is not None})
        host = f"{self.remote.host}:{self.remote.port}" if self.remote else "mariposa"
        head = [f"{method} {path}{'?' + query if query else ''} HTTP/1.1", f"Host: {host}",
                "Accept: application/json", "Connection: close"]
        if self.remote is not None and self.remote.token:
            head.append(f"Authorization: Bearer {self.remote.token}")
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        elif method in ("POST", "PUT"):
            head.append("Content-Length: 0")
        sock = self._connect_remote(self.remote, timeout) if self.remote is not None else self._connect(timeout)
        try:
            try:
                sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon answered before reading (a refused caller, "too many connections")
            return _Response(sock)
        except (OSError, ValueError, _Closed) as exc:
            sock.close()
            raise self._unreachable(exc) from None

    def _connect(self, timeout: float | None) -> socketlib.socket:
        """A connection to the local daemon's control socket."""
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.socket)
        except (OSError, ValueError) as exc:
            sock.close()
            raise self._unreachable(exc) from None
        return sock

    def _connect_remote(self, remote: Remote, timeout: float | None) -> socketlib.socket:
        """A TLS connection to the remote daemon whose certificate is the pinned one (or is
        pinned now, on first use)."""
        import ssl

        from mariposa.api.tls import fingerprint_of_der
        from mariposa.cli import pinning

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False  # trust is the pinned fingerprint (checked below), not a CA
        context.verify_mode = ssl.CERT_NONE
        raw = None
        try:
            raw = socketlib.create_connection((remote.host, remote.port), timeout=CONNECT_TIMEOUT)
            sock = context.wrap_socket(raw, server_hostname=remote.host)
        except (OSError, ValueError) as exc:
            if raw is not None:
                raw.close()
            raise self._unreachable(exc) from None
        der = sock.getpeercert(binary_form=True)
        try:
            if not der:
                raise self._unreachable(ssl.SSLError("the daemon showed no certificate"))
            pinning.check(remote.where, fingerprint_of_der(der))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(timeout)
        return sock

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        resp = self._open(method, path, json, params, self.timeout)
        try:
            raw = resp.read()
        except (OSError, ValueError, _Closed) as exc:
            raise self._unreachable(exc) from None
        finally:
            resp.close()
        if resp.status >= 400:
            raise _error(resp.status, raw)
        return jsonlib.loads(raw) if raw else None

    def follow(self, path: str, params: dict, timeout: float | None = None, *, method: str = "GET",
               json: Any = None) -> Iterator[Any]:
        """Newline-delimited JSON, as the daemon streams it, until it ends the stream (or the
        caller stops reading)."""
        resp = self._open(method, path, json, params, timeout)
        try:
            if resp.status >= 400:
                raise _error(resp.status, resp.read())
            try:
                for line in resp.lines():
                    if line.strip():
                        item = jsonlib.loads(line)
                        if isinstance(item, dict) and "error" in item and "message" in item:
                            # an error after the stream began comes as its last line
                            cls = ERROR_KINDS.get(item["error"], MariposaError)
                            raise cls(item["message"], details=item.get("details"))
                        yield item
            except (OSError, ValueError, _Closed) as exc:
                raise self._unreachable(exc) from None
        finally:
            resp.close()

    def change(self, method: str, path: str, body: dict, on_pull=None) -> Any:
        """A change that may pull images (``?progress=1``): ``on_pull`` sees each line of pull
        progress as it comes, then the answer is returned. Streamed, so a pull of any length
        never trips the read timeout while the daemon has progress to tell."""
        for item in self.follow(path, {"progress": "1"}, method=method, json=body):
            if isinstance(item, dict) and "result" in item:
                return item["result"]
            if isinstance(item, dict) and "pull" in item and on_pull is not None:
                on_pull(item["pull"])
        raise DaemonUnreachable(f"the daemon at {self.where} ended the answer to {method} {path} early")

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
                raise DaemonUnreachable(f"the daemon at {self.where} keeps ending the stream of tasks "
                                        f"{', '.join(t[:12] for t in pending)} before they end")
        return [finished[t] for t in task_ids]
