#!/usr/bin/env python3
"""Benchmark: the daemon's CPU while it health-checks N instances over HTTP every second.

The daemon runs in its own process on the fake driver (N instances cost nothing to create),
every instance's check hits a local HTTP responder running in another process, and we read the
daemon's CPU time from /proc over a window. Side by side: the same probes made with httpx (the
obvious way to write them) in a third process, to show what the raw-socket probe saves.

    .venv/bin/python tests/bench/bench_health_cpu.py [--instances 1000] [--window 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.procstat import cpu_percent, rss_mib  # noqa: E402

RESPONDER = textwrap.dedent("""
    import asyncio, sys
    RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"
    CLOSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok"
    async def handle(reader, writer):
        # HTTP/1.1 keep-alive, as nginx and most servers answer; "Connection: close" honoured
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                close = b"connection: close" in head.lower()
                writer.write(CLOSE if close else RESPONSE)
                await writer.drain()
                if close:
                    break
        except Exception:
            pass
        writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
""")

DAEMON = textwrap.dedent("""
    import sys, trio
    from mariposa.daemon import DaemonConfig, run_daemon
    from mariposa.drivers.fake import FakeDriver
    config = DaemonConfig(state_dir=sys.argv[1], socket=sys.argv[2], resync=10.0, manifest_dir=None)
    trio.run(run_daemon, config, {"docker": FakeDriver(images=("bench",))})
""")

HTTPX_PEER = textwrap.dedent("""
    import sys, time, trio, httpx
    n, port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    async def probe(client, limiter):
        while True:
            async with limiter:
                try:
                    r = await client.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    assert r.status_code == 200
                except Exception:
                    pass
            await trio.sleep(1)
    async def main():
        limiter = trio.CapacityLimiter(256)
        limits = httpx.Limits(max_keepalive_connections=1000, max_connections=1000)
        async with httpx.AsyncClient(limits=limits) as client:
            with trio.move_on_after(seconds):
                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        nursery.start_soon(probe, client, limiter)
    trio.run(main)
""")

MANIFEST = """
services:
  web:
    image: bench
    scale: {n}
    healthchecks:
      - type: http
        port: {port}
        path: /health
        poll: 1
        timeout: 1
        retries: 3
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--port", type=int, default=18777)
    args = ap.parse_args()
    n = args.instances
    py = sys.executable
    procs = []
    try:
        responder = subprocess.Popen([py, "-c", RESPONDER, str(args.port)])
        procs.append(responder)
        with tempfile.TemporaryDirectory() as tmp:
            sock = f"{tmp}/m.sock"
            daemon = subprocess.Popen([py, "-c", DAEMON, f"{tmp}/state", sock], stderr=subprocess.DEVNULL,
                                      cwd=str(ROOT))
            procs.append(daemon)
            client = httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://m", timeout=120)
            for _ in range(100):
                try:
                    client.get("/v1/ping")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            r = client.post("/v1/projects", json={"name": "bench", "manifest": MANIFEST.format(n=n, port=args.port)})
            r.raise_for_status()
            task = r.json()["tasks"][0]["id"]
            while client.get(f"/v1/queue/{task}").json()["state"] != "completed":
                time.sleep(0.2)

            def healthy() -> int:
                rows = client.get("/v1/projects/bench/services/web/health").json()
                return sum(1 for h in rows if h["status"] == "healthy")

            deadline = time.monotonic() + 60
            while healthy() < n and time.monotonic() < deadline:
                time.sleep(0.5)
            print(f"{healthy()}/{n} instances healthy; measuring for {args.window:.0f} s ...", flush=True)
            time.sleep(3)
            cpu = cpu_percent(daemon.pid, args.window)
            rss = rss_mib(daemon.pid)
            still = healthy()
            responder_cpu = cpu_percent(responder.pid, 5)
        daemon.terminate()
        daemon.wait(timeout=10)

        peer = subprocess.Popen([py, "-c", HTTPX_PEER, str(n), str(args.port), str(args.window + 8)])
        procs.append(peer)
        time.sleep(5)
        peer_cpu = cpu_percent(peer.pid, args.window)
        peer.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)

    print(f"\nHTTP health checks of {n} instances, each polled every 1 s (2-core host):")
    print(f"  {'prober':<48} {'CPU (% of one core)':>20}")
    print(f"  {'mariposa daemon (whole process, raw-socket probes)':<48} {cpu:>19.1f}%")
    print(f"  {'httpx AsyncClient loop, same schedule, keep-alive (peer)':<48} {peer_cpu:>19.1f}%")
    print(f"  daemon RSS {rss:.0f} MiB; {still}/{n} healthy at the end; responder used {responder_cpu:.0f}% "
          f"(another process). Goal: daemon under 15% of one core.")


if __name__ == "__main__":
    main()
