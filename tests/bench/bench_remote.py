#!/usr/bin/env python3
"""Benchmark: ``project list`` round trips over the remote API (TCP + TLS + a token) next to the
unix socket, each on one kept-alive connection, so what is measured is a request, not a connect
or a TLS handshake.

A real daemon (tests/integration/harness.py) with ``--listen`` on a free local port, a user with
a developer binding and a token; ``--projects`` projects in the store (added through the CLI;
their instances need not run). Each client (httpx: the socket's over ``uds``, the remote's with
``Authorization: Bearer`` and verification off, as the CLI trusts a pinned fingerprint instead)
warms up, then times ``--requests`` sequential ``GET /v1/projects``. Prints p50/p99/mean side by
side, and the TLS handshake's own cost (a new connection per request) for scale.

    .venv/bin/python tests/bench/bench_remote.py [--requests 2000] [--projects 10]
"""

from __future__ import annotations

import argparse
import signal
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.integration.harness import IMAGE, Daemon  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, url: str, n: int, headers: dict) -> list[float]:
    for _ in range(max(20, n // 20)):  # warm up (and open the one connection)
        client.get(url, headers=headers).raise_for_status()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, headers=headers)
        out.append(time.perf_counter() - t)
        r.raise_for_status()
    return out


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {"p50": q[49] * 1000, "p99": q[98] * 1000, "mean": statistics.fmean(samples) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--projects", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        port = free_port()
        d = Daemon(Path(tmp)).start()
        try:
            d.kill(signal.SIGTERM)
            db = sqlite3.connect(d.state_dir / "mariposa.db")
            with db:
                db.execute("INSERT INTO users (name, created) VALUES ('bench', 0)")
                db.execute("INSERT INTO bindings (id, user, effect, role, org, created)"
                           " VALUES ('b1', 'bench', 'grant', 'developer', 'default', 0)")
            db.close()
            d.start("--listen", f"127.0.0.1:{port}")
            manifest = Path(tmp) / "p.yaml"
            manifest.write_text(f"services:\n  web:\n    image: {IMAGE}\n    scale: 0\n")
            for i in range(args.projects):
                d.cli("project", "add", f"bench-{i}", str(manifest))
            token = d.cli("token", "create", "--user", "bench").stdout.split()[-1]
            bearer = {"Authorization": f"Bearer {token}"}

            with httpx.Client(transport=httpx.HTTPTransport(uds=d.socket, verify=False), base_url="http://m",
                              timeout=30) as unix:
                local = timed(unix, "/v1/projects", args.requests, {})
                assert len(unix.get("/v1/projects").json()) == args.projects
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=30) as tls:
                remote = timed(tls, "/v1/projects", args.requests, bearer)
                assert len(tls.get("/v1/projects", headers=bearer).json()) == args.projects
            handshakes = []
            for _ in range(max(20, args.requests // 20)):
                t = time.perf_counter()
                with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=30) as once:
                    once.get("/v1/projects", headers=bearer).raise_for_status()
                handshakes.append(time.perf_counter() - t)
        finally:
            d.kill()
        rows = [("unix socket, kept alive", summary(local)), ("TLS + token, kept alive", summary(remote)),
                ("TLS + token, new connection each", summary(handshakes))]
        print(f"project list ({args.projects} projects), {args.requests} sequential requests each, ms")
        print(f"{'':34}{'p50':>8}{'p99':>8}{'mean':>8}")
        for name, s in rows:
            print(f"{name:34}{s['p50']:8.2f}{s['p99']:8.2f}{s['mean']:8.2f}")


if __name__ == "__main__":
    main()
