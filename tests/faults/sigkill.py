"""Daemon SIGKILL anywhere: rounds on the real Docker Engine, each killing the daemon at a random
moment of one action, then restarting it on the same state dir and checking the world it comes
back to.

The actions are those the README promises survive a crash: project add, scale up, scale down,
rolling update, canary, revert, health replacement and delete. They run in that order, over and
over, because each leaves the next one's starting point (the add makes the project the delete
takes away; the scale up makes the six the scale down takes back to three), so a round rarely
has to set anything up. Every change goes through the real `mariposa` CLI, as a user makes it,
and a change the CLI acknowledged (exit 0) is one the store must keep, whatever came next.

The kill moment is drawn at random: usually after the acknowledgement, over the time the task it
queued takes (the daemon dies mid-task), sometimes while the request is in flight (the daemon
dies between reading it and answering). A health round breaks an instance's health check instead
of calling the CLI, and kills the daemon while it notices and replaces the instance. Some rounds
kill the restarted daemon once more while it resumes the interrupted work.

After each restart, once the daemon has converged (or the settle time ran out):
- exactly the goal's instances run, by label: the scale of every service, on its goal's spec (a
  canary leaves the rest old), healthy where the service has checks;
- no container or network carries our owner label for a project or service the store does not
  know (an orphan), and nothing stopped is left behind that nobody chose to keep (a stray: the
  issue's defect #17 left four `exited (143) retired`);
- no instance id is on two containers (a duplicate);
- no task is still open (`active` with no runner, or `queued` with nothing taking it: stuck);
- `PRAGMA integrity_check` is `ok`, on the file as the kill left it and after the restart;
- every acknowledged change is in the store.

`run()` returns the figures; `report()` prints them as a table. tests/faults/test_sigkill.py
runs a few rounds in CI, tests/bench/bench_faults.py the long run."""

from __future__ import annotations

import collections
import hashlib
import json
import random
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import IMAGE, LATE, MARIPOSA, Daemon, docker

KINDS = ("add", "scale-up", "scale-down", "rolling-update", "canary", "revert", "health", "delete")

MAIN = "p"  # the project scaled, updated, rolled back and health-checked
SIDE = "a"  # the project added and deleted
SMALL, LARGE = 3, 6

# The main service: httpd with an HTTP check on a file the health round removes. Short polls and
# stop timeouts keep a round to a few seconds.
WEB = f"""services:
  web:
    image: {IMAGE}
    scale: {SMALL}
    min_healthy_time: 0.5
    environment:
      COLOR: {{color}}
    command: sh -c 'echo $COLOR > /www/index.html && echo ok > /www/health.txt && exec httpd -f -p 80 -h /www'
    stop:
      - timeout: 1
    healthchecks:
      - type: http
        port: 80
        path: /health.txt
        poll: 0.3
        retries: 2
        timeout: 2
"""

WORKERS = f"""services:
  worker:
    image: {IMAGE}
    scale: {SMALL}
    command: sleep 100000
    stop:
      - timeout: 1
"""

# Seconds after the acknowledgement over which the kill moment is drawn: about as long as the task
# the action queued takes on a quiet machine, so most kills land in the middle of it.
WINDOW = {"add": 2.5, "scale-up": 2.5, "scale-down": 2.0, "rolling-update": 5.0, "canary": 3.0, "revert": 5.0,
          "health": 3.0, "delete": 2.0}
IN_FLIGHT = 0.2  # the share of kills aimed at the request itself rather than the task after it
AGAIN = 0.2  # the share of rounds whose restarted daemon is killed again while it resumes the work
SETTLE = 60 + 2 * LATE  # a restart converges within this, or the round counts as not converged
# A restart answers within this. Starts of 7-15 s were seen with three suites on the 2-core machine
# (importing, reading the store, an Engine busy with other tests' containers): 20 s was too short.
START = 30 + 2 * LATE
FAILURES = ("duplicates", "orphans", "strays", "unconverged", "lost", "stuck", "integrity")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- what the store and the runtime say ---------------------------------------------------------


def database(state_dir: Path) -> Path:
    """The daemon's SQLite file, found in its state dir rather than assumed."""
    found = sorted(state_dir.glob("*.db"))
    if len(found) != 1:
        raise AssertionError(f"expected one SQLite file in {state_dir}, found {[p.name for p in found]}")
    return found[0]


@dataclass
class Store:
    """The store as a read-only reader sees it."""

    projects: dict[str, dict]  # id -> row
    services: dict[tuple[str, str], dict]  # (project id, name) -> row
    versions: dict[str, list[dict]]  # project id -> rows, by seq
    instances: dict[str, dict]  # id -> row
    open_tasks: list[dict]

    def project(self, name: str) -> dict | None:
        return next((p for p in self.projects.values() if p["name"] == name), None)


def read_store(state_dir: Path) -> Store:
    con = sqlite3.connect(f"file:{database(state_dir)}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        con.execute("BEGIN")  # one snapshot for every read below
        projects = {r["id"]: dict(r) for r in con.execute("SELECT * FROM projects")}
        services = {(r["project_id"], r["name"]): dict(r) for r in con.execute("SELECT * FROM services")}
        versions: dict[str, list[dict]] = collections.defaultdict(list)
        for r in con.execute("SELECT id, project_id, seq, hash FROM versions ORDER BY seq"):
            versions[r["project_id"]].append(dict(r))
        instances = {r["id"]: dict(r) for r in con.execute("SELECT * FROM instances")}
        open_tasks = [dict(r) for r in con.execute("SELECT * FROM tasks WHERE state IN ('queued', 'active')")]
        con.execute("COMMIT")
    finally:
        con.close()
    return Store(projects, services, dict(versions), instances, open_tasks)


def integrity_of(state_dir: Path) -> str:
    con = sqlite3.connect(f"file:{database(state_dir)}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check").fetchall())
    finally:
        con.close()


@dataclass
class Container:
    id: str
    running: bool
    status: str
    labels: dict[str, str]

    @property
    def instance(self) -> str:
        return self.labels.get("io.mariposa.instance", "")

    @property
    def key(self) -> tuple[str, str]:
        return self.labels.get("io.mariposa.project", ""), self.labels.get("io.mariposa.service", "")


def containers(owner: str) -> list[Container]:
    ids = docker("ps", "-aq", "--no-trunc", "--filter", f"label=io.mariposa.owner={owner}").split()
    if not ids:
        return []
    # one inspect for all: a container removed between the listing and it is simply not there
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout
    return [Container(c["Id"], c["State"]["Running"] and not c["State"]["Paused"],
                      f"{c['State']['Status']} ({c['State']['ExitCode']})", c["Config"]["Labels"] or {})
            for c in json.loads(out or "[]")]


def networks(owner: str) -> list[tuple[str, str]]:
    """Our networks: (name, the project id on its label). Docker lets two networks share a
    name, so this is a list."""
    out = docker("network", "ls", "--filter", f"label=io.mariposa.owner={owner}",
                 "--format", '{{.Name}}\t{{.Label "io.mariposa.project"}}')
    return [(name, project) for name, _, project in (line.partition("\t") for line in out.splitlines())]


@dataclass
class World:
    store: Store
    containers: list[Container]
    networks: list[tuple[str, str]]
    goals: dict[tuple[str, str], dict]  # (project id, service) -> the daemon's `service get`


def look(daemon: Daemon) -> World:
    assert daemon.owner is not None
    store = read_store(daemon.state_dir)
    goals = {}
    for (project_id, name), row in store.services.items():
        project = store.projects.get(project_id)
        if project and project["desired"] == "running" and row["desired"] == "running":
            try:
                goals[(project_id, name)] = daemon.api(f"/v1/projects/{project_id}/services/{name}")
            except Exception:  # deleted since the read: the next look sees it gone
                pass
    return World(store, containers(daemon.owner), networks(daemon.owner), goals)


# ---- the checks ---------------------------------------------------------------------------------


def judge(world: World) -> dict[str, list[str]]:
    """Every way this world differs from a converged one, by failure kind."""
    found: dict[str, list[str]] = {k: [] for k in FAILURES}
    store = world.store
    by_instance = collections.Counter(c.instance for c in world.containers)
    found["duplicates"] += [f"instance {i[:12]} is on {n} containers" for i, n in by_instance.items() if n > 1]
    for c in world.containers:
        project = store.projects.get(c.key[0])
        service = store.services.get(c.key)
        if project is None or service is None or service["desired"] == "absent":
            found["orphans"].append(f"container {c.id[:12]} ({c.status}) of {c.key[1]} in project "
                                    f"{c.key[0][:12]}, which the store does not have")
        elif not c.running:
            record = store.instances.get(c.instance) or {}
            if not (record.get("retired") and "unhealthy" in (record.get("retired_reason") or "")):
                found["strays"].append(f"container {c.id[:12]} of {c.key[1]} is {c.status}, "
                                       f"retired={record.get('retired')} ({record.get('retired_reason')})")
    by_name = collections.Counter(name for name, _ in world.networks)
    found["duplicates"] += [f"network {name} is there {n} times" for name, n in by_name.items() if n > 1]
    for name, project_id in world.networks:
        if project_id not in store.projects:
            found["orphans"].append(f"network {name} of project {project_id[:12]}, which the store does not have")
    for (project_id, name), row in store.services.items():
        project = store.projects.get(project_id)
        if project is None:
            continue
        running = [c for c in world.containers if c.key == (project_id, name) and c.running]
        if project["desired"] != "running" or row["desired"] != "running":
            if running and project["desired"] != "deleting":
                found["unconverged"].append(f"{project['name']}/{name} is {row['desired']} but {len(running)} run")
            continue
        if row["frozen"]:
            found["unconverged"].append(f"{project['name']}/{name} is frozen: {row['frozen_reason']}")
        if len(running) != row["scale"]:
            found["unconverged"].append(f"{project['name']}/{name}: {len(running)} running, scale {row['scale']}")
        goal = world.goals.get((project_id, name))
        if goal is None:
            continue
        if not row["keep_stale"]:
            stale = [c for c in running if c.labels.get("io.mariposa.spec-hash") != goal["spec_hash"]]
            if stale:
                found["unconverged"].append(f"{project['name']}/{name}: {len(stale)} running on an old spec")
        if (goal.get("spec") or {}).get("healthchecks"):
            unwell = [c for c in running if (store.instances.get(c.instance) or {}).get("health") != "healthy"]
            if unwell:
                found["unconverged"].append(f"{project['name']}/{name}: {len(unwell)} running but not healthy yet")
    for p in store.projects.values():
        if p["desired"] == "deleting":
            found["unconverged"].append(f"project {p['name']} is still being deleted")
    found["stuck"] += [f"task {t['id'][:12]} {t['kind']} {t['project_name']}/{t['service']} is {t['state']}"
                       for t in store.open_tasks]
    return found


def main_id(store: Store) -> str:
    project = store.project(MAIN)
    assert project is not None, "the main project is made before any round needs it"
    return project["id"]


# ---- a round --------------------------------------------------------------------------------------


@dataclass
class Change:
    """A change the CLI acknowledged, and how to find it in the store (and, for a canary, in
    what runs)."""

    kind: str
    what: str
    holds: Callable[[World], bool]
    version: str | None = None  # the hash of the version it made, for the main project


@dataclass
class Rounds:
    daemon: Daemon
    tmp: Path
    rng: random.Random
    colors: int = 0
    kills: collections.Counter = field(default_factory=collections.Counter)
    acknowledged: collections.Counter = field(default_factory=collections.Counter)
    in_flight: int = 0
    again: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    cli_seconds: list[float] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)  # from the restart to answering
    converge_seconds: list[float] = field(default_factory=list)  # from answering to converged
    progress: Callable[[str], None] | None = None  # told one line a round (a long run shows where it is)

    # -- set-up that is not killed: only when the previous round did not leave the starting point

    def manifest(self, text: str) -> tuple[str, str]:
        self.colors += 1
        path = self.tmp / f"m{self.colors}.yaml"
        path.write_text(text)
        return str(path), text

    def web(self) -> tuple[str, str]:
        return self.manifest(WEB.format(color=f"c{self.colors + 1}"))

    def scale_of(self, store: Store) -> int | None:
        project = store.project(MAIN)
        row = store.services.get((project["id"], "web")) if project else None
        return row["scale"] if row else None

    def prepare(self, kind: str) -> Store:
        """Bring the world to the round's starting point, with waited-for CLI calls nobody kills;
        the store as it is then."""
        d = self.daemon
        if read_store(d.state_dir).project(MAIN) is None:
            d.cli("project", "add", MAIN, self.web()[0], "--wait")
        store = read_store(d.state_dir)
        want = LARGE if kind == "scale-down" else SMALL
        if kind not in ("add", "delete") and self.scale_of(store) != want:
            d.cli("-j", MAIN, "service", "scale", "web", str(want), "--wait")
        if kind == "revert" and len(store.versions[main_id(store)]) < 2:
            d.cli("project", "update", MAIN, self.web()[0], "--wait")
        if kind == "add" and store.project(SIDE) is not None:
            d.cli("project", "delete", SIDE, "--wait")
        if kind == "delete" and store.project(SIDE) is None:
            d.cli("project", "add", SIDE, self.manifest(WORKERS)[0], "--wait")
        return read_store(d.state_dir)

    # -- the action, and what its acknowledgement promises

    def action(self, kind: str, store: Store) -> tuple[list[str], Callable[[str], Change]]:
        """The CLI call, and a reader of its answer that returns the change it promises."""
        if kind == "add":
            path, text = self.manifest(WORKERS)
            return ["project", "add", SIDE, path], lambda out: Change(kind, f"project {SIDE} added", lambda w: (
                (p := w.store.project(SIDE)) is not None and w.store.versions[p["id"]][-1]["hash"] == text_hash(text)))
        if kind == "delete":
            return ["project", "delete", SIDE], lambda out: Change(kind, f"project {SIDE} deleted",
                                                                   lambda w: w.store.project(SIDE) is None)
        if kind in ("scale-up", "scale-down"):
            n = LARGE if kind == "scale-up" else SMALL
            return (["-j", MAIN, "service", "scale", "web", str(n)],
                    lambda out: Change(kind, f"web scaled to {n}", lambda w: self.scale_of(w.store) == n))
        if kind in ("rolling-update", "canary"):
            path, text = self.web()
            extra = ["--rolling", str(self.rng.choice((1, 2)))] if kind == "rolling-update" else ["--canary", "1"]

            def current(w: World) -> bool:
                p = w.store.project(MAIN)
                if p is None or not any(v["id"] == p["current_version"] and v["hash"] == text_hash(text)
                                        for v in w.store.versions[p["id"]]):
                    return False
                if kind == "canary":  # and exactly one instance was replaced, killed or not
                    goal = w.goals.get((p["id"], "web")) or {}
                    new = [c for c in w.containers if c.running and c.key == (p["id"], "web")
                           and c.labels.get("io.mariposa.spec-hash") == goal.get("spec_hash")]
                    return len(new) == 1
                return True

            what = f"version with {text.split('COLOR: ')[1].split()[0]} current" + (
                ", one instance on it" if kind == "canary" else "")
            return ["project", "update", MAIN, path, *extra], lambda out: Change(kind, what, current, text_hash(text))
        if kind == "revert":
            versions = store.versions[main_id(store)]
            target = versions[-2] if len(versions) < 3 else versions[-3]

            def reverted(out: str) -> Change:
                seq = int(re.search(r"now at version (\d+)", out).group(1))  # type: ignore[union-attr]

                def holds(w: World) -> bool:
                    p = w.store.project(MAIN)
                    now = (next((v for v in w.store.versions[p["id"]] if v["id"] == p["current_version"]), None)
                           if p else None)
                    return now is not None and now["seq"] == seq and now["hash"] == target["hash"]

                return Change(kind, f"version {seq} = version {target['seq']} current", holds, target["hash"])

            return ["project", "revert", MAIN, str(target["seq"])], reverted
        raise ValueError(kind)

    def break_health(self) -> str:
        """A health round's fault: one serving instance's check file goes (HTTP 404 from then on)."""
        project = read_store(self.daemon.state_dir).project(MAIN)
        assert project is not None
        victim = next(c for c in containers(self.daemon.owner or "")
                      if c.running and c.key == (project["id"], "web"))
        docker("exec", victim.id, "rm", "/www/health.txt")
        return victim.id

    # -- one round

    def round(self, number: int, kind: str) -> None:
        d = self.daemon
        store = self.prepare(kind)
        victim, change = None, None
        if kind == "health":
            victim = self.break_health()
            time.sleep(self.rng.uniform(0, WINDOW[kind]))
            d.kill()
        else:
            argv, promise = self.action(kind, store)
            started = time.monotonic()
            cli = subprocess.Popen([MARIPOSA, "--socket", d.socket, *argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            if self.rng.random() < IN_FLIGHT:
                typical = sorted(self.cli_seconds)[len(self.cli_seconds) // 2] if self.cli_seconds else 0.8
                time.sleep(self.rng.uniform(0.6, 1.05) * typical)  # the request goes after the CLI's start-up
                if cli.poll() is None:  # still waiting for its answer
                    self.in_flight += 1
                d.kill()
            else:
                if cli.wait(timeout=120) == 0:
                    self.cli_seconds.append(time.monotonic() - started)  # how long an answer takes
                time.sleep(self.rng.uniform(0, WINDOW[kind]))
                d.kill()
            out, _ = cli.communicate(timeout=120)
            if cli.returncode == 0:
                self.acknowledged[kind] += 1
                change = promise(out)
                self.changes.append(change)
        self.kills[kind] += 1
        self.check_integrity(number, kind, "the kill")
        restarted = time.monotonic()
        d.start(timeout=START)
        answering = time.monotonic()
        if self.rng.random() < AGAIN:
            # killed again while it resumes what the first kill interrupted
            self.again += 1
            time.sleep(self.rng.uniform(0, 2.0))
            d.kill()
            self.check_integrity(number, kind, "the second kill")
            d.start(timeout=START)
        world = self.settle(victim)
        self.restart_seconds.append(answering - restarted)
        self.converge_seconds.append(time.monotonic() - answering)
        found = judge(world)
        if (after := integrity_of(d.state_dir)) != "ok":
            found["integrity"].append(f"integrity_check after the restart: {after}")
        if change is not None and not change.holds(world):
            found["lost"].append(f"acknowledged '{change.what}' is not in the store")
        for failure, what in found.items():
            self.problem(number, kind, failure, what)
        if self.progress:
            asked = "a broken health check" if kind == "health" else (
                "acknowledged" if change else "not acknowledged")
            self.progress(f"round {number} {kind}: {asked}, "
                          f"restart {self.restart_seconds[-1]:.1f} s, converged {self.converge_seconds[-1]:.1f} s, "
                          + (", ".join(f"{k} {len(v)}" for k, v in found.items() if v) or "all checks hold"))
        if victim is not None:
            kept = [c for c in world.containers if c.id == victim and not c.running]
            if kept:
                d.cli("instance", "rm", kept[0].instance[:12])

    def check_integrity(self, number: int, kind: str, what: str) -> None:
        crashed = integrity_of(self.daemon.state_dir)
        if crashed != "ok":
            self.problem(number, kind, "integrity", [f"integrity_check of the file as {what} left it: {crashed}"])

    def settle(self, victim: str | None) -> World:
        """Look until the world is converged (and a broken instance is out), or SETTLE ran out."""
        deadline = time.monotonic() + SETTLE
        while True:
            world = look(self.daemon)
            converged = not any(judge(world).values())
            if victim is not None and any(c.id == victim and c.running for c in world.containers):
                converged = False
            if converged or time.monotonic() > deadline:
                return world
            time.sleep(0.3)

    def problem(self, number: int, kind: str, failure: str, what: list[str]) -> None:
        if what:
            self.failures[failure] += len(what)
            self.problems += [f"round {number} ({kind}): {failure}: {w}" for w in what]

    def final_check(self) -> None:
        """Every acknowledged version is still there at the end: versions are immutable, so no
        later round may have lost one (each change was also checked in its own round)."""
        store = read_store(self.daemon.state_dir)
        project = store.project(MAIN)
        hashes = {v["hash"] for v in store.versions.get(project["id"], [])} if project else set()
        for change in self.changes:
            if change.version and change.version not in hashes:
                self.problem(0, change.kind, "lost", [f"acknowledged '{change.what}' is no longer in the store"])


def run(rounds: int, tmp: Path, seed: int | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """`rounds` rounds of SIGKILL during an action, on real Docker, on one daemon's state dir
    under `tmp`. Returns the figures: rounds, kills per action kind, acknowledged changes, kills
    aimed at a request in flight, each failure count (all 0 when nothing is wrong), the problems
    found, the seed (to replay a run) and the seconds taken."""
    seed = random.randrange(2**32) if seed is None else seed
    started = time.monotonic()
    tmp.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(tmp)
    state = Rounds(daemon, tmp, random.Random(seed), progress=progress)
    try:
        daemon.start(timeout=START)
        for number in range(rounds):
            state.round(number + 1, KINDS[number % len(KINDS)])
        state.final_check()
    finally:
        daemon.cleanup()
    return {
        "rounds": rounds, "seed": seed, "kills": {k: state.kills[k] for k in KINDS},
        "acknowledged": sum(state.acknowledged.values()), "in_flight": state.in_flight,
        "killed_again": state.again,
        **{k: state.failures[k] for k in FAILURES}, "problems": state.problems,
        "restart": _spread(state.restart_seconds), "converge": _spread(state.converge_seconds),
        "seconds": round(time.monotonic() - started, 1),
    }


def _spread(seconds: list[float]) -> dict:
    ordered = sorted(seconds) or [0.0]
    return {"median": round(ordered[len(ordered) // 2], 1), "max": round(ordered[-1], 1)}


def report(figures: dict) -> str:
    """The figures as a short table."""
    lines = [f"SIGKILL anywhere: {figures['rounds']} rounds in {figures['seconds']:.0f} s (seed {figures['seed']}), "
             f"{figures['acknowledged']} acknowledged changes, {figures['in_flight']} kills with a request in flight, "
             f"{figures['killed_again']} restarts killed again"]
    lines.append("  " + "  ".join(f"{k} {n}" for k, n in figures["kills"].items()))
    lines.append("  " + "  ".join(f"{k} {figures[k]}" for k in FAILURES))
    lines.append(f"  restart to answering: median {figures['restart']['median']} s, max {figures['restart']['max']} s; "
                 f"then converged: median {figures['converge']['median']} s, max {figures['converge']['max']} s")
    lines += [f"  {p}" for p in figures["problems"][:20]]
    return "\n".join(lines)
