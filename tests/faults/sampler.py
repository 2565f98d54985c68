"""Samples the daemon from outside while the abuse runs: how long ``GET /v1/projects`` takes, on a
fresh connection each time (so a clogged accept queue shows too), and the daemon's resident memory.

It is a process of its own, not a thread of the abusive client: a thread would share the client's
interpreter lock and event loop, and would measure the client's own load as the daemon's latency.

    python -m tests.faults.sampler SOCKET PID

samples every 50 ms until its stdin closes, then prints one JSON object:
``{"t": [...], "latency_ms": [...], "rss_mb": [...], "errors": [...]}``, ``t`` being when each
sample began (``time.monotonic()``, one clock for every process on the host).
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

from tests.bench.procstat import rss_mib

REQUEST = b"GET /v1/projects HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"


def list_once(path: str, timeout: float = 30.0) -> tuple[float, str | None]:
    """Seconds for one whole `project list` (connect to last byte), and what went wrong, if anything."""
    t0 = time.monotonic()
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(REQUEST)
            while chunk := s.recv(65536):
                data += chunk
    except OSError as exc:
        return time.monotonic() - t0, f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - t0
    if not data.startswith(b"HTTP/1.1 200"):
        return elapsed, f"answered {data[:80]!r}"
    return elapsed, None


def main(path: str, pid: int, interval: float = 0.05) -> None:
    began, latency, rss, errors = [], [], [], []
    while not select.select([sys.stdin], [], [], 0)[0]:  # stdin closed: the abuse is over
        began.append(time.monotonic())
        elapsed, error = list_once(path)
        latency.append(round(elapsed * 1000, 2))
        if error:
            errors.append(error)
        try:
            rss.append(round(rss_mib(pid), 1))
        except OSError as exc:  # the daemon is gone
            errors.append(f"no /proc/{pid}: {exc}")
            break
        time.sleep(interval)
    print(json.dumps({"t": began, "latency_ms": latency, "rss_mb": rss, "errors": errors}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
