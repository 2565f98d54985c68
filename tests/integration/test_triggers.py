"""Public triggers on the real Engine (issue 16): the daemon's TCP listener from its configuration
file (``triggers_listen``, port 0: the kernel's choice, shown in the URLs), `curl -X POST` on a
revealed URL starts a run (trigger ``url``), a wrong token gets the unknown path's 404, 100 wrong
tokens from one address are refused (429, right tokens too) while other addresses go on, a rotated
token's old URL is a 404, scale/stop/start triggers act on a continuous service, and no token is in
`project get`, the events or the daemon's log.

The delay from a POST to its run's container started is printed (the figure: run with -s).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  job:
    service_type: event
    image: {IMAGE}
    command: sh -c 'echo ran by a trigger; sleep 1'
    triggers:
      - name: deploy-hook
        action: run
  web:
    image: {IMAGE}
    command: sleep 3600
    triggers:
      - {{name: web-up, action: scale, scale: "+1"}}
      - {{name: web-stop, action: stop}}
      - {{name: web-start, action: start}}
"""


@pytest.fixture
def daemon(tmp_path):
    config = tmp_path / "mariposa.toml"
    config.write_text('triggers_listen = "127.0.0.1:0"\n')
    d = Daemon(tmp_path).start("--config", str(config))
    yield d
    d.cleanup()


def curl(url: str, *extra: str) -> tuple[int, dict]:
    """`curl -X POST URL`: (status, JSON body)."""
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-w", "\n%{http_code}", *extra, url],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def post_from(source: str, url: str) -> int:
    """A POST from a loopback address of our choosing (the failure limit is per address)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", parts.path)
        return conn.getresponse().status
    finally:
        conn.close()


def runs(d: Daemon) -> list[dict]:
    return d.json("-j", "t", "service", "runs", "job", "--limit", "100")


def test_public_triggers(daemon: Daemon, tmp_path):
    manifest = tmp_path / "t.yaml"
    manifest.write_text(MANIFEST)
    daemon.cli("project", "add", "t", str(manifest), "--wait")

    masked = daemon.json("-j", "t", "trigger", "list")
    assert {r["name"] for r in masked} == {"deploy-hook", "web-up", "web-stop", "web-start"}
    assert all(r["url"].startswith("http://127.0.0.1:") and r["url"].endswith("/v1/triggers/<hidden>")
               and not r["revealed"] for r in masked)
    table = daemon.cli("-j", "t", "trigger", "list").stdout
    assert table.split()[:4] == ["NAME", "SERVICE", "ACTION", "URL"] and "scale +1" in table, table
    assert table.count("/v1/triggers/<hidden>") == 4
    shown = {r["name"]: r["url"] for r in daemon.json("-j", "t", "trigger", "list", "--reveal")}
    tokens = {name: url.rsplit("/", 1)[1] for name, url in shown.items()}
    assert all(len(t) == 43 for t in tokens.values())
    again = daemon.cli("-j", "t", "trigger", "list", "--reveal").stdout  # once only
    assert "<hidden>" in again and not any(t in again for t in tokens.values())

    # curl -X POST on the URL: a run, with trigger url, and its output kept
    before = time.time()
    status, body = curl(shown["deploy-hook"])
    assert status == 202 and set(body) == {"run"}, body
    run = wait_until(lambda: next((r for r in runs(daemon) if r["id"] == body["run"] and r["started"]), None),
                     timeout=30 + LATE, what="the triggered run to start")
    print(f"\ntrigger POST -> run started: {run['started'] - before:.3f} s")
    assert run["trigger"] == "url"
    done = wait_until(lambda: next((r for r in runs(daemon) if r["id"] == body["run"]
                                    and r["state"] == "succeeded"), None), timeout=30 + LATE, what="the run to end")
    assert done["exit_code"] == 0
    assert "ran by a trigger" in daemon.cli("run", "logs", body["run"]).stdout
    got = daemon.json("run", "get", body["run"])
    assert got["author"] == "trigger:deploy-hook"

    # a wrong token: the 404 of any unknown path, byte for byte
    base = shown["deploy-hook"].rsplit("/v1/", 1)[0]
    wrong = curl(base + "/v1/triggers/" + "A" * 43)
    assert wrong == curl(base + "/v1/projects") == (404, {"error": "not-found", "message": "not found"})

    # rotate: the old URL is a 404 at once, the new one runs
    rotated = daemon.cli("-j", "t", "trigger", "rotate", "deploy-hook").stdout.strip()
    assert rotated.startswith(base + "/v1/triggers/") and rotated != shown["deploy-hook"]
    assert curl(shown["deploy-hook"])[0] == 404
    status, body2 = curl(rotated)
    assert status == 202 and body2["run"] != body["run"]
    tokens["rotated"] = rotated.rsplit("/", 1)[1]

    # scale, stop and start a continuous service
    assert len(daemon.running("web")) == 1
    status, scaled = curl(shown["web-up"])
    assert status == 202 and set(scaled) == {"task"}
    wait_until(lambda: len(daemon.running("web")) == 2, timeout=30 + LATE, what="web at 2")
    assert curl(shown["web-stop"])[0] == 202
    wait_until(lambda: not daemon.running("web"), timeout=30 + LATE, what="web stopped")
    assert curl(shown["web-start"])[0] == 202
    wait_until(lambda: len(daemon.running("web")) == 2, timeout=30 + LATE, what="web started at its scale")
    authors = {e["author"] for e in daemon.json("-j", "t", "events")}
    assert {"trigger:web-up", "trigger:web-stop", "trigger:web-start"} <= authors

    # 100 wrong tokens from one address: refused from the 10th failure on (right tokens too)
    statuses = [post_from("127.0.0.5", base + "/v1/triggers/" + f"{i:043d}") for i in range(100)]
    assert statuses[:9] == [404] * 9 and statuses[9] == 404 and set(statuses[10:]) == {429}, statuses
    assert post_from("127.0.0.5", rotated) == 429
    assert post_from("127.0.0.6", shown["web-up"]) == 202  # another address is not held back

    # the tokens are nowhere but in the answers that showed them
    seen = (daemon.cli("project", "get", "t", "--json").stdout + daemon.cli("-j", "t", "events", "--json").stdout
            + daemon.cli("-j", "t", "trigger", "list", "--json").stdout + daemon.log.read_text())
    for token in tokens.values():
        assert token not in seen

    # bad requests never take the listener down
    parts = urlsplit(base)
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"\x16\x03\x01" + bytes(range(256)),
                    b"POST /v1/triggers/x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n", b""):
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(65536)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    assert post_from("127.0.0.7", rotated) == 202

    # the project deleted: its URLs go with it
    daemon.cli("project", "delete", "t", "--wait")
    assert post_from("127.0.0.8", rotated) == 404
