"""Runtime faults (issue 11, part 4): the Docker Engine restarted under a running project, the
state directory's disk full, and the store's SQLite file locked by another process.

Each scenario runs the real daemon (tests/integration/harness.py) and returns its figures: how
long the fault lasted, what every request during it was answered, how long recovery took, and
`problems`, the list of every expectation that did not hold (empty when all held). The tests in
test_runtime.py assert on them; tests/bench/bench_faults.py prints them.

What must hold, from the issue and the README:
- the daemon never dies, and answers throughout: a request that needs the runtime while it is
  away is a 503 `runtime-unavailable` (CLI exit 7), one that needs only the store is answered;
- a write the disk has no room for is a 507 `store-full`, a write another process's lock holds
  up waits (the store's busy timeout) and then is a 503 `store-busy` (CLI exit 8 for both), never
  a 500; nothing stored before is lost;
- once the fault is gone, everything works again on its own: the project converges to exactly
  its goal, no instance doubled, no container unknown to the store.
"""

from __future__ import annotations

import collections
import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.faults.engine import PrivateEngine
from tests.integration.harness import IMAGE, LATE, Daemon, docker, wait_until

EXIT_RUNTIME_UNAVAILABLE = 7  # README's exit codes (the text said 3, which is "daemon unreachable")
EXIT_STORE_UNAVAILABLE = 8
STORE_BUSY_TIMEOUT = 5.0  # mariposa/store/db.py BUSY_TIMEOUT

MANIFEST = f"""\
services:
  web:
    image: {IMAGE}
    command: httpd -f -p 80 -h /
    scale: {{scale}}
    stop:
      timeout: 2
"""


def _write_manifest(tmp: Path, name: str, scale: int) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(MANIFEST.format(scale=scale))
    return path


# ---- probing the control socket ---------------------------------------------------------------

def request(socket: str, method: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON body) of one control-API call; status 0 when the daemon did not answer."""
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://m", timeout=timeout) as c:
            r = c.request(method, path, json=body)
            return r.status_code, (r.json() if r.content else {})
    except httpx.HTTPError as exc:
        return 0, {"error": type(exc).__name__}


class Sampler:
    """Asks the daemon the same questions every `interval` seconds on a thread, and keeps each
    answer with its time, so a test can say what was answered while a fault lasted."""

    def __init__(self, socket: str, paths: list[str], interval: float = 0.2):
        self.socket, self.paths, self.interval = socket, paths, interval
        self.samples: list[tuple[float, str, int, str, float]] = []  # (when, path, status, error kind, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                began = time.monotonic()
                status, body = request(self.socket, "GET", path, timeout=30)
                kind = body.get("error", "") if isinstance(body, dict) else ""
                self.samples.append((began, path, status, kind, time.monotonic() - began))
            self._stop.wait(self.interval)

    def between(self, start: float, end: float) -> dict[str, dict]:
        """Per path: how many answers of each status (and error kind), and the slowest answer."""
        out: dict[str, dict] = {}
        for path in self.paths:
            mine = [s for s in self.samples if s[1] == path and start <= s[0] < end]
            codes = collections.Counter(f"{s[2]} {s[3]}".strip() for s in mine)
            out[path] = {"requests": len(mine), "answers": dict(codes),
                         "slowest_s": round(max((s[4] for s in mine), default=0.0), 3)}
        return out


def _clis(daemon: Daemon, commands: dict[str, tuple[str, ...]]) -> dict[str, subprocess.CompletedProcess]:
    """Several CLI commands at once (a CLI process takes seconds to start on a loaded machine)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {name: pool.submit(daemon.cli, *args, check=False) for name, args in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def _cli_outcome(r: subprocess.CompletedProcess) -> dict:
    return {"exit": r.returncode, "stderr": r.stderr.strip()[-300:]}


def _expect(problems: list[str], ok: bool, what: str) -> None:
    if not ok:
        problems.append(what)


# ---- 1. the Docker Engine restarted under a running project -----------------------------------

def _world(engine: PrivateEngine, daemon: Daemon, project: str) -> dict:
    """What runs, by label, against what the daemon's store knows."""
    assert daemon.owner
    containers = engine.containers(daemon.owner)
    labels = [dict(kv.split("=", 1) for kv in c["Labels"].split(",") if "=" in kv) for c in containers]
    ids = [lab.get("io.mariposa.instance") for lab in labels]
    running = [lab.get("io.mariposa.instance") for c, lab in zip(containers, labels, strict=True)
               if c["State"] == "running"]
    status, known = request(daemon.socket, "GET", f"/v1/projects/{project}/instances")
    known_ids = {i["id"] for i in known} if status == 200 and isinstance(known, list) else set()
    live = {i["id"] for i in known if i["state"] == "running" and not i["retired"]} if known_ids else set()
    return {"containers": len(containers), "running": len(running), "running_ids": set(running),
            "doubled": len(ids) - len(set(ids)), "unknown": len(set(ids) - known_ids) if known_ids else None,
            "live": live}


def dockerd_restart(tmp: Path, outage: float = 3.0, scale: int = 3) -> dict:
    """SIGTERM a private dockerd under a project of `scale` instances, keep it away `outage`
    seconds while asking the daemon things and scaling to `scale + 1`, start it again on the same
    data root, and follow the daemon back to exactly `scale + 1` instances."""
    problems: list[str] = []
    figures: dict = {"scenario": "dockerd restarted", "problems": problems}
    engine = PrivateEngine()
    daemon = Daemon(tmp)
    try:
        figures["engine_start_s"] = round(engine.start(), 2)
        engine.load_image(IMAGE)
        # A long resync: what brings the daemon back must be the runtime's return and its events,
        # not a periodic pass that would hide a stream that never came back.
        daemon.start("--docker-host", engine.host, "--resync", "60")
        daemon.cli("project", "add", "rt", str(_write_manifest(tmp, "rt", scale)), "--wait")
        before = _world(engine, daemon, "rt")
        _expect(problems, before["running"] == scale, f"{before['running']} running before the outage, not {scale}")

        paths = ["/v1/ping", "/v1/projects", "/v1/projects/rt", "/v1/projects/rt/services/web/instances"]
        with Sampler(daemon.socket, paths) as sampler:
            time.sleep(0.5)
            down_at = time.monotonic()
            figures["engine_stop_s"] = round(engine.stop(), 2)
            gone_at = time.monotonic()
            cli = _clis(daemon, {
                "project list": ("project", "list"),
                "service instances": ("-j", "rt", "service", "instances", "web"),
                f"service scale web {scale + 1}": ("-j", "rt", "service", "scale", "web", str(scale + 1)),
            })
            figures["cli_during_outage"] = {k: _cli_outcome(r) for k, r in cli.items()}
            time.sleep(max(0.0, outage - (time.monotonic() - gone_at)))
            restart_at = time.monotonic()
            figures["engine_restart_s"] = round(engine.start(), 2)
            back_at = time.monotonic()
            figures["outage_s"] = round(back_at - down_at, 2)

            def converged():
                w = _world(engine, daemon, "rt")
                return w if w["running"] == scale + 1 and w["live"] == w["running_ids"] else None

            try:
                after = wait_until(converged, timeout=30 + LATE, interval=0.2, what="convergence after dockerd")
                figures["converge_after_return_s"] = round(time.monotonic() - back_at, 2)
            except AssertionError:
                after = _world(engine, daemon, "rt")
                problems.append(f"not converged after the engine returned: {after['running']} running, "
                                f"{len(after['live'])} live in the store, want {scale + 1}")
            time.sleep(0.5)
        figures["during_outage"] = sampler.between(gone_at, restart_at)
        figures["after_return"] = sampler.between(back_at, time.monotonic())

        for path, seen in figures["during_outage"].items():
            _expect(problems, seen["requests"] > 0, f"no request to {path} was made during the outage")
            # what needs the runtime is a 503; the daemon itself and the listing (from the store) answer
            wanted = "200" if path in ("/v1/ping", "/v1/projects") else "503 runtime-unavailable"
            _expect(problems, set(seen["answers"]) <= {wanted},
                    f"{path} during the outage answered {seen['answers']}, want only {wanted}")
        for path, seen in figures["after_return"].items():
            _expect(problems, not any(a.startswith(("0", "500")) for a in seen["answers"]),
                    f"{path} after the return answered {seen['answers']}")
        _expect(problems, cli["project list"].returncode == 0,
                f"project list during the outage exited {cli['project list'].returncode}")
        r = cli["service instances"]
        _expect(problems, r.returncode == EXIT_RUNTIME_UNAVAILABLE and "runtime unavailable" in r.stderr,
                f"service instances during the outage exited {r.returncode} ({r.stderr.strip()[-200:]})")
        r = cli[f"service scale web {scale + 1}"]
        _expect(problems, r.returncode == 0, f"service scale during the outage exited {r.returncode}: {r.stderr}")

        figures["doubled"] = after["doubled"]
        figures["unknown_to_store"] = after["unknown"]
        figures["kept_through_restart"] = len(before["running_ids"] & after["running_ids"])
        _expect(problems, after["doubled"] == 0, f"{after['doubled']} instance ids doubled")
        _expect(problems, after["unknown"] == 0, f"{after['unknown']} containers unknown to the store")

        # The event watcher saw the engine go and come back, and re-subscribed from its cursor.
        # (Not measured here: an instance killed afterwards. Its 'die' event reaches the daemon,
        # but the pass it wakes can still list the container as running, the Engine's listing
        # lags its events, and nothing wakes the reconciler again before the resync; that is so
        # on the host's engine too, without any restart.)
        log = daemon.log.read_text()
        _expect(problems, "runtime event stream lost" in log and "runtime answers again" in log,
                "the daemon's log does not show the event stream lost and re-subscribed")
        _expect(problems, daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited")
    finally:
        daemon.kill()
        engine.close()
    return figures


# ---- 2. the state directory's disk full ------------------------------------------------------

def _fill(path: Path) -> int:
    """Write `path` until the file system says ENOSPC; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def disk_full(tmp: Path, size: str = "8m", tries: int = 50) -> dict:
    """The state directory on a small tmpfs, filled up under a running project: writes fail with
    a named error, reads and the daemon go on, a drift repair waits, and all comes back when
    space does."""
    problems: list[str] = []
    figures: dict = {"scenario": "state dir disk full", "problems": problems, "tmpfs": size}
    daemon = Daemon(tmp)
    daemon.state_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(daemon.state_dir)],
                   check=True)
    filler = daemon.state_dir / "filler"
    try:
        daemon.start()
        daemon.cli("project", "add", "full", str(_write_manifest(tmp, "full", 2)), "--wait")
        before = daemon.json("project", "get", "full")
        events_before = len(daemon.json("events"))
        figures["filler_bytes"] = _fill(filler)
        full_at = time.monotonic()

        # Writes, until one finds no room (SQLite may first reuse WAL pages it already has).
        refused = None
        for n in range(1, tries + 1):
            r = daemon.cli("-j", "full", "service", "scale", "web", str(2 + n % 2), check=False)
            if r.returncode != 0:
                refused = r
                figures["writes_before_refusal"] = n - 1
                break
        if refused is None:
            problems.append(f"{tries} writes on a full disk all succeeded")
        else:
            figures["refused_write"] = _cli_outcome(refused)
            _expect(problems, refused.returncode == EXIT_STORE_UNAVAILABLE and "full" in refused.stderr,
                    f"a write on a full disk exited {refused.returncode}: {refused.stderr.strip()[-300:]}")
        status, body = request(daemon.socket, "POST", "/v1/projects",
                               {"name": "other", "manifest": MANIFEST.format(scale=1)})
        figures["project_add_answer"] = f"{status} {body.get('error', '')}".strip()
        _expect(problems, (status, body.get("error")) == (507, "store-full"),
                f"project add on a full disk answered {status} {body}")

        # Reads go on.
        reads = {" ".join(args): args for args in (("project", "list"), ("project", "get", "full"),
                                                   ("-j", "full", "service", "list"), ("events",))}
        for name, r in _clis(daemon, reads).items():
            _expect(problems, r.returncode == 0, f"'{name}' on a full disk exited {r.returncode}: "
                                                 f"{r.stderr.strip()[-300:]}")

        # Drift while full: the reconciler and the executor must write to repair it, and cannot.
        victim = sorted(c["ID"] for c in daemon.running("web"))[0]
        docker("kill", victim)
        time.sleep(3)
        _expect(problems, daemon.proc is not None and daemon.proc.poll() is None,
                f"the daemon exited on a full disk: {daemon.log.read_text()[-2000:]}")
        status, _ = request(daemon.socket, "GET", "/v1/ping")
        _expect(problems, status == 200, f"ping on a full disk answered {status}")

        # Space returns.
        filler.unlink()
        freed_at = time.monotonic()
        figures["full_s"] = round(freed_at - full_at, 2)
        try:
            wait_until(lambda: daemon.cli("-j", "full", "service", "scale", "web", "3", check=False).returncode == 0,
                       timeout=LATE + 5, what="a write once space returned")
            figures["first_write_after_space_s"] = round(time.monotonic() - freed_at, 2)
        except AssertionError:
            problems.append("no write succeeded after space returned")
        try:
            wait_until(lambda: len(daemon.running("web")) == 3, timeout=30 + LATE, what="3 running after space")
            figures["converge_after_space_s"] = round(time.monotonic() - freed_at, 2)
        except AssertionError:
            problems.append(f"{len(daemon.running('web'))} running after space returned, want 3")
        after = daemon.json("project", "get", "full")
        _expect(problems, after["version"]["manifest"] == before["version"]["manifest"]
                and after["id"] == before["id"], "the project's stored version changed or was lost")
        _expect(problems, len(daemon.json("events")) >= events_before, "events were lost")
        figures["integrity_check"] = _integrity(daemon.state_dir / "mariposa.db")
        _expect(problems, figures["integrity_check"] == "ok", f"integrity_check: {figures['integrity_check']}")
        _expect(problems, daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited")
    finally:
        daemon.cleanup()
        subprocess.run(["umount", "-l", str(daemon.state_dir)], capture_output=True)
    return figures


# ---- 3. the SQLite file locked by another process --------------------------------------------

HOLDER = """\
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


class _Lock:
    """Another process holding the store's write lock (`BEGIN EXCLUSIVE`) for `hold` seconds."""

    def __init__(self, db: Path, hold: float):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(hold)], stdout=subprocess.PIPE,
                                     text=True)

    def __enter__(self) -> _Lock:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "locked":
            raise AssertionError(f"the lock holder did not take the lock: {line!r}")
        self.locked_at = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.proc.wait(timeout=120)


def store_locked(tmp: Path, short: float = 2.0, long: float = 3 * STORE_BUSY_TIMEOUT) -> dict:
    """Another process takes the store's write lock: for `short` seconds (less than the busy
    timeout) a write waits and succeeds; for `long` seconds it is refused as `store-busy`; the
    daemon answers throughout and works once the lock is gone.

    Store calls wait in one line, so a write may first wait out a background call that is itself
    waiting for the lock: it is refused within two busy timeouts (three is the hold, so it is
    refused, not let through by the release)."""
    problems: list[str] = []
    figures: dict = {"scenario": "store locked by another process", "problems": problems,
                     "busy_timeout_s": STORE_BUSY_TIMEOUT}
    daemon = Daemon(tmp)
    db = daemon.state_dir / "mariposa.db"
    try:
        daemon.start("--resync", "60")  # a quiet daemon: few background calls in the store's line
        daemon.cli("project", "add", "locked", str(_write_manifest(tmp, "locked", 1)), "--wait")

        with Sampler(daemon.socket, ["/v1/ping"]) as sampler, _Lock(db, short):
            locked_at = time.monotonic()
            r = daemon.cli("-j", "locked", "service", "scale", "web", "2", check=False)
            figures["short_lock"] = {"hold_s": short, "write": _cli_outcome(r),
                                     "write_s": round(time.monotonic() - locked_at, 2)}
            _expect(problems, r.returncode == 0, f"a write under a {short} s lock exited {r.returncode}: {r.stderr}")
        with Sampler(daemon.socket, ["/v1/ping"]) as long_sampler, _Lock(db, long) as lock:
            # The API call shows the busy timeout; the CLI, started at the same moment, what a user
            # sees: the same refusal, or (when its start took the rest of the lock) a wait and success.
            with ThreadPoolExecutor(1) as pool:
                cli_write = pool.submit(daemon.cli, "-j", "locked", "service", "scale", "web", "3", check=False)
                began = time.monotonic()
                status, body = request(daemon.socket, "POST", "/v1/projects/locked/services/web/scale", {"scale": 3})
                took = time.monotonic() - began
                r = cli_write.result()
                cli_took = time.monotonic() - lock.locked_at
            figures["long_lock"] = {"hold_s": long, "api_answer": f"{status} {body.get('error', '')}".strip(),
                                    "api_s": round(took, 2), "cli_write": _cli_outcome(r), "cli_s": round(cli_took, 2)}
            _expect(problems, (status, body.get("error")) == (503, "store-busy"),
                    f"a write under a {long} s lock answered {status} {body}")
            _expect(problems, STORE_BUSY_TIMEOUT - 0.5 <= took < 2 * STORE_BUSY_TIMEOUT + LATE,
                    f"the refused write took {took:.1f} s (busy timeout {STORE_BUSY_TIMEOUT} s)")
            refused = r.returncode == EXIT_STORE_UNAVAILABLE and "locked" in r.stderr
            waited = r.returncode == 0 and cli_took >= long
            _expect(problems, refused or waited, f"the CLI's write under a {long} s lock exited {r.returncode} "
                                                 f"after {cli_took:.1f} s: {r.stderr.strip()[-300:]}")
        released_at = time.monotonic()
        for s, name in ((sampler, "short"), (long_sampler, "long")):
            seen = s.between(0, released_at)["/v1/ping"]
            figures[f"ping_during_{name}_lock"] = seen
            _expect(problems, set(seen["answers"]) == {"200"}, f"ping under the {name} lock answered {seen}")

        r = daemon.cli("-j", "locked", "service", "scale", "web", "3", check=False)
        figures["write_after_release_s"] = round(time.monotonic() - released_at, 2)
        _expect(problems, r.returncode == 0, f"a write after the lock went exited {r.returncode}: {r.stderr}")
        try:
            wait_until(lambda: len(daemon.running("web")) == 3, timeout=30 + LATE, what="3 running")
        except AssertionError:
            problems.append(f"{len(daemon.running('web'))} running after the lock went, want 3")
        figures["integrity_check"] = _integrity(db)
        _expect(problems, figures["integrity_check"] == "ok", f"integrity_check: {figures['integrity_check']}")
        _expect(problems, daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited")
    finally:
        daemon.cleanup()
    return figures


def run(tmp: Path) -> list[dict]:
    """All three, for the benchmark script."""
    out = []
    for name, scenario in (("dockerd", dockerd_restart), ("disk", disk_full), ("lock", store_locked)):
        where = tmp / name
        where.mkdir(parents=True, exist_ok=True)
        out.append(scenario(where))
    return out


if __name__ == "__main__":  # a quick look: python -m tests.faults.runtime
    import json
    import tempfile

    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(Path(d)), indent=2, default=str))
