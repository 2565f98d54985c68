"""Health and supervision against the real Docker Engine: checks, replacement, restart
policies, stop timeouts and what is kept."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import EARLY, IMAGE, LATE, Daemon, docker, wait_until
from tests.integration.images import OPENSSL_IMAGE

pytestmark = pytest.mark.docker

# The back-offs the design schedules (README, "Health and supervision"), written out here so the
# tests check the numbers rather than reuse them.
RESTART_DELAYS = [0.1 * 2**k for k in range(6)]  # restarts after short runs: 0.1 s doubling (to 60 s)
REPLACE_DELAYS = [0.0, 2.0, 4.0, 8.0]  # replacements of failed instances: the first at once, then 2 s doubling

WEB = f"""
services:
  web:
    image: {IMAGE}
    scale: {{scale}}
    command: sh -c 'echo ok > /www/health.txt && exec httpd -f -p 80 -h /www'
    healthchecks:
      - type: http
        port: 80
        path: /health.txt
        poll: 0.5
        retries: 2
        timeout: 1
"""


def add(daemon: Daemon, tmp_path, name: str, text: str, wait: bool = True) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    daemon.cli("project", "add", name, str(path), *(["--wait"] if wait else []))


def health(daemon: Daemon, project: str, service: str) -> dict[str, dict]:
    return {h["instance"]: h for h in daemon.json("-j", project, "service", "health", service)}


def all_healthy(daemon: Daemon, project: str, service: str, count: int):
    found = health(daemon, project, service)
    return len(found) == count and all(h["status"] == "healthy" for h in found.values()) and found


def went_unhealthy(daemon: Daemon, project: str, service: str) -> list[dict]:
    """Unhealthy instances are retired at once, so the event log is where the verdict stays."""
    return wait_until(
        lambda: [e for e in daemon.json("-j", project, "events", "--service", service) if e["type"] == "health.unhealthy"],
        timeout=30, what=f"{service} to go unhealthy",
    )


def went_unhealthy_now(daemon: Daemon, project: str, service: str) -> list[dict]:
    return [e for e in daemon.json("-j", project, "events", "--service", service) if e["type"] == "health.unhealthy"]


def instances(daemon: Daemon, project: str, service: str) -> list[dict]:
    return daemon.json("-j", project, "service", "instances", service)


def test_unhealthy_instance_is_replaced_and_others_untouched(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "hc", WEB.format(scale=3))
    healthy = wait_until(lambda: all_healthy(daemon, "hc", "web", 3), timeout=30, what="3 healthy instances")
    assert all(h["checks"][0]["detail"].startswith("HTTP 200") for h in healthy.values())
    before = {i["id"]: i for i in instances(daemon, "hc", "web")}
    victim = next(iter(before.values()))
    docker("exec", victim["runtime_id"], "rm", "/www/health.txt")  # the check now gets 404

    def replaced():
        now = {i["id"]: i for i in instances(daemon, "hc", "web")}
        serving = [i for i in now.values() if i["state"] == "running" and not i["retired"]]
        return len(serving) == 3 and victim["id"] not in {i["id"] for i in serving} and now

    now = wait_until(replaced, timeout=30, what="the unhealthy instance to be replaced")
    others = set(before) - {victim["id"]}
    assert others <= set(now), "the healthy instances must be left alone"
    kept = now[victim["id"]]  # preservestopped on-failure: a failed instance is kept, stopped
    assert kept["retired"] and kept["state"] == "exited" and "unhealthy" in kept["retired_reason"]
    detail = daemon.json("instance", "get", victim["id"][:10])
    assert detail["retired"] and detail["health"] == "unhealthy" and "404" in detail["health_detail"]
    wait_until(lambda: all_healthy(daemon, "hc", "web", 3), timeout=30, what="the replacement to be healthy")
    events = daemon.cli("-j", "hc", "events").stdout
    assert "is unhealthy" in events and "retired (kept stopped)" in events
    daemon.cli("instance", "rm", victim["id"][:12])
    assert victim["id"] not in {i["id"] for i in instances(daemon, "hc", "web")}


def test_command_check_failing_backs_off(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "cmd", f"""
services:
  worker:
    image: {IMAGE}
    command: sleep 100000
    healthchecks:
      - type: command
        command: test -f /tmp/ready
        poll: 0.5
        retries: 1
        timeout: 2
""")
    assert "exit code 1" in went_unhealthy(daemon, "cmd", "worker")[0]["message"]
    # every replacement fails the same way: the service backs off instead of churning
    svc = wait_until(lambda: (s := daemon.json("-j", "cmd", "service", "get", "worker"))["replace_after"] and s,
                     timeout=30, what="the replacement back-off")
    assert svc["replacements"] >= 1
    text = wait_until(lambda: "backing off" in (out := daemon.cli("-j", "cmd", "service", "get", "worker").stdout) and out,
                      timeout=30, what="'backing off' in service get")
    assert "next attempt in" in text
    # replacement k waits its back-off step after the failure of the instance created before it
    created = wait_until(lambda: len(c := [e["time"] for e in daemon.json("-j", "cmd", "events")
                                           if e["type"] == "instance.create"]) >= 3 and c,
                         timeout=60, what="a second replacement")
    gaps = [b - a for a, b in zip(created, created[1:], strict=False)]
    detect = 0.5 + 2  # the check's poll and timeout
    for gap, delay in zip(gaps, REPLACE_DELAYS, strict=False):
        assert delay - EARLY <= gap <= detect + delay + LATE, (gaps, REPLACE_DELAYS)


def test_tcp_check_on_a_closed_port(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "tcp", f"""
services:
  db:
    image: {IMAGE}
    command: sleep 100000
    healthchecks:
      - type: tcp
        port: 5432
        poll: 0.5
        retries: 1
""")
    assert "connection refused" in went_unhealthy(daemon, "tcp", "db")[0]["message"]


def test_https_check_on_a_self_signed_port(daemon: Daemon, tmp_path):
    server = ("sh -c 'openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=selfsigned -keyout /tmp/k -out /tmp/c "
              "-days 1 2>/dev/null && exec openssl s_server -accept 8443 -cert /tmp/c -key /tmp/k -www -quiet'")
    add(daemon, tmp_path, "tls", f"""
services:
  lenient:
    image: {OPENSSL_IMAGE}
    command: {server}
    healthchecks:
      - type: https
        port: 8443
        tls_verify: false
        poll: 0.5
        retries: 2
        grace: 5
  strict:
    image: {OPENSSL_IMAGE}
    command: {server}
    healthchecks:
      - type: https
        port: 8443
        poll: 0.5
        retries: 2
        grace: 5
""")
    ok = wait_until(lambda: all_healthy(daemon, "tls", "lenient", 1), timeout=30, what="the lenient https check")
    assert next(iter(ok.values()))["checks"][0]["detail"].startswith("HTTP 200")
    assert "certificate" in went_unhealthy(daemon, "tls", "strict")[0]["message"].lower()
    assert not went_unhealthy_now(daemon, "tls", "lenient")


def _starts(daemon: Daemon, project: str) -> list[float]:
    return [e["time"] for e in daemon.json("-j", project, "events") if e["type"] == "instance.start"]


def test_restart_on_failure_3_then_down(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "of", f"""
services:
  job:
    image: {IMAGE}
    command: sh -c 'sleep 0.2; exit 3'
    restart: on-failure:3
""", wait=False)
    svc = wait_until(lambda: (s := daemon.json("-j", "of", "service", "get", "job"))["frozen"] and s,
                     timeout=60, what="the service to go down")
    assert "on-failure:3" in svc["frozen_reason"] and "exit code 3" in svc["frozen_reason"]
    assert len(_starts(daemon, "of")) == 3  # exactly three restarts
    [inst] = instances(daemon, "of", "job")
    assert inst["restarts"] == 3 and inst["retired"] and inst["state"] == "exited"
    out = daemon.cli("-j", "of", "service", "get", "job").stdout
    assert "down:" in out and "will not start it again" in out
    time.sleep(3)
    assert len(_starts(daemon, "of")) == 3 and len(daemon.containers()) == 1  # stays down
    failed = [t for t in daemon.json("-j", "of", "queue", "list") if t["state"] == "failed"]
    assert failed and "restart policy on-failure:3" in failed[0]["message"]


def test_restart_always_is_spaced_by_back_off(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "al", f"""
services:
  flaky:
    image: {IMAGE}
    command: sh -c 'sleep 0.2; exit 1'
    restart: always
""", wait=False)
    run = 0.2
    wait_until(lambda: len(_starts(daemon, "al")) >= 7, timeout=sum(run + d + LATE for d in RESTART_DELAYS),
               what="seven starts")
    starts = _starts(daemon, "al")[:7]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # restart k follows the 0.2 s run, the exit being seen and the k-th step of the back-off; the run
    # covers what `docker start` takes to return (the start is stamped after it), so each gap is at
    # least its step, and on a loaded machine at most the run and the step plus LATE
    for gap, delay in zip(gaps, RESTART_DELAYS, strict=False):
        assert delay - EARLY <= gap <= run + delay + LATE, (gaps, RESTART_DELAYS)
    assert sum(gaps[3:]) > sum(gaps[:3]), gaps  # the schedule grows: 5.6 s against 0.7 s of back-off
    assert len(daemon.containers()) == 1  # restarted in place, never more than its scale


def test_sigkill_of_a_container_is_recovered_quickly(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "kill", WEB.format(scale=1))
    wait_until(lambda: all_healthy(daemon, "kill", "web", 1), timeout=30, what="a healthy instance")
    time.sleep(10.5)  # a run longer than 10 s: the restart back-off starts from zero
    [c] = daemon.running("web")
    t0 = time.monotonic()
    docker("kill", "-s", "KILL", c["ID"])
    wait_until(lambda: daemon.running("web"), timeout=20, interval=0.05, what="the instance to run again")
    took = time.monotonic() - t0
    assert took < LATE, took  # no back-off after a run of 10 s or more: only the machine's reaction
    assert len(daemon.containers()) == 1


def test_stop_timeout_kills_after_about_two_seconds(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "st", f"""
services:
  stubborn:
    image: {IMAGE}
    command: sh -c 'trap "" TERM; while true; do sleep 1; done'
    stop:
      timeout: 2
""")
    t0 = time.monotonic()
    daemon.cli("-j", "st", "service", "stop", "stubborn", "--wait")
    took = time.monotonic() - t0
    assert 2 - EARLY <= took < 2 + LATE, took  # SIGTERM, ignored; SIGKILL after the 2 s timeout
    assert daemon.containers() == []


def test_preservestopped_always_keeps_stopped_instances_until_rm(daemon: Daemon, tmp_path):
    add(daemon, tmp_path, "keep", f"""
services:
  web:
    image: {IMAGE}
    scale: 2
    command: sleep 100000
    stop:
      - preservestopped: always
""")
    daemon.cli("-j", "keep", "service", "stop", "web", "--wait")
    kept = instances(daemon, "keep", "web")
    assert len(kept) == 2 and all(i["retired"] and i["state"] == "exited" for i in kept)
    daemon.cli("-j", "keep", "service", "start", "web", "--wait")
    now = instances(daemon, "keep", "web")
    assert len([i for i in now if i["state"] == "running"]) == 2 and len(now) == 4
    daemon.cli("instance", "rm", *[i["id"][:12] for i in kept])
    assert len(instances(daemon, "keep", "web")) == 2
    listing = daemon.cli("project", "instances", "keep").stdout
    assert "retired" not in listing


def test_unreachable_instance_is_replaced_and_its_late_return_scaled_away(daemon: Daemon, tmp_path):
    """The manifest spec's restart scenario: an instance that cannot be reached (paused here,
    a compute node gone offline in Triton) is replaced; when it comes back the service is over
    its scale, and the scale-down policy removes the surplus."""
    add(daemon, tmp_path, "late", f"""
services:
  web:
    image: {IMAGE}
    scale: 2
    command: sleep 100000
""")
    lost = instances(daemon, "late", "web")[0]["runtime_id"]  # the oldest
    docker("pause", lost)
    wait_until(lambda: len(daemon.running("web")) == 2, timeout=30, what="a replacement")  # paused is not running
    assert len(daemon.containers()) == 3
    docker("unpause", lost)
    wait_until(lambda: len(daemon.containers()) == 2 and len(daemon.running("web")) == 2, timeout=30,
               what="the service back at its scale")
    assert lost not in {c["ID"] for c in daemon.containers()}  # scale down: the oldest goes first
