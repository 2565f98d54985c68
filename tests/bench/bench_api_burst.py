#!/usr/bin/env python3
"""Benchmark: the control API under a burst, next to the floor of its own stack.

Issue 11 asks the daemon to answer ``project list`` within 200 ms while 500 connections arrive at
once. What that costs depends on how fast the host serves a request at all, so this prints the
daemon beside a bare trio + h11 server on the same socket type, answering every request with a
small JSON 404 and nothing else (no router, no store, no Engine): the floor any trio + h11 daemon
stands on, on this host.

For each: CPU per request over 500 sequential requests (the server's own, from /proc), and a burst:
500 connections open, each sends a request for a missing project, then one more client sends
``GET /v1/projects`` and times its answer, while the burst is being served.

    .venv/bin/python tests/bench/bench_api_burst.py [--rounds 3] [--burst 500]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import Daemon  # noqa: E402

MISSING = b"GET /v1/projects/crowd-1 HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
LIST = b"GET /v1/projects HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"


def bare_server(path: str) -> None:
    """trio + h11 and nothing else: a 404 with a JSON body for every request."""
    import h11
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    break
                conn.receive_data(data)
            elif isinstance(event, h11.EndOfMessage):
                body = json.dumps({"error": "not_found", "message": "no project"}).encode()
                head = h11.Response(status_code=404, headers=[("content-type", "application/json"),
                                                              ("content-length", str(len(body)))])
                await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
        await stream.aclose()

    async def main() -> None:
        sock = trio.socket.socket(socket.AF_UNIX)
        await sock.bind(path)
        sock.listen(4096)
        await trio.serve_listeners(handle, [trio.SocketListener(sock)])

    trio.run(main)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ask(path: str, request: bytes) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(request)
        while s.recv(65536):
            pass


def sequential_cpu_ms(path: str, pid: int, n: int = 500) -> float:
    before = cpu_seconds(pid)
    for _ in range(n):
        ask(path, MISSING)
    return (cpu_seconds(pid) - before) / n * 1000


def burst(path: str, size: int) -> tuple[float, float]:
    """(ms until the whole burst was answered, ms for a project list sent right after it)."""
    crowd = []
    for _ in range(size):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        crowd.append(s)
    started = time.monotonic()
    for s in crowd:
        s.sendall(MISSING)
    sent = time.monotonic()
    ask(path, LIST)
    probe = time.monotonic() - sent
    for s in crowd:
        while s.recv(65536):
            pass
        s.close()
    return (time.monotonic() - started) * 1000, probe * 1000


def measure(path: str, pid: int, rounds: int, size: int) -> dict:
    cpu = statistics.median(sequential_cpu_ms(path, pid) for _ in range(rounds))
    bursts = [burst(path, size) for _ in range(rounds)]
    return {"cpu_ms": cpu, "burst_ms": statistics.median(b[0] for b in bursts),
            "probe_ms": statistics.median(b[1] for b in bursts), "probe_max_ms": max(b[1] for b in bursts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bare.sock")
        server = multiprocessing.Process(target=bare_server, args=(path,), daemon=True)
        server.start()
        while not os.path.exists(path):
            time.sleep(0.05)
        try:
            rows["trio + h11 alone (floor)"] = measure(path, server.pid, args.rounds, args.burst)
        finally:
            server.terminate()
        daemon = Daemon(Path(tmp)).start()
        try:
            assert daemon.proc is not None
            rows["mariposa daemon"] = measure(daemon.socket, daemon.proc.pid, args.rounds, args.burst)
        finally:
            daemon.cleanup()
    print(f"\ncontrol API, {args.burst}-connection burst, median of {args.rounds} (load {os.getloadavg()[0]:.1f})")
    print(f"{'server':28} {'CPU/request':>12} {'burst served':>13} {'list after it':>14} {'(max)':>8}")
    for name, r in rows.items():
        print(f"{name:28} {r['cpu_ms']:9.2f} ms {r['burst_ms']:10.0f} ms {r['probe_ms']:11.0f} ms {r['probe_max_ms']:5.0f} ms")
    floor, ours = rows["trio + h11 alone (floor)"], rows["mariposa daemon"]
    print(f"mariposa / floor: CPU {ours['cpu_ms'] / floor['cpu_ms']:.1f} x, list after a burst "
          f"{ours['probe_ms'] / floor['probe_ms']:.1f} x")


if __name__ == "__main__":
    main()
