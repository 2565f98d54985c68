"""``service logs`` and ``instance logs``: the real daemon, the real CLI, the real Docker Engine.

The issue's "must show": ``service logs -f`` shows the lines of a new instance created by
``scale +1`` while it follows (and of a rolling update's replacements)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest

from tests.integration.harness import IMAGE, LATE, MARIPOSA, Daemon, wait_until

pytestmark = pytest.mark.docker

TICKER = f"""
services:
  web:
    image: {IMAGE}
    scale: 2
    environment: ["COLOUR={{colour}}"]
    command: ["sh", "-c", "echo start $COLOUR; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"]
    min_healthy_time: 0
    stop:
      timeout: 1
"""

CHATTY = f"""
services:
  web:
    image: {IMAGE}
    scale: 2
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; exec sleep 3600"]
    min_healthy_time: 0
    stop: {{timeout: 1, preservestopped: always}}
"""

PREFIXED = re.compile(r"^(web-[0-9a-f]{8}) +\| (.*)$")


class Follower:
    """A `mariposa ... logs -f` process whose stdout lines are collected by a thread."""

    def __init__(self, daemon: Daemon, *args: str):
        env = {**os.environ, "MARIPOSA_SOCKET": daemon.socket}
        self.proc = subprocess.Popen([MARIPOSA, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def of(self, name: str) -> list[str]:
        return [m.group(2) for line in list(self.lines) if (m := PREFIXED.match(line)) and m.group(1) == name]

    def names(self) -> set[str]:
        return {m.group(1) for line in list(self.lines) if (m := PREFIXED.match(line))}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=LATE)


def add(daemon: Daemon, tmp_path, text: str, name: str = "p") -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    daemon.cli("project", "add", name, str(path), "--wait")


def web_names(daemon: Daemon) -> dict[str, str]:
    """Each running web instance's short name (what prefixes its lines) by its id."""
    return {i["id"]: f"web-{i['id'][:8]}" for i in daemon.json("-j", "p", "service", "instances", "web")
            if i["state"] == "running" and not i["retired"]}


def test_follow_shows_a_new_instance_of_a_scale_up_and_of_a_rolling_update(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, TICKER.format(colour="blue"))
    first = web_names(daemon)
    assert len(first) == 2
    follower = Follower(daemon, "-j", "p", "service", "logs", "web", "-f", "--tail", "1")
    try:
        wait_until(lambda: all(follower.of(n) for n in first.values()), timeout=LATE + 10,
                   what="lines of both instances")
        # while it follows, a new instance: its lines appear, from its first
        daemon.cli("-j", "p", "service", "scale", "web", "+1", "--wait")
        [new] = set(web_names(daemon).values()) - set(first.values())
        seen = wait_until(lambda: follower.of(new)[:2] if len(follower.of(new)) >= 2 else None, timeout=LATE + 10,
                          what=f"lines of the new instance {new}")
        assert seen == ["start blue", "tick 1"]
        # the old ones go on being followed
        before = {n: len(follower.of(n)) for n in first.values()}
        wait_until(lambda: all(len(follower.of(n)) > before[n] for n in first.values()), timeout=LATE + 5,
                   what="more lines of the first instances")
        # a rolling update's replacements appear as they start
        path = tmp_path / "p.yaml"
        path.write_text(TICKER.format(colour="green").replace("scale: 2", "scale: 3"))
        daemon.cli("project", "update", "p", str(path), "--rolling", "3", "--wait", timeout=300)
        replaced = set(web_names(daemon).values())
        assert len(replaced) == 3 and not replaced & (set(first.values()) | {new})
        wait_until(lambda: all(follower.of(n)[:1] == ["start green"] for n in replaced), timeout=LATE + 10,
                   what="the replacements' first lines")
        assert follower.proc.poll() is None  # still following
    finally:
        code = follower.stop()
    assert code == 130, follower.proc.stderr.read() if follower.proc.stderr else ""
    # every line is "name | text", uncoloured on a pipe; each instance's ticks in order, none twice
    assert all(PREFIXED.match(line) for line in follower.lines), follower.lines[:5]
    for name in follower.names():
        ticks = [int(t.split()[1]) for t in follower.of(name) if t.startswith("tick ")]
        assert ticks == sorted(set(ticks)) and ticks == list(range(ticks[0], ticks[0] + len(ticks))), (name, ticks)


def test_tail_since_timestamps_instance_and_json(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, CHATTY)
    names = web_names(daemon)
    ids = {v: k for k, v in names.items()}
    assert len(names) == 2

    def logs(*args: str) -> list[str]:
        return daemon.cli("-j", "p", "service", "logs", "web", *args).stdout.splitlines()

    every = wait_until(lambda: (out := logs()) and len(out) == 12 and out, timeout=LATE, what="all 12 lines")
    for name in names.values():
        mine = [PREFIXED.match(line).group(2) for line in every if line.startswith(name)]
        assert sorted(mine) == sorted(["line 1", "line 2", "line 3", "line 4", "line 5", "oops"])
        assert [m for m in mine if m.startswith("line")] == [f"line {i}" for i in range(1, 6)]

    tail = logs("--tail", "1")
    assert len(tail) == 2 and {PREFIXED.match(line).group(1) for line in tail} == set(names.values())
    assert logs("--tail", "0") == []
    assert len(logs("--since", "1h")) == 12
    assert logs("--since", "2099-01-01T00:00:00Z") == []
    assert logs("--since", str(int(time.time()) + 3600)) == []

    now = time.time()
    for line in logs("--timestamps"):
        m = PREFIXED.match(line)
        assert m, line
        stamp, _, text = m.group(2).partition(" ")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), line
        assert abs(datetime.fromisoformat(stamp).timestamp() - now) < 300 and text

    one, other = sorted(names.values())
    only = logs("--instance", ids[one][:8])
    assert len(only) == 6 and all(line.startswith(one) for line in only)
    assert daemon.cli("-j", "p", "service", "logs", "web", "--instance", ids[other], "--no-log-prefix",
                      "--tail", "1").stdout in ("line 5\n", "oops\n")

    records = [json.loads(line) for line in logs("--json", "--tail", "1")]
    assert {r["name"] for r in records} == set(names.values()) and all(r["service"] == "web" for r in records)
    assert all(r["instance"] in names and isinstance(r["time"], float) for r in records)

    # one instance, as `docker logs` prints it: no prefix
    out = daemon.cli("instance", "logs", ids[one][:8]).stdout.splitlines()
    assert sorted(out) == sorted(["line 1", "line 2", "line 3", "line 4", "line 5", "oops"])
    assert daemon.cli("instance", "logs", names[ids[one]].replace("web-", "p-web-"), "--tail", "1").returncode == 0


def test_bad_input_gets_a_clear_error(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, CHATTY)
    cases = [
        (("-j", "p", "service", "logs", "web", "--since", "bogus"), 1, "'since' must be a duration (10m, 1h30m"),
        (("-j", "p", "service", "logs", "web", "--tail", "-3"), 1, "'tail' must be a number of lines"),
        (("-j", "p", "service", "logs", "web", "--instance", "nope"), 4, "no instance 'nope' in service web"),
        (("-j", "p", "service", "logs", "nosuch"), 4, "nosuch"),
        (("instance", "logs", "feedface"), 4, "no instance 'feedface'"),
        (("instance", "logs", "feedface", "--since", "10 minutes"), 1, "'since' must be"),
    ]
    for args, code, message in cases:
        r = daemon.cli(*args, check=False)
        assert r.returncode == code and message in r.stderr and r.stdout == "", (args, r.returncode, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_retired_instances_stay_readable_until_removed(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, CHATTY)
    names = web_names(daemon)
    wait_until(lambda: len(daemon.cli("-j", "p", "service", "logs", "web").stdout.splitlines()) == 12,
               timeout=LATE, what="all 12 lines")
    daemon.cli("-j", "p", "service", "stop", "web", "--wait")
    kept = daemon.json("-j", "p", "service", "instances", "web")
    assert len(kept) == 2 and all(i["retired"] for i in kept)
    assert len(daemon.cli("-j", "p", "service", "logs", "web").stdout.splitlines()) == 12
    victim = next(iter(names))
    assert len(daemon.cli("instance", "logs", victim).stdout.splitlines()) == 6
    # following a retired instance prints its lines and ends: it never runs again
    r = daemon.cli("instance", "logs", victim, "-f", timeout=LATE + 10)
    assert len(r.stdout.splitlines()) == 6
    daemon.cli("instance", "rm", victim)
    assert daemon.cli("instance", "logs", victim, check=False).returncode == 4
    assert len(daemon.cli("-j", "p", "service", "logs", "web").stdout.splitlines()) == 6


def test_instance_logs_follow_ends_when_the_instance_is_removed(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, TICKER.format(colour="red"))
    victim = next(iter(web_names(daemon)))
    follower = Follower(daemon, "instance", "logs", victim, "-f")
    wait_until(lambda: len(follower.lines) >= 3, timeout=LATE + 5, what="lines followed")
    assert follower.lines[0] == "start red" and follower.lines[1] == "tick 1"
    daemon.cli("instance", "rm", victim)
    assert follower.proc.wait(timeout=LATE + 5) == 0  # it ended by itself


def test_a_follower_that_goes_away_leaves_the_daemon_as_it_was(daemon: Daemon, tmp_path):
    """Following holds one Docker log stream per instance; a client that hangs up must release
    them all at once (the daemon's own connections to Docker come back to what they were)."""
    add(daemon, tmp_path, TICKER.format(colour="grey"))
    pid = daemon.proc.pid if daemon.proc else 0

    def sockets() -> int:
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except FileNotFoundError:  # closed between the listing and the look: not open now
                pass
        return count

    time.sleep(1)
    baseline = sockets()
    followers = [Follower(daemon, "-j", "p", "service", "logs", "web", "-f") for _ in range(3)]
    wait_until(lambda: all(len(f.names()) == 2 for f in followers), timeout=LATE + 10, what="three followers")
    assert sockets() >= baseline + 3 * 2  # at least one Docker stream per instance of each follower
    for f in followers:
        f.proc.kill()  # no goodbye: the socket just closes
        f.proc.wait(timeout=10)
    wait_until(lambda: sockets() <= baseline + 2, timeout=LATE, what="the followers' sockets released")
    assert daemon.cli("-j", "p", "service", "logs", "web", "--tail", "1").stdout.count("tick") == 2
