"""Living on the host: the watched manifest directory, sd_notify, restarts that leave instances
alone, and who may use the control socket. Real daemon process, real Docker."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.harness import IMAGE, LATE, MARIPOSA, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  web:
    image: {IMAGE}
    scale: {{scale}}
    environment:
      COLOR: {{color}}
    command: sh -c 'echo $COLOR > /www/index.html && exec httpd -f -p 80 -h /www'
"""
# A file in the watched directory is applied within a second (inotify); well before the 30 s
# rescan, so waiting this long still proves the inotify path.
APPLIED = 1 + LATE


def versions(daemon: Daemon, project: str) -> int:
    r = daemon.cli("project", "get", project, "--json", check=False)
    return json.loads(r.stdout)["version"]["seq"] if r.returncode == 0 else 0


def colors(daemon: Daemon) -> set[str]:
    found = set()
    for c in daemon.running("web"):
        found.add(docker("exec", c["ID"], "cat", "/www/index.html").strip())
    return found


def settle(daemon: Daemon, project: str, scale: int, color: str) -> None:
    wait_until(lambda: not [t for t in daemon.json("-j", project, "queue", "list") if t["state"] in ("queued", "active")]
               and len(daemon.running("web")) == scale and colors(daemon) == {color},
               timeout=60, what=f"{scale} x {color}")


def test_watched_directory_create_edit_break_and_remove(daemon: Daemon):
    d = daemon.manifest_dir
    target = d / "shop.yaml"
    # create: write a temp file (ignored), then rename it into place
    tmp = d / ".shop.yaml.tmp"
    tmp.write_text(MANIFEST.format(scale=2, color="red"))
    (d / "shop.yaml~").write_text("not: [valid")  # an editor backup: never read
    (d / ".shop.yaml.swp").write_text("\0binary")
    os.rename(tmp, target)
    wait_until(lambda: versions(daemon, "shop") == 1, timeout=APPLIED, interval=0.05, what="the project from the file")
    settle(daemon, "shop", 2, "red")
    project = daemon.json("project", "get", "shop")
    assert project["source"] == str(target) and project["file"]["state"] == "applied"

    # edit via temp file + rename: applied once
    tmp.write_text(MANIFEST.format(scale=2, color="green"))
    os.rename(tmp, target)
    wait_until(lambda: versions(daemon, "shop") == 2, timeout=APPLIED, interval=0.05, what="version 2")
    settle(daemon, "shop", 2, "green")

    # in-place truncate-and-write, in two parts with a pause: the half-written file is never applied
    text = MANIFEST.format(scale=3, color="blue")
    with open(target, "w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        time.sleep(1.5)
        f.write(text[len(text) // 2:])
    wait_until(lambda: versions(daemon, "shop") == 3, timeout=APPLIED, interval=0.05, what="version 3")
    settle(daemon, "shop", 3, "blue")
    time.sleep(1)
    assert versions(daemon, "shop") == 3
    assert not [e for e in daemon.json("-j", "shop", "events") if e["type"] == "manifest.invalid"]

    # a broken edit: the project keeps running its previous version and says why
    target.write_text(MANIFEST.format(scale=3, color="blue").replace("image:", "imgae:"))
    got = wait_until(lambda: (p := daemon.json("project", "get", "shop"))["file"]["state"] == "invalid" and p,
                     timeout=APPLIED, interval=0.05, what="the error to show")
    assert got["version"]["seq"] == 3
    problem = got["file"]["details"][0]
    assert (problem["line"], problem["column"]) == (3, 5) and "did you mean 'image'" in problem["message"]
    shown = daemon.cli("project", "get", "shop").stdout
    assert "NOT APPLIED" in shown and "shop.yaml:3:5" in shown
    assert colors(daemon) == {"blue"} and len(daemon.running("web")) == 3
    assert "manifest file not applied" in daemon.log.read_text()

    # the CLI may not change what the file owns
    other = d.parent / "other.yaml"
    other.write_text(MANIFEST.format(scale=1, color="x"))
    refused = daemon.cli("project", "update", "shop", str(other), check=False)
    assert refused.returncode == 5 and str(target) in refused.stderr

    # removing the file orphans the project; it keeps running
    target.unlink()
    got = wait_until(lambda: (p := daemon.json("project", "get", "shop"))["source_state"] == "orphaned" and p,
                     timeout=APPLIED, interval=0.05, what="the project to be orphaned")
    assert len(daemon.running("web")) == 3
    assert "orphaned" in daemon.cli("project", "list").stdout
    daemon.cli("project", "update", "shop", str(other), "--wait")  # orphaned: the CLI may take over


def test_file_for_a_new_project_with_errors_creates_nothing(daemon: Daemon):
    (daemon.manifest_dir / "bad.yaml").write_text("services:\n  web:\n    scale: many\n")
    r = wait_until(lambda: (r := daemon.cli("project", "get", "bad", check=False)).returncode == 4
                   and "not applied" in r.stderr and r, timeout=APPLIED, what="the file error")
    assert "bad.yaml" in r.stderr
    assert daemon.containers() == []


def _notify_socket(tmp: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp / "notify.sock"))
    sock.settimeout(0.5)
    return sock


def _received(sock: socket.socket, seconds: float, until: tuple[str, ...] = ()) -> list[str]:
    """What arrives within ``seconds``, or until every message of ``until`` has."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        if until and all(m in "\n".join(got) for m in until):
            break
    return got


def test_sd_notify_ready_watchdog_status_and_reload(tmp_path, monkeypatch):
    sock = _notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: the daemon pings every 0.2 s
    config = tmp_path / "mariposa.toml"
    config.write_text('log_level = "info"\nresync = 5\n')
    d = Daemon(tmp_path).start("--config", str(config))
    try:
        messages = _received(sock, 2.0)
        joined = "\n".join(messages)
        assert "READY=1" in joined
        assert joined.count("WATCHDOG=1") >= 4
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
        assert "0 projects" in joined
        config.write_text('log_level = "debug"\nresync = 3\n')
        d.proc.send_signal(signal.SIGHUP)
        after = "\n".join(_received(sock, LATE, until=("RELOADING=1", "READY=1")))
        assert "RELOADING=1" in after and "READY=1" in after
        assert "configuration reloaded" in d.log.read_text()
        config.write_text('bogus = 1\n')
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration not reloaded" in d.log.read_text(), timeout=LATE, what="the reload refused")
        assert d.proc.poll() is None
    finally:
        d.cleanup()
        sock.close()


def test_sigterm_leaves_instances_running_and_restart_adopts_them(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        (tmp_path / "m.yaml").write_text(MANIFEST.format(scale=3, color="red"))
        d.cli("project", "add", "keep", str(tmp_path / "m.yaml"), "--wait")
        before = {c["ID"]: json.loads(docker("inspect", c["ID"]))[0]["State"]["StartedAt"] for c in d.running("web")}
        d.kill(signal.SIGTERM)
        assert d.proc.returncode == 0
        assert {c["ID"] for c in d.running("web")} == set(before)
        d.start()
        time.sleep(4)  # two resync passes
        after = {c["ID"]: json.loads(docker("inspect", c["ID"]))[0]["State"]["StartedAt"] for c in d.running("web")}
        assert after == before  # adopted: same containers, never restarted
        assert not [t for t in d.json("-j", "keep", "queue", "list") if t["author"] == "reconciler"]
    finally:
        d.cleanup()


def test_a_new_package_catalogue_does_not_invalidate_stored_versions(tmp_path):
    """Issue 11 #7: a [packages.x] table replaces the built-in catalogue; the daemon used to
    re-validate stored `package: small` versions at start and crash-loop."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST.format(scale=1, color="red") + "    package: small\n")
    d = Daemon(tmp_path).start()
    try:
        d.cli("project", "add", "sized", str(manifest), "--wait")
        (before,) = d.running("web")
        d.kill(signal.SIGTERM)
        config = tmp_path / "mariposa.toml"
        config.write_text('[packages.tiny]\nmemory = "64M"\ncpus = 0.25\n')
        d.start("--config", str(config))
        time.sleep(4)  # two resync passes
        assert d.proc.poll() is None
        assert [c["ID"] for c in d.running("web")] == [before["ID"]]  # adopted, not replaced
        assert json.loads(docker("inspect", before["ID"]))[0]["HostConfig"]["Memory"] == 256 * 1024**2
        assert d.json("-j", "sized", "service", "get", "web")["spec"]["memory"] == 256 * 1024**2
        r = d.cli("project", "update", "sized", str(manifest), check=False)  # judged by today's catalogue
        assert r.returncode != 0 and "unknown package 'small'" in r.stderr and "tiny" in r.stderr
    finally:
        d.cleanup()


def test_stop_instances_on_exit(tmp_path):
    d = Daemon(tmp_path).start("--stop-instances-on-exit")
    try:
        (tmp_path / "m.yaml").write_text(MANIFEST.format(scale=2, color="red"))
        d.cli("project", "add", "bye", str(tmp_path / "m.yaml"), "--wait")
        d.kill(signal.SIGTERM)
        assert d.running("web") == [] and len(d.containers()) == 2
        d.start()  # without the flag: the restart policy brings them back
        wait_until(lambda: len(d.running("web")) == 2, timeout=30, what="the instances to be back")
    finally:
        d.cleanup()


NOBODY_CLIENT = r"""
import json, socket, sys
body = json.dumps({"name": "fromnobody", "manifest": sys.argv[2]}).encode()
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("DENIED"); sys.exit(0)
s.sendall(b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nContent-Length: "
          + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\r\n", 1)[0].decode() if data else "CLOSED")
"""


def test_socket_refuses_other_users_and_audits_uids(tmp_path):
    group = "mariposa-test"
    if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", "--system", group], check=True)
    gid = grp.getgrnam(group).gr_gid
    public = Path(tempfile.mkdtemp(prefix="mariposa-sock-"))
    public.chmod(0o755)  # only the socket's own mode and group protect it
    d = Daemon(tmp_path)
    d.socket = str(public / "mariposa.sock")
    try:
        d.start("--socket-group", group)
        mode = os.stat(d.socket)
        assert oct(mode.st_mode & 0o777) == "0o660" and mode.st_gid == gid
        manifest = f"services:\n  web:\n    image: {IMAGE}\n    command: sleep 100000\n"

        def as_nobody(*groups: int) -> str:
            extra = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
            r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", *extra,
                                "/usr/bin/python3", "-c", NOBODY_CLIENT, d.socket, manifest],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        assert as_nobody() == "DENIED"
        assert as_nobody(gid) == "HTTP/1.1 403 Forbidden"  # past the group, a uid must be a user's
        d.cli("user", "add", "nobodyuser", "--uid", "65534")
        d.cli("grant", "nobodyuser", "developer", "--org", "default")
        assert as_nobody(gid) == "HTTP/1.1 200 OK"
        d.cli("-j", "fromnobody", "service", "scale", "web", "2", "--wait")
        audit = d.json("-j", "fromnobody", "events", "--type", "project", "--type", "service")
        by_type = {e["type"]: e["author"] for e in audit}
        assert by_type["project.add"] == "nobodyuser"
        assert by_type["service.scale"] == f"uid={os.getuid()}"
    finally:
        d.cleanup()
        shutil.rmtree(public, ignore_errors=True)


def test_events_follow_streams_the_audit_trail(daemon: Daemon, tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST.format(scale=1, color="red"))
    daemon.cli("project", "add", "ev", str(tmp_path / "m.yaml"), "--wait")
    env = {**os.environ, "MARIPOSA_SOCKET": daemon.socket}
    follower = subprocess.Popen([MARIPOSA, "-j", "ev", "events", "--follow", "--json", "--type", "service"],
                                stdout=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1)
        daemon.cli("-j", "ev", "service", "scale", "web", "2")
        line = follower.stdout.readline()
        event = json.loads(line)
        assert event["type"] == "service.scale" and event["author"] == f"uid={os.getuid()}"
        assert "1 -> 2" in event["message"]
    finally:
        follower.terminate()
        follower.wait(timeout=10)
