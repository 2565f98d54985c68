"""Outgoing webhooks against the real Docker Engine and a real HTTP receiver (a thread on
127.0.0.1 in this test): what a service's life sends, signed, and that a receiver away for 10 s,
with the daemon SIGKILLed meanwhile, still gets every event, once by delivery id."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

SECRET = "hook-secret-7f3a9c"


class Receiver:
    """A webhook receiver: it records every POST (its delivery id, body and whether the
    signature holds) and can go away (its port closed: connections refused) and come back."""

    def __init__(self) -> None:
        self.got: list[dict] = []
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> Receiver:
        got, lock = self.got, self.lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                entry = {"delivery": self.headers["X-Mariposa-Delivery"], "body": json.loads(body),
                         "signed": hmac.compare_digest(self.headers.get("X-Mariposa-Signature", ""), expected),
                         "path": self.path, "at": time.time()}
                with lock:
                    got.append(entry)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def of(self, event: str) -> list[dict]:
        with self.lock:
            return [g for g in self.got if g["body"]["event"] == event]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def add(daemon: Daemon, tmp_path, name: str, text: str) -> None:
    daemon.cli("-j", name, "secret", "set", "webhook_secret", input=SECRET)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    daemon.cli("project", "add", name, str(path), "--wait")


def instance_ids(daemon: Daemon, project: str, service: str) -> set[str]:
    return {i["id"] for i in daemon.json("-j", project, "service", "instances", service)}


def test_start_health_and_down_each_arrive_signed(daemon: Daemon, tmp_path, receiver: Receiver):
    add(daemon, tmp_path, "wh", f"""
webhooks:
  - url: {receiver.url}
    events: [start, health, down]
    secret_from: webhook_secret
services:
  web:
    image: {IMAGE}
    scale: 2
    command: sh -c 'echo ok > /www/health.txt && exec httpd -f -p 80 -h /www'
    healthchecks:
      - type: http
        port: 80
        path: /health.txt
        poll: 0.5
        retries: 2
        timeout: 1
  crashy:
    image: {IMAGE}
    command: sh -c 'sleep 1; exit 3'
    restart: on-failure:1
""")
    web = instance_ids(daemon, "wh", "web")
    wait_until(lambda: {g["body"]["instance"] for g in receiver.of("start")} >= web, timeout=30 + LATE,
               what="a start for each web instance")
    # down: crashy exits, is restarted once (on-failure:1), exits again, and the policy gives up
    [down] = wait_until(lambda: receiver.of("down"), timeout=60 + LATE, what="down when on-failure:1 gives up")
    assert down["body"]["service"] == "crashy" and down["body"]["type"] == "service.down"
    assert "is down" in down["body"]["message"]
    crashy_starts = [g for g in receiver.of("start") if g["body"]["service"] == "crashy"]
    assert [g["body"]["type"] for g in crashy_starts] == ["instance.create", "instance.start"]  # made, restarted once
    # health: a check that fails past its retries
    victim = next(i for i in daemon.json("-j", "wh", "service", "instances", "web") if i["state"] == "running")
    docker("exec", victim["runtime_id"], "rm", "/www/health.txt")
    [health] = wait_until(lambda: receiver.of("health"), timeout=30 + LATE, what="health when a check fails")
    assert health["body"]["instance"] == victim["id"] and health["body"]["type"] == "health.unhealthy"
    assert "404" in health["body"]["message"]
    assert receiver.got and all(g["signed"] and g["path"] == "/hook" for g in receiver.got)
    # from the event's record to the receiver: the dispatcher looks every 0.5 s, then one POST
    lags = sorted(g["at"] - g["body"]["time"] for g in receiver.got)
    print(f"event to receiver: median {lags[len(lags) // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms "
          f"({len(lags)} deliveries)")
    assert lags[-1] <= 1.0 + LATE
    assert all(g["delivery"] == g["body"]["delivery"] and g["body"]["project"] == "wh" for g in receiver.got)
    # what the operator sees: every delivery delivered at the first attempt, the secret nowhere
    rows = daemon.json("-j", "wh", "webhook", "deliveries")
    assert {r["id"] for r in rows} >= {g["delivery"] for g in receiver.got}
    assert all(r["state"] == "delivered" and r["last_status"] == 204 for r in rows)
    table = daemon.cli("-j", "wh", "webhook", "deliveries").stdout
    assert "delivered" in table and receiver.url in table
    for text in (table, json.dumps(rows), daemon.cli("-j", "wh", "events").stdout, daemon.log.read_text()):
        assert SECRET not in text


def test_receiver_away_10_s_and_the_daemon_sigkilled_every_event_arrives_once_by_id(
        daemon: Daemon, tmp_path, receiver: Receiver):
    add(daemon, tmp_path, "away", f"""
services:
  web:
    image: {IMAGE}
    command: sleep 100000
    webhooks:
      - url: {receiver.url}
        events: [start, stop]
        secret_from: webhook_secret
""")
    wait_until(lambda: receiver.of("start"), timeout=30 + LATE, what="the first start")
    receiver.stop()
    away_at = time.monotonic()
    daemon.cli("-j", "away", "service", "scale", "web", "3", "--wait")

    def attempted() -> list[dict]:
        rows = [r for r in daemon.json("-j", "away", "webhook", "deliveries") if r["state"] == "pending"]
        return len(rows) == 2 and all(r["attempts"] >= 1 and r["last_error"] for r in rows) and rows

    failing = wait_until(attempted, timeout=30 + LATE, what="both new deliveries tried and refused")
    assert all("Connect" in r["last_error"] for r in failing), failing
    daemon.kill()  # SIGKILL, with two deliveries pending and retrying
    daemon.start()
    daemon.cli("-j", "away", "service", "scale", "web", "2", "--wait")  # a stop, made after the restart
    time.sleep(max(0.0, 10 - (time.monotonic() - away_at)))
    receiver.start()  # the same port, back after 10 s
    back_at = time.monotonic()

    events = [e for e in daemon.json("-j", "away", "events")
              if e["type"] in ("instance.create", "instance.start", "instance.stop", "instance.exit",
                               "instance.remove")]
    assert len([e for e in events if e["type"] == "instance.create"]) == 3

    def all_arrived() -> bool:
        with receiver.lock:
            return {g["body"]["id"] for g in receiver.got} >= {e["id"] for e in events}

    wait_until(all_arrived, timeout=5 * 60 + LATE, interval=0.5, what="every event at the receiver")
    caught_up = time.monotonic() - back_at
    time.sleep(3)  # anything sent twice would be here by now
    with receiver.lock:
        got = list(receiver.got)
    by_id: dict[str, dict] = {}
    for g in got:  # a repeat is allowed only as a repeat of a delivery id, with the same body
        assert by_id.setdefault(g["delivery"], g)["body"] == g["body"]
    per_event = [g["body"]["id"] for g in by_id.values()]
    assert sorted(per_event) == sorted({e["id"] for e in events}), "each event once, after dropping repeats by id"
    print(f"receiver back: all {len(per_event)} events there {caught_up:.1f} s later; {len(got) - len(by_id)} "
          f"repeats by id; away {back_at - away_at:.1f} s")
    assert all(g["signed"] for g in got)
    rows = daemon.json("-j", "away", "webhook", "deliveries")
    assert {r["state"] for r in rows} == {"delivered"} and {r["id"] for r in rows} == set(by_id)
    retried = [r for r in rows if r["attempts"] > 1]
    assert len(retried) >= 2  # the two that waited out the receiver's absence (and the kill)
    assert daemon.json("-j", "away", "webhook", "deliveries", "--failed") == []
    # redeliver: the same id and body again
    first = rows[-1]
    again = daemon.json("-j", "away", "webhook", "redeliver", first["id"][:10])
    assert again["id"] == first["id"] and again["state"] == "pending"
    wait_until(lambda: sum(g["delivery"] == first["id"] for g in receiver.got) >= 2, timeout=30 + LATE,
               what="the redelivery")
    repeat = [g for g in receiver.got if g["delivery"] == first["id"]]
    assert repeat[0]["body"] == repeat[-1]["body"]
