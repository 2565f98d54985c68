#!/usr/bin/env python3
"""Benchmark: time from an injected failure to recovery, Mariposa next to supervisord and Docker's
own ``--restart always``.

Run as root on a host with dockerd running (tests/run.sh sets one up):
    .venv/bin/python tests/bench/bench_recovery.py [--only supervisord,docker,mariposa]
        [--injections 20] [--spacing 1] [--fresh] [--timeout 120] [--scenarios crash,health]
supervisord comes from Debian: apt-get install -y supervisor.

How the figures are taken, and why:
- The failure moment is stamped inside the container by the process that fails (busybox
  ``adjtimex`` prints the kernel's wall clock to the microsecond; containers share the host's
  clock), not taken around ``docker exec``, which itself lasts 100 ms or more.
- Recovery is polled through the Engine API over its socket every 10 ms, not through the docker
  or mariposa CLIs: every CLI call costs 50-500 ms of process start, which would be the resolution
  of every figure, and polling the Mariposa daemon would load the very thing being measured.
  supervisord is asked over its own XML-RPC socket (what ``supervisorctl pid`` does).
- Back-off is measured as it is. By default the next failure is injected ``--spacing`` seconds
  after recovery, so repeated failures meet each peer's back-off (Docker doubles from 100 ms up
  to a minute unless the container ran 10 s; Mariposa's back-offs are in
  mariposa/converge/supervise.py). ``--fresh`` measures first failures only: crash injections
  wait until the instance has been up 10.5 s (where Docker and Mariposa both reset their restart
  back-off) and every health injection gets a project of its own (replacements back off per
  service).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

POLL = 0.01
# The kernel's wall clock with microseconds, from busybox alone (its `date` has no %N).
STAMP = "adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf \"%d.%06d\\n\", s, u}'"
CRASHER = f"while [ ! -f /tmp/die ]; do sleep 0.05; done; rm -f /tmp/die; {STAMP} > /tmp/died; exit 1"
WEB = "mkdir -p /www && echo ok > /www/health.txt && exec httpd -f -p 80 -h /www"
HEALTH_MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    command: {json.dumps(["sh", "-c", WEB])}
    restart: always
    healthchecks:
      - type: http
        port: 80
        path: /health.txt
        poll: 1
        retries: 1
        timeout: 1
"""
CRASH_MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    command: {json.dumps(["sh", "-c", CRASHER])}
    restart: always
"""
STABLE = 10.5  # Docker and Mariposa both reset their restart back-off after a 10 s run


class GaveUp(Exception):
    """A recovery took longer than --timeout; the scenario stops with what it has."""


class Row:
    def __init__(self, peer: str, scenario: str) -> None:
        self.peer, self.scenario = peer, scenario
        self.samples: list[float] = []
        self.note = ""

    def add(self, value: float) -> None:
        self.samples.append(value)
        print(f"  {self.peer}, {self.scenario.strip()}: {value:.3f}", flush=True)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = POLL):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise GaveUp(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def http_ok(host: str, port: int, path: str = "/") -> bool:
    """One plain GET; True on HTTP 200."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return s.recv(64).split(b" ", 2)[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """The few Engine API calls the polling needs."""

    def __init__(self) -> None:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if not host.startswith("unix://"):
            raise SystemExit("this benchmark polls the Engine over its unix socket; unset DOCKER_HOST")
        self.client = httpx.Client(transport=httpx.HTTPTransport(uds=host[len("unix://"):]),
                                   base_url="http://docker/v1.41", timeout=30)

    def state(self, cid: str) -> dict:
        r = self.client.get(f"/containers/{cid}/json")
        return r.json()["State"] if r.status_code == 200 else {}

    def running(self, *labels: str) -> list[dict]:
        r = self.client.get("/containers/json", params={"filters": json.dumps({"label": list(labels)})})
        return [c for c in r.json() if c.get("State") == "running"]


def stamp_of(cid: str, path: str = "/tmp/died") -> float | None:
    out = subprocess.run(["docker", "exec", cid, "cat", path], capture_output=True, text=True)
    try:
        return float(out.stdout.strip())
    except ValueError:
        return None


def restarted(engine: Engine, cid: str, before: str) -> Callable[[], float | None]:
    """Recovered: the same container runs again with a new StartedAt."""
    def check() -> float | None:
        st = engine.state(cid)
        if st.get("Running") and st.get("StartedAt") != before:
            return time.time()
        return None
    return check


def crash_and_measure(engine: Engine, cid: str, timeout: float) -> float:
    before = engine.state(cid)["StartedAt"]
    # A stale stamp from the previous round must not stand in for this one.
    subprocess.run(["docker", "exec", cid, "sh", "-c", "rm -f /tmp/died; touch /tmp/die"],
                   check=True, capture_output=True)
    injected = time.time()
    recovered = wait_for(restarted(engine, cid, before), timeout, "restart")
    died = stamp_of(cid)
    # Without a stamp: from the end of the exec, which flatters the peer by up to 50 ms.
    return recovered - (died if died is not None else injected)


def up_long_enough(engine: Engine, cid: str) -> None:
    """For --fresh: wait until the container has run STABLE seconds, so no back-off applies."""
    started = re.sub(r"(\.\d{6})\d*", r"\1", engine.state(cid)["StartedAt"]).replace("Z", "+00:00")
    time.sleep(max(0.0, datetime.fromisoformat(started).timestamp() + STABLE - time.time()))


# ---- supervisord --------------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):  # noqa: ANN001 - xmlrpc's signature
        return _UnixConnection(self.unix_path)


SUPERVISORD_CONF = """
[unix_http_server]
file={dir}/supervisor.sock
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{dir}/supervisor.sock
[program:web]
command=/bin/busybox httpd -f -p 127.0.0.1:{port} -h {dir}/www
autorestart=true
startsecs=0
startretries=1000
"""


def bench_supervisord(args, rows: list[Row]) -> None:
    row = Row("supervisord", "crash: kill -9 -> new pid answers")
    rows.append(row)
    if not shutil.which("supervisord"):
        row.note = "supervisord not installed: apt-get install -y supervisor"
        return
    with tempfile.TemporaryDirectory() as t:
        (Path(t) / "www").mkdir()
        (Path(t) / "www" / "index.html").write_text("ok\n")
        port = free_port()
        conf = Path(t) / "supervisord.conf"
        conf.write_text(SUPERVISORD_CONF.format(dir=t, port=port))
        proc = subprocess.Popen(["supervisord", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        rpc = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(f"{t}/supervisor.sock"))

        def pid() -> int:
            try:
                return rpc.supervisor.getProcessInfo("web")["pid"]
            except (OSError, xmlrpc.client.Fault):
                return 0

        try:
            wait_for(lambda: pid() and http_ok("127.0.0.1", port), 20, "supervisord up", 0.05)
            for _ in range(args.injections):
                old = pid()
                t0 = time.time()
                os.kill(old, signal.SIGKILL)
                t1 = wait_for(lambda: pid() not in (0, old) and http_ok("127.0.0.1", port) and time.time(),
                              args.timeout, "supervisord restart", 0.002)
                row.add(t1 - t0)
                time.sleep(args.spacing)
        except GaveUp as exc:
            row.note = str(exc)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- docker --restart always --------------------------------------------------------------------


def bench_docker(args, rows: list[Row], engine: Engine) -> None:
    row = Row("docker --restart always", "crash: exit 1 -> running again")
    rows.append(row)
    label = f"mariposa.bench-recovery={os.getpid()}"
    # A network of its own, as Mariposa's instance has its project's (and some hosts' dockerd
    # run without the default bridge).
    network = f"mbench-recovery-{os.getpid()}"
    docker("network", "create", "--label", label, network)
    try:
        cid = docker("run", "-d", "--restart", "always", "--init", "--label", label, "--network", network,
                     IMAGE, "sh", "-c", CRASHER).strip()
        wait_for(lambda: engine.state(cid).get("Running"), 30, "container up")
        for _ in range(args.injections):
            if args.fresh:
                up_long_enough(engine, cid)
            row.add(crash_and_measure(engine, cid, args.timeout))
            time.sleep(args.spacing)
    except GaveUp as exc:
        row.note = str(exc)
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={label}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", network, check=False)


# ---- mariposa -----------------------------------------------------------------------------------


def _add(d: Daemon, tmp: Path, name: str, manifest: str) -> dict:
    path = tmp / f"{name}.yaml"
    path.write_text(manifest)
    r = d.cli("project", "add", name, str(path), "--wait", check=False, timeout=300)
    if r.returncode != 0:
        last = ((r.stderr or r.stdout).strip().splitlines() or ["(no output)"])[-1]
        raise GaveUp(f"project add refused: {last}")

    def one_running():
        found = [i for i in d.json("-j", name, "service", "instances", "web")
                 if i["state"] == "running" and not i.get("retired")]
        return found[0] if found else None

    return wait_for(one_running, 60, f"{name}: a running instance", 0.2)


def _api(d: Daemon) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=d.socket), base_url="http://m", timeout=30)


def _healthy(api: httpx.Client, project: str) -> bool:
    try:
        r = api.get(f"/v1/projects/{project}/services/web/health")
        return r.status_code == 200 and any(h.get("status") == "healthy" for h in r.json())
    except (httpx.HTTPError, ValueError):
        return False


def _detected(api: httpx.Client, project: str, instance_id: str) -> float | None:
    """When the daemon marked the instance unhealthy, from its event log."""
    try:
        events = api.get("/v1/events", params={"project": project}).json()
    except (httpx.HTTPError, ValueError):
        return None
    times = [e["time"] for e in events if e.get("type") == "health.unhealthy" and e.get("instance") == instance_id]
    return min(times) if times else None


def bench_mariposa_health(args, rows: list[Row], engine: Engine, d: Daemon, tmp: Path) -> None:
    total = Row("mariposa", "health: 404 -> new instance answers")
    detect = Row("mariposa", "  of which failure -> unhealthy")
    replace = Row("mariposa", "  of which unhealthy -> replaced")
    rows += [total, detect, replace]
    api = _api(d)
    try:
        inst = None
        for i in range(args.injections):
            project = f"rhealth{i}" if args.fresh else "rhealth"
            if inst is None or args.fresh:
                inst = _add(d, tmp, project, HEALTH_MANIFEST)
            wait_for(lambda: _healthy(api, project), 30, "instance healthy", 0.1)
            # Seen healthy means a check just passed: without this the failure would always land
            # at the same point of the 1 s poll cycle, and detection would look constant.
            time.sleep(random.uniform(0, 1.0))
            out = subprocess.run(["docker", "exec", inst["runtime_id"], "sh", "-c", f"rm /www/health.txt && {STAMP}"],
                                 capture_output=True, text=True, check=True)
            failed = float(out.stdout.strip())
            labels = ("io.mariposa.owner=" + d.owner, "io.mariposa.project=" + inst["project_id"],
                      "io.mariposa.service=web")

            def replacement():
                for c in engine.running(*labels):
                    if c["Id"] == inst["runtime_id"]:
                        continue
                    for net in (c.get("NetworkSettings") or {}).get("Networks", {}).values():
                        if net.get("IPAddress") and http_ok(net["IPAddress"], 80, "/health.txt"):
                            return time.time(), c["Id"]
                return None

            recovered, new_id = wait_for(replacement, args.timeout, "replacement")
            total.add(recovered - failed)
            seen = _detected(api, project, inst["id"])
            if seen is not None:
                detect.add(seen - failed)
                replace.add(recovered - seen)
            if args.fresh:
                d.cli("project", "delete", project, check=False, timeout=120)
                inst = None
            else:
                inst = wait_for(lambda: next((i for i in d.json("-j", project, "service", "instances", "web")
                                              if i["runtime_id"] == new_id), None), 30, "new instance listed", 0.2)
                time.sleep(args.spacing)
    except GaveUp as exc:
        total.note = str(exc)


def bench_mariposa_crash(args, rows: list[Row], engine: Engine, d: Daemon, tmp: Path) -> None:
    row = Row("mariposa", "crash: exit 1 -> running again")
    rows.append(row)
    try:
        inst = _add(d, tmp, "rcrash", CRASH_MANIFEST)
        for _ in range(args.injections):
            if args.fresh:
                up_long_enough(engine, inst["runtime_id"])
            row.add(crash_and_measure(engine, inst["runtime_id"], args.timeout))
            time.sleep(args.spacing)
    except GaveUp as exc:
        row.note = str(exc)


def bench_mariposa(args, rows: list[Row], engine: Engine) -> None:
    with tempfile.TemporaryDirectory() as t:
        d = Daemon(Path(t))
        try:
            d.start()
        except AssertionError as exc:
            row = Row("mariposa", "(daemon)")
            row.note = "daemon did not start: " + str(exc).strip().splitlines()[-1]
            rows.append(row)
            d.cleanup()
            return
        try:
            if "health" in args.scenarios:
                bench_mariposa_health(args, rows, engine, d, Path(t))
            if "crash" in args.scenarios:
                bench_mariposa_crash(args, rows, engine, d, Path(t))
        finally:
            d.cleanup()


# ---- docker and mariposa crashes, side by side ---------------------------------------------------


def bench_crash_paired(args, rows: list[Row], engine: Engine) -> None:
    """Docker's restart and Mariposa's, one crash of each in turn (the order alternating), so a
    shared machine's load falls on both alike; run one after the other, minutes apart, the two
    rows measure the load as much as the peers."""
    docker_row = Row("docker --restart always", "crash: exit 1 -> running again")
    mariposa_row = Row("mariposa", "crash: exit 1 -> running again")
    rows += [docker_row, mariposa_row]
    label = f"mariposa.bench-recovery={os.getpid()}"
    network = f"mbench-recovery-{os.getpid()}"
    docker("network", "create", "--label", label, network)
    with tempfile.TemporaryDirectory() as t:
        d = Daemon(Path(t))
        try:
            d.start()
            cid = docker("run", "-d", "--restart", "always", "--init", "--label", label, "--network", network,
                         IMAGE, "sh", "-c", CRASHER).strip()
            wait_for(lambda: engine.state(cid).get("Running"), 30, "container up")
            inst = _add(d, Path(t), "rcrash", CRASH_MANIFEST)
            peers = [(docker_row, cid), (mariposa_row, inst["runtime_id"])]
            for i in range(args.injections):
                for row, ref in (peers if i % 2 == 0 else peers[::-1]):
                    if args.fresh:
                        up_long_enough(engine, ref)
                    row.add(crash_and_measure(engine, ref, args.timeout))
                time.sleep(args.spacing)
        except GaveUp as exc:
            mariposa_row.note = str(exc)
        finally:
            d.cleanup()
            ids = docker("ps", "-aq", "--filter", f"label={label}").split()
            if ids:
                docker("rm", "-f", *ids, check=False)
            docker("network", "rm", network, check=False)


# ---- report -------------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


NOTES = {
    "supervisord": """  supervisord: kill -9 of busybox httpd until supervisord reports a new pid and the port answers.
    supervisord restarts an exited program at once; it backs off (1 s, 2 s, ...) only on start
    failures, and with startsecs=0 every start counts as a success, so there is no back-off here.""",
    "docker": """  docker --restart always: the process exits 1 by itself (stamped inside the container) until the
    same container runs again (new StartedAt). Docker waits 100 ms before the first restart and
    doubles that up to 1 min for every restart of a container that ran less than 10 s.""",
    "mariposa": """  mariposa health: /health.txt removed (HTTP 404; check every 1 s, 1 failure) until a new container
    of the service answers 200 on its own address; split into detection (the daemon's
    health.unhealthy event) and replacement. Repeated replacements back off per service.
  mariposa crash: as the docker row; Mariposa restarts in place, at once after a run of 10 s or
    more, backing off when the instance keeps exiting sooner (mariposa/converge/supervise.py).""",
}


def report(rows: list[Row], args) -> None:
    regime = ("first failures only (--fresh)" if args.fresh
              else f"repeated failures, next one {args.spacing:g} s after recovery")
    print(f"\nTime from failure to recovery, seconds ({regime}; dockerd "
          f"{docker('version', '--format', '{{.Server.Version}}').strip()}):")
    print(f"  {'peer':<24} {'scenario':<38} {'median':>7} {'p95':>7} {'min':>7} {'max':>7} {'n':>3}")
    for r in rows:
        if r.samples:
            s = r.samples
            figures = f"{statistics.median(s):>7.3f} {p95(s):>7.3f} {min(s):>7.3f} {max(s):>7.3f} {len(s):>3}"
        else:
            figures = f"{'-':>7} {'-':>7} {'-':>7} {'-':>7} {0:>3}"
        print(f"  {r.peer:<24} {r.scenario:<38} {figures}")
    for r in rows:
        if r.note:
            print(f"  ! {r.peer}, {r.scenario.strip()}: {r.note}")
    print("\nWhat each row measures:")
    ran = {r.peer.split()[0] for r in rows}
    for peer, text in NOTES.items():
        if peer in ran:
            print(text)
    for r in rows:
        if r.samples and not args.fresh:
            print(f"  sequence, {r.peer}, {r.scenario.strip()}: " + " ".join(f"{v:.2f}" for v in r.samples))


def ratio(rows: list[Row]) -> None:
    """The issue's bound: Mariposa's restart within 1.2 x Docker's own, at the median and p95."""
    docker_row = next((r for r in rows if r.peer.startswith("docker") and r.samples), None)
    mariposa_row = next((r for r in rows if r.peer == "mariposa" and r.scenario.startswith("crash") and r.samples),
                        None)
    if docker_row and mariposa_row:
        d, m = docker_row.samples, mariposa_row.samples
        print(f"\nmariposa / docker --restart always, crash: median {statistics.median(m) / statistics.median(d):.2f}, "
              f"p95 {p95(m) / p95(d):.2f} (goal: <= 1.20 each; 1-min load now {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="supervisord,docker,mariposa",
                    help="comma-separated peers: supervisord, docker, mariposa")
    ap.add_argument("--injections", type=int, default=20)
    ap.add_argument("--spacing", type=float, default=1.0, help="seconds between a recovery and the next failure")
    ap.add_argument("--fresh", action="store_true", help="first failures only (see the module docstring)")
    ap.add_argument("--timeout", type=float, default=120.0, help="give a scenario up after a recovery this long")
    ap.add_argument("--scenarios", default="crash,health",
                    help="mariposa's scenarios: crash (restart in place, beside docker's), health")
    args = ap.parse_args()
    peers = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(peers) - {"supervisord", "docker", "mariposa"}
    if unknown:
        ap.error(f"unknown peers: {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    engine = Engine()
    if {"docker", "mariposa"} & set(peers):
        ensure_image()
    paired = "docker" in peers and "mariposa" in peers and "crash" in args.scenarios
    if paired:
        print("measuring docker and mariposa crashes, side by side ...", flush=True)
        bench_crash_paired(args, rows, engine)
        args.scenarios = args.scenarios.replace("crash", "")
    for peer in peers:
        if paired and (peer == "docker" or (peer == "mariposa" and "health" not in args.scenarios)):
            continue
        print(f"measuring {peer} ...", flush=True)
        if peer == "supervisord":
            bench_supervisord(args, rows)
        elif peer == "docker":
            bench_docker(args, rows, engine)
        else:
            bench_mariposa(args, rows, engine)
    report(rows, args)
    ratio(rows)


if __name__ == "__main__":
    main()
