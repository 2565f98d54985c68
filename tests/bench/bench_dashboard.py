#!/usr/bin/env python3
"""Benchmark: the dashboard's pages and its live stream (issue 19's figures), with supervisord's
web interface side by side.

    .venv/bin/python tests/bench/bench_dashboard.py [--quick] [--browser] [--profile OUT.html]

What runs: a daemon in its own process on the fake driver (``run_daemon(config, {"docker":
FakeDriver(...)})``, instances cost nothing to create) with the remote listener on a free local
port (``listen="127.0.0.1:PORT"``, its self-signed certificate, so clients skip verification). One
project ``bench`` with one service ``web``, scaled through the control socket to 10, 1,000 and
10,000 instances in turn; a second, small project ``fan`` whose changes the stream clients follow.

How each figure is taken:

- **Sign-in**: as root over the unix socket, ``POST /v1/ui/signin`` gives a one-time URL; GETting
  it with an httpx client (a cookie jar, ``verify=False``) opens a session. Each client has its
  own session.
- **Pages** (``/ui/``, ``/ui/p/bench``, and ``/ui/p/bench/s/web`` whose first page is 100 rows): on
  one kept-alive TLS connection (so a request is timed, not a handshake), after warm-up requests,
  ``--requests`` sequential GETs each; *first byte* is when the status line and headers have
  arrived (httpx's ``stream`` returns), *whole* is when the last byte of the body has. The median
  (and max) of them, in ms. A page that is not there yet (404: the project and service pages are
  being written on another branch) is reported as such. With ``--browser``, also a real headless
  chromium (selenium + /usr/bin/chromedriver): it signs in through its own one-time link, loads
  each page ``--browser-loads`` times, and the median of the Navigation Timing's
  ``loadEventEnd - startTime`` is reported (*loaded*: HTML parsed, CSS and scripts fetched and run).
- **SSE fan-out**: ``--clients`` (50) clients, each with its own session and its own TLS
  connection, follow ``/ui/stream?project=fan`` (httpx streams in one trio process, the bench's).
  A change is made every ``--interval`` seconds (``fan``'s service scaled between 1 and 2 through
  the control socket); for each change, each client's latency is the time from just before the
  scale request was sent to the first ``event: event`` message (the event the change writes, sent
  at once) and to the ``event: change`` message (coalesced by the stream, ``COALESCE`` seconds)
  that arrive after it. Median, p95 and max over every client and change. The daemon's CPU
  (/proc, procstat.py) is taken over the same windows of the same change loop with 0 clients and
  with 50 clients, and the difference is what following costs.
- **supervisord** (the peer; its own temp venv, ``pip install supervisor``, never the project's):
  ``supervisord`` with ``[inet_http_server]`` on a free local port (plain HTTP: it has no TLS) and
  ``sleep`` programs, 10 and 100 of them (not 1,000 and 10,000: a program is a real process, and
  supervisord starts them one at a time); its status page ``/`` (the only page, every program on
  it, it does not page) timed the same way.

Scaling the fake driver to 10,000 took 12 minutes on a 2-core host (the reconciler's passes
saturate the daemon at that size: converge/reconciler.py and drivers/fake.py ``_report_all`` in
py-spy), so the full run is long; ``--sizes`` picks others. Other work on the host shows in every
figure: run it on a quiet machine.

``--quick`` (under 2 minutes): fewer requests, 10 and 1,000 instances only, 10 stream clients for a
short window, supervisord at 10. ``--profile OUT.html``: the daemon runs under pyinstrument
(installed in the venv) and writes its profile there at exit: slower, for finding why, not for
the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402

from tests.bench.procstat import cpu_seconds, rss_mib  # noqa: E402

DAEMON = textwrap.dedent("""
    import sys, trio
    from mariposa.config import DaemonConfig
    from mariposa.daemon import run_daemon
    from mariposa.drivers.fake import FakeDriver
    tmp, port, profile, resync = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    config = DaemonConfig(state_dir=tmp + "/state", socket=tmp + "/m.sock", resync=resync, manifest_dir=None,
                          secret_key_file=tmp + "/key", run_dir=tmp + "/run", listen="127.0.0.1:" + port)
    def run():
        try:
            trio.run(run_daemon, config, {"docker": FakeDriver(images=("bench",))})
        except KeyboardInterrupt:
            pass
    if profile:
        from pyinstrument import Profiler
        profiler = Profiler(async_mode="disabled", interval=0.001)
        profiler.start()
        try:
            run()
        finally:
            profiler.stop()
            open(profile, "w").write(profiler.output_html())
            print(profiler.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
    else:
        run()
""")

MANIFEST = "services:\n  web:\n    image: bench\n    scale: {n}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=20)[18]


# ---------------------------------------------------------------------------------------------
# The daemon


class Daemon:
    def __init__(self, tmp: Path, profile: str | None, resync: float = 10.0) -> None:
        self.tmp, self.port = tmp, free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        self.sock = str(tmp / "m.sock")
        self.log = open(tmp / "daemon.log", "wb")
        argv = [sys.executable, "-c", DAEMON, str(tmp), str(self.port), profile or "", str(resync)]
        self.proc = subprocess.Popen(argv,
                                     stdout=self.log, stderr=self.log, cwd=str(ROOT))
        self.api = httpx.Client(transport=httpx.HTTPTransport(uds=self.sock), base_url="http://m", timeout=600)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api.get("/v1/ping").raise_for_status()
                break
            except (httpx.TransportError, httpx.HTTPStatusError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"the daemon did not start: see {tmp}/daemon.log") from None
                time.sleep(0.1)

    def wait_task(self, answer: httpx.Response) -> None:
        answer.raise_for_status()
        for task in answer.json().get("tasks", []):
            while True:
                state = self.api.get(f"/v1/queue/{task['id']}").json()["state"]
                if state in ("completed", "failed", "cancelled", "stopped"):
                    assert state == "completed", f"task {task['id']}: {state}"
                    break
                time.sleep(0.2)

    def add(self, project: str, n: int) -> None:
        self.wait_task(self.api.post("/v1/projects", json={"name": project, "manifest": MANIFEST.format(n=n)}))

    def scale(self, project: str, n: int, wait: bool = True) -> None:
        r = self.api.post(f"/v1/projects/{project}/services/web/scale", json={"scale": n})
        if wait:
            self.wait_task(r)
        else:
            r.raise_for_status()

    def signin_url(self) -> str:
        r = self.api.post("/v1/ui/signin")
        r.raise_for_status()
        return r.json()["url"]

    def session(self) -> httpx.Client:
        client = httpx.Client(verify=False, timeout=120, follow_redirects=True)
        r = client.get(self.signin_url())
        r.raise_for_status()
        assert "mariposa_session" in client.cookies, "the sign-in link set no session cookie"
        return client

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.api.close()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Pages


def time_page(client: httpx.Client, url: str, requests: int, warm: int = 3) -> dict:
    """Median/max first byte and whole body over ``requests`` sequential GETs on one connection."""
    first, whole, size, status = [], [], 0, 0
    for i in range(warm + requests):
        t = time.perf_counter()
        with client.stream("GET", url) as r:
            t_head = time.perf_counter()
            body = b"".join(r.iter_bytes())
            t_end = time.perf_counter()
            status, size = r.status_code, len(body)
        if status != 200:
            return {"status": status, "size": size}
        if i >= warm:
            first.append(t_head - t)
            whole.append(t_end - t)
    return {"status": status, "size": size, "first": median(first), "whole": median(whole),
            "first_max": max(first), "whole_max": max(whole)}


def browser_loads(url_signin: str, urls: list[str], loads: int) -> dict[str, float | None]:
    """Median navigation load time in headless chromium, per URL (None: not 200 or no browser)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return dict.fromkeys(urls)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--ignore-certificate-errors", "--no-sandbox", "--headless=new", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    out: dict[str, float | None] = {}
    try:
        driver.get(url_signin)
        for url in urls:
            times = []
            for _ in range(loads + 1):  # the first one warms the cache of static files
                driver.get(url)
                nav = driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "return [n.responseStatus || 200, n.responseStart - n.startTime, n.loadEventEnd - n.startTime];")
                if nav[0] != 200:
                    break
                times.append(nav[2] / 1000)
            out[url] = median(times[1:]) if len(times) > 1 else None
    finally:
        driver.quit()
    return out


# ---------------------------------------------------------------------------------------------
# SSE fan-out


async def fan_out(daemon: Daemon, clients: int, changes: int, interval: float) -> dict:
    """``clients`` streams on project ``fan``; ``changes`` scale flips; latencies and CPU."""
    cookies = []
    for _ in range(clients):
        c = daemon.session()  # a session each; the cookie moves to the async client
        cookies.append(c.cookies.get("mariposa_session"))
        c.close()
    received: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
    ready = trio.Semaphore(0)  # released by each client once its stream is open
    results: dict = {}

    drops: list[str] = []

    async def follow(i: int, cookie: str) -> None:
        """One client; a stream the daemon ends is counted and opened again, as EventSource does."""
        opened = False
        async with httpx.AsyncClient(verify=False, timeout=httpx.Timeout(30, read=None)) as c:
            c.cookies.set("mariposa_session", cookie, domain="127.0.0.1", path="/ui")
            while True:
                try:
                    async with c.stream("GET", f"{daemon.base}/ui/stream?project=fan") as r:
                        assert r.status_code == 200, r.status_code
                        event = None
                        async for line in r.aiter_lines():
                            if not opened:
                                opened = True
                                ready.release()
                            if line.startswith("event: "):
                                event = line[7:]
                            elif line == "" and event is not None:
                                received[i].append((time.perf_counter(), event))
                                event = None
                    drops.append("ended")
                except httpx.HTTPError as exc:
                    drops.append(type(exc).__name__)

    async def change_loop(n: int) -> list[float]:
        marks = []
        scale = 2
        for _ in range(n):
            marks.append(time.perf_counter())
            await trio.to_thread.run_sync(lambda s=scale: daemon.scale("fan", s, wait=False))
            scale = 1 if scale == 2 else 2
            await trio.sleep(interval)
        return marks

    async with trio.open_nursery() as nursery:
        for i, cookie in enumerate(cookies):
            nursery.start_soon(follow, i, cookie)
        with trio.fail_after(60):
            for _ in range(clients):
                await ready.acquire()
        await trio.sleep(1.0)
        c0, t0 = cpu_seconds(daemon.proc.pid), time.monotonic()
        marks = await change_loop(changes)
        results["cpu"] = (cpu_seconds(daemon.proc.pid) - c0) / (time.monotonic() - t0) * 100
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()

    to_event: list[float] = []
    to_change: list[float] = []
    missed = 0
    for got in received:
        for k, mark in enumerate(marks):
            end = marks[k + 1] if k + 1 < len(marks) else float("inf")
            ev = next((t for t, e in got if mark <= t < end and e == "event"), None)
            ch = next((t for t, e in got if mark <= t < end and e == "change"), None)
            if ev is not None:
                to_event.append(ev - mark)
            if ch is not None:
                to_change.append(ch - mark)
            else:
                missed += 1
    results.update(to_event=to_event, to_change=to_change, missed=missed, expected=clients * len(marks),
                   drops=drops)
    return results


def idle_cpu(daemon: Daemon, changes: int, interval: float) -> float:
    """The daemon's CPU over the same change loop with nobody following."""
    c0, t0 = cpu_seconds(daemon.proc.pid), time.monotonic()
    scale = 2
    for _ in range(changes):
        daemon.scale("fan", scale, wait=False)
        scale = 1 if scale == 2 else 2
        time.sleep(interval)
    return (cpu_seconds(daemon.proc.pid) - c0) / (time.monotonic() - t0) * 100


# ---------------------------------------------------------------------------------------------
# supervisord


SUPERVISORD_CONF = """
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
minfds=1024

[unix_http_server]
file={tmp}/supervisor.sock

[inet_http_server]
port=127.0.0.1:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:sleeper]
command=sleep 100000
process_name=%(program_name)s_%(process_num)d
numprocs={n}
autostart=true
startsecs=0
stdout_logfile=NONE
stderr_logfile=NONE
"""


def supervisord_binary() -> str | None:
    for candidate in (os.environ.get("SUPERVISORD"), "/tmp/supervisor-venv/bin/supervisord",
                      shutil.which("supervisord")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def ensure_supervisord() -> str | None:
    found = supervisord_binary()
    if found:
        return found
    venv = Path(tempfile.gettempdir()) / "supervisor-venv"
    print(f"installing supervisor into {venv} (a temp venv, not the project's) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", "supervisor"], check=True)
    except (subprocess.CalledProcessError, OSError):
        return None
    return supervisord_binary()


def supervisord_page(binary: str, n: int, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-supervisord-") as tmp:
        port = free_port()
        conf = Path(tmp) / "supervisord.conf"
        conf.write_text(SUPERVISORD_CONF.format(tmp=tmp, port=port, n=n))
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            with httpx.Client(timeout=60) as client:
                while True:  # until every program is RUNNING
                    try:
                        page = client.get(base + "/").text
                        if page.count("state running") + page.count(">running<") >= n:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
                result = time_page(client, base + "/", requests)
                result["running"] = page.count("state running")
            result["rss"] = rss_mib(proc.pid)
            return result
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 2 minutes")
    parser.add_argument("--browser", action="store_true", help="also time page loads in headless chromium")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per page (default 20; quick 7)")
    parser.add_argument("--browser-loads", type=int, default=5)
    parser.add_argument("--clients", type=int, default=None, help="stream clients (default 50; quick 10)")
    parser.add_argument("--changes", type=int, default=None, help="changes in the fan-out loop (default 20)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between two changes")
    parser.add_argument("--sizes", default=None, help="instance counts, e.g. 10,1000,10000")
    parser.add_argument("--peer-sizes", default=None, help="supervisord program counts (default 10,100)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--resync", type=float, default=10.0, help="the daemon's resync (its default 10 s)")
    parser.add_argument("--profile", default=None, help="run the daemon under pyinstrument, HTML here")
    args = parser.parse_args()
    quick = args.quick
    requests = args.requests or (7 if quick else 20)
    clients = args.clients if args.clients is not None else (10 if quick else 50)
    changes = args.changes or (6 if quick else 20)
    sizes = [int(s) for s in (args.sizes or ("10,1000" if quick else "10,1000,10000")).split(",")]
    peer_sizes = [int(s) for s in (args.peer_sizes or ("10" if quick else "10,100")).split(",")]
    started = time.monotonic()

    rows: list[tuple[str, str, dict]] = []  # (system, page, result)
    browser: dict[tuple[int, str], float | None] = {}
    fan: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp_name:
        tmp = Path(tmp_name)
        daemon = Daemon(tmp, args.profile, args.resync)
        try:
            daemon.add("fan", 1)
            daemon.add("bench", sizes[0])
            client = daemon.session()
            for n in sizes:
                t = time.monotonic()
                daemon.scale("bench", n)
                print(f"bench/web at {n} instances (scaled in {time.monotonic() - t:.1f} s); timing pages ...",
                      flush=True)
                pages = [("overview /ui/", "/ui/"), ("project /ui/p/bench", "/ui/p/bench"),
                         ("service /ui/p/bench/s/web (page 1)", "/ui/p/bench/s/web")]
                for label, path in pages:
                    if path.endswith("/s/web") and n != sizes[-1]:
                        continue
                    result = time_page(client, daemon.base + path, requests)
                    rows.append((f"mariposa, {n} instances", label, result))
                    if result.get("status") == 200:  # as it comes: a long run's figures survive its end
                        print(f"  {label}: first byte {ms(result['first'])} ms, whole {ms(result['whole'])} ms",
                              flush=True)
                if args.browser:
                    urls = [daemon.base + p for _, p in pages]
                    for url, value in browser_loads(daemon.signin_url(), urls, args.browser_loads).items():
                        browser[(n, url.removeprefix(daemon.base))] = value
            client.close()
            daemon.scale("bench", 0)  # the fan-out's CPU is the stream's, not 10,000 instances' upkeep
            print(f"fan-out: {changes} changes, {args.interval:.1f} s apart, with 0 and then {clients} "
                  "stream clients ...", flush=True)
            time.sleep(2)
            fan["idle_cpu"] = idle_cpu(daemon, changes, args.interval)
            if clients:
                fan.update(trio.run(fan_out, daemon, clients, changes, args.interval))
            fan["rss"] = rss_mib(daemon.proc.pid)
        finally:
            daemon.stop()
            shutil.copy(tmp / "daemon.log", Path(tempfile.gettempdir()) / "bench-dashboard-daemon.log")
            problems = [line for line in (tmp / "daemon.log").read_text(errors="replace").splitlines()
                        if "[warning" in line or "[error" in line]
            if problems:
                print(f"daemon warnings/errors ({len(problems)}), the first 10:")
                print("\n".join(p[:300] for p in problems[:10]))
                print(f"(the whole log: {tempfile.gettempdir()}/bench-dashboard-daemon.log)")
        if args.profile:
            print(f"profile written to {args.profile}; text in {tmp}/daemon.log (tail below)")
            print("\n".join((tmp / "daemon.log").read_text(errors="replace").splitlines()[-80:]))

    binary = None if args.no_peer else ensure_supervisord()
    if binary:
        for n in peer_sizes:
            print(f"supervisord with {n} sleep programs ...", flush=True)
            rows.append((f"supervisord, {n} programs", "status page /", supervisord_page(binary, n, requests)))

    report(rows, browser, fan, requests, clients, changes, args, time.monotonic() - started, binary)


def report(rows: list, browser: dict, fan: dict, requests: int, clients: int, changes: int,
           args: argparse.Namespace, elapsed: float, peer: str | None) -> None:
    print()
    print(f"Pages: median of {requests} sequential GETs on one kept-alive connection (max in brackets), ms;"
          " mariposa over TLS, supervisord plain HTTP")
    head = f"{'system':28} {'page':36} {'first byte':>18} {'whole body':>18} {'bytes':>9}"
    if browser:
        head += f" {'chromium load':>14}"
    print(head)
    for system, page, r in rows:
        if r.get("status") != 200:
            print(f"{system:28} {page:36} {'(HTTP ' + str(r.get('status')) + ': not there)':>38}")
            continue
        line = (f"{system:28} {page:36} {ms(r['first']):>8} ({ms(r['first_max']):>7})"
                f" {ms(r['whole']):>8} ({ms(r['whole_max']):>7}) {r['size']:>9}")
        if browser and system.startswith("mariposa"):
            n = int(system.split()[1])
            path = page.split()[1]
            value = browser.get((n, path))
            line += f" {ms(value) if value is not None else '-':>14}"
        print(line)
    bar = [r for s, p, r in rows if s.endswith("10000 instances") and p.startswith("project")]
    if bar and bar[0].get("status") == 200:
        verdict = "met" if bar[0]["first"] < 0.2 else "MISSED"
        print(f"The bar (10,000 instances, project page's first byte under 200 ms): {verdict}"
              f" ({ms(bar[0]['first'])} ms)")
    elif bar:
        print("The bar (10,000 instances, project page's first byte under 200 ms): project page not there yet")
    else:
        print("The bar (10,000 instances, project page's first byte under 200 ms): not measured at these sizes")
    if peer is None and not args.no_peer:
        print("supervisord: not installed and could not be installed; no peer figures")
    elif peer:
        print("supervisord runs a real process per program, so it is timed at "
              f"{args.peer_sizes or ('10' if args.quick else '10,100')} programs, not 1,000 and 10,000")
    print()
    if fan:
        print(f"SSE fan-out: {clients} clients on /ui/stream?project=fan, {changes} changes "
              f"{args.interval:.1f} s apart (a scale between 1 and 2)")
        print(f"  daemon CPU (% of one core): {fan['idle_cpu']:.1f} with 0 clients, "
              f"{fan.get('cpu', float('nan')):.1f} with {clients}; RSS {fan['rss']:.0f} MiB")
        if clients:
            for name, key in (("to 'event: event'", "to_event"), ("to 'event: change'", "to_change")):
                xs = fan[key]
                print(f"  latency {name:20}: median {ms(median(xs))} ms, p95 {ms(p95(xs))} ms, "
                      f"max {ms(max(xs)) if xs else '-'} ms ({len(xs)} messages)")
            print(f"  changes with no 'event: change' at some client: {fan['missed']} of {fan['expected']}; "
                  f"streams the daemon ended (reopened): {len(fan['drops'])} {sorted(set(fan['drops']))}")
    print(f"\n(bench took {elapsed:.0f} s; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
