"""The remote API on the real thing (issue 18): a daemon with ``--listen`` on a free port and
real TLS, the CLI as a client on another "machine" (its own HOME, known_hosts and working
directory, the daemon's socket out of its reach), with a developer's token.

Users and bindings are rows put in the store before the daemon starts (the policy reads them at
start), so these tests need no command of the user/grant side."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import IMAGE, LATE, MARIPOSA, Daemon, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  web:
    image: {IMAGE}
    env_file: [app.env]
    command: ["sh", "-c", "echo hello $GREETING; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"]
    min_healthy_time: 0
    stop:
      timeout: 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grant(state_dir: Path, user: str, role: str) -> None:
    db = sqlite3.connect(state_dir / "mariposa.db")
    with db:
        db.execute("INSERT INTO users (name, created) VALUES (?, 0)", [user])
        db.execute("INSERT INTO bindings (id, user, effect, role, org, created)"
                   " VALUES (?, ?, 'grant', ?, 'default', 0)", [f"b-{user}", user, role])
    db.close()


class Remote:
    """The CLI on a client machine: its own HOME (known_hosts, profiles), no access to the socket."""

    def __init__(self, tmp: Path, port: int, token: str | None = None):
        self.home = tmp / "client-home"
        self.home.mkdir(exist_ok=True)
        self.port, self.token = port, token

    def env(self, **more: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARIPOSA_") and k != "XDG_CONFIG_HOME"}
        env.update(HOME=str(self.home), MARIPOSA_SOCKET=str(self.home / "no-such.sock"),
                   MARIPOSA_HOST=f"https://127.0.0.1:{self.port}", **more)
        if self.token:
            env["MARIPOSA_TOKEN"] = self.token
        return env

    def cli(self, *args: str, check: bool = True, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        r = subprocess.run([MARIPOSA, *args], capture_output=True, text=True, env=self.env(**env), timeout=180,
                           cwd=cwd)
        if check and r.returncode != 0:
            raise AssertionError(f"mariposa {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([MARIPOSA, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env())

    @property
    def known_hosts(self) -> Path:
        return self.home / ".config" / "mariposa" / "known_hosts"


def collect(proc: subprocess.Popen) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def make_token(daemon: Daemon, user: str, *more: str) -> str:
    out = daemon.cli("token", "create", "--user", user, *more).stdout
    assert "shown once" in out
    return out.split()[-1]


@pytest.fixture
def remote_daemon(tmp_path):
    """A daemon whose store knows alice (developer on default) and victor (viewer), listening on TLS."""
    port = free_port()
    d = Daemon(tmp_path).start()
    d.kill(signal.SIGTERM)
    grant(d.state_dir, "alice", "developer")
    grant(d.state_dir, "victor", "viewer")
    d.start("--listen", f"127.0.0.1:{port}")
    d.port = port  # type: ignore[attr-defined]
    yield d
    d.cleanup()


def test_a_developer_s_token_adds_a_project_from_the_client_s_disk_and_follows_it(remote_daemon, tmp_path):
    d = remote_daemon
    token = make_token(d, "alice", "--name", "laptop")
    client = Remote(tmp_path, d.port, token)

    # the manifest and its env file are on the client's disk, in a directory the CLI is not run from
    work = tmp_path / "client-work"
    work.mkdir()
    (work / "app.yaml").write_text(MANIFEST)
    (work / "app.env").write_text("GREETING=from-the-client\n")
    first = client.cli("project", "add", "remote-p", str(work / "app.yaml"), "--wait", cwd=client.home)
    assert "pinned the certificate of 127.0.0.1" in first.stderr
    assert client.known_hosts.read_text().startswith(f"127.0.0.1:{d.port} ")
    (c,) = d.running("web")
    assert c["State"] == "running"
    listed = json.loads(client.cli("project", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["remote-p"]
    assert "pinned" not in client.cli("project", "list").stderr  # pinned once, said once

    # streams: logs -f and events -f over TLS
    logs = client.popen("-j", "remote-p", "service", "logs", "web", "-f")
    events = client.popen("events", "-f", "--json")
    log_lines, event_lines = collect(logs), collect(events)
    try:
        wait_until(lambda: any("hello from-the-client" in line for line in log_lines), timeout=LATE + 10,
                   what="the first line of the instance through logs -f")
        seen = len([line for line in log_lines if "tick" in line])
        wait_until(lambda: len([line for line in log_lines if "tick" in line]) > seen + 2, timeout=LATE + 10,
                   what="new lines while following")
        client.cli("-j", "remote-p", "service", "scale", "web", "2", "--wait")
        wait_until(lambda: any("scale" in line for line in event_lines), timeout=LATE + 10,
                   what="the scale's event through events -f")
        assert logs.poll() is None and events.poll() is None
    finally:
        for p in (logs, events):
            p.send_signal(signal.SIGINT)
            p.wait(timeout=LATE)

    # the viewer may read, not change
    viewer = Remote(tmp_path, d.port, make_token(d, "victor"))
    assert [p["name"] for p in json.loads(viewer.cli("project", "list", "--json").stdout)] == ["remote-p"]
    refused = viewer.cli("-j", "remote-p", "service", "scale", "web", "1", check=False)
    assert refused.returncode == 1 and "permission denied: service:scale on default.remote-p" in refused.stderr

    # one's own tokens: listed without the token; revoked, the next call gets 401
    mine = json.loads(client.cli("token", "list", "--json").stdout)
    assert [(t["user"], t["name"]) for t in mine] == [("alice", "laptop")] and "token" not in mine[0]
    assert token not in json.dumps(mine)
    refused = client.cli("token", "list", "--user", "victor", check=False)
    assert refused.returncode == 1 and "user:admin" in refused.stderr
    client.cli("token", "revoke", mine[0]["id"])
    after = client.cli("project", "list", check=False)
    assert after.returncode == 9 and "revoked" in after.stderr and token not in after.stderr

    # an expired token: 401 too
    short = make_token(d, "alice", "--expires", "1s")
    time.sleep(1.5)
    expired = Remote(tmp_path, d.port, short).cli("project", "list", check=False)
    assert expired.returncode == 9 and "expired" in expired.stderr

    # the tokens never reach the log, the events or the audit trail
    secret_parts = [t.split("_", 2)[2] for t in (token, short)]
    text = d.log.read_text() + d.cli("events", "--json").stdout
    db = sqlite3.connect(d.state_dir / "mariposa.db")
    text += "\n".join(db.iterdump())
    db.close()
    assert not any(part in text for part in secret_parts)


def test_a_changed_certificate_is_refused_and_bad_tokens_are_rate_limited(remote_daemon, tmp_path):
    import trustme

    d = remote_daemon
    client = Remote(tmp_path, d.port, make_token(d, "alice"))
    client.cli("project", "list")
    pinned = client.known_hosts.read_text().split()[1]
    checks = json.loads(d.cli("doctor", "--state-dir", str(d.state_dir), "--json", check=False).stdout)
    (remote_check,) = [c for c in checks if c["check"] == "remote api"]
    assert pinned in remote_check["detail"]  # what the CLI pinned is what doctor prints on the host

    # the daemon comes back with another certificate: the pinned CLI refuses it
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    d.kill(signal.SIGTERM)
    d.start("--listen", f"127.0.0.1:{d.port}", "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    refused = client.cli("project", "list", check=False)
    assert refused.returncode == 10, refused.stderr
    assert "has changed" in refused.stderr and f"{client.known_hosts}:1" in refused.stderr
    assert pinned in refused.stderr
    from mariposa.api.tls import fingerprint

    assert fingerprint(cert_file) in refused.stderr
    client.known_hosts.write_text("")  # the line removed, as the message says: pinned anew
    assert "pinned" in client.cli("project", "list").stderr

    # bad tokens from one address: 401s, then 429 with Retry-After, the right token included
    url = f"https://127.0.0.1:{d.port}/v1/projects"
    bad = {"Authorization": f"Bearer mrp_000000000000_{'x' * 43}"}
    with httpx.Client(verify=False, timeout=30) as http:
        # a body with a bad token is refused before it is read, and the connection closed
        r = http.post(url, headers=bad, content=b"{" + b" " * 100_000 + b"}")
        assert r.status_code == 401 and r.headers["connection"] == "close" and "www-authenticate" in r.headers
        statuses = [http.get(url, headers=bad).status_code for _ in range(11)]
        assert statuses[:8] == [401] * 8 and statuses[8:] == [429] * 3
        r = http.get(url, headers={"Authorization": f"Bearer {client.token}"})
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
    limited = client.cli("project", "list", check=False)
    assert limited.returncode == 3 and "too many failed requests" in limited.stderr
    assert d.api("/v1/projects") == []  # the socket is not limited
