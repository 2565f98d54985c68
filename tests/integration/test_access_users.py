"""Users, roles and bindings on the real daemon, asked by two real unix users made here with
``useradd`` (and removed after): the kernel's credentials of each connection are what the daemon
judges, so this is the path a person on the host takes.

The two projects are written to the store before the daemon starts (as an upgrade finds them):
what is shown is who may do what, which needs no container, so this module runs with or without
a Docker Engine (its instances, when there is one, are removed with the daemon's)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.harness import IMAGE, Daemon

HELPER = str(Path(__file__).with_name("as_user.py"))
TAG = f"mrp{os.getpid() % 100000}"
MANIFEST = f"services:\n  web:\n    image: {IMAGE}\n    command: sleep 100000\n"


@pytest.fixture(scope="module")
def people():
    """Two unix users in a group of their own, the daemon's socket group."""
    group = f"{TAG}g"
    names = [f"{TAG}a", f"{TAG}b"]
    subprocess.run(["groupadd", group], check=True)
    try:
        for name in names:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", group, name],
                           check=True)
        yield grp.getgrnam(group).gr_gid, {n: pwd.getpwnam(n).pw_uid for n in names}
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", group], check=False)


@pytest.fixture(scope="session")
def docker_engine():
    """Overrides the integration suite's: nothing here needs a container (see above)."""


def seed(state_dir: Path, names: tuple[str, ...]) -> None:
    from mariposa.manifest import parse_manifest
    from mariposa.store import goal as goal_store
    from mariposa.store.db import Store

    state_dir.mkdir(parents=True)
    store = Store(state_dir / "mariposa.db")
    try:
        for name in names:
            spec = parse_manifest(MANIFEST, f"{name}.yaml")
            store.call_sync(goal_store.add_project, name, MANIFEST, spec)
    finally:
        store.close()


@pytest.fixture(scope="module")
def daemon(people):
    gid, _ = people
    home = Path(tempfile.mkdtemp(prefix="mariposa-users-", dir="/tmp"))
    home.chmod(0o711)
    d = Daemon(home)
    seed(d.state_dir, ("pa", "pb"))
    try:
        yield d.start("--socket-group", str(gid), "--socket-mode", "0660")
    finally:
        if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            d.cleanup()
        else:
            d.kill()
            shutil.rmtree(d.run_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def as_user(daemon: Daemon, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "MARIPOSA_SOCKET": daemon.socket, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, HELPER, name, "--", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_users_viewer_operator_deny_can_i_who_can_and_project_move(daemon, people):
    _, uids = people
    alice, bob = sorted(uids)

    # an unmapped uid in socket_group is refused, told the command that maps it
    r = as_user(daemon, alice, "project", "list", "--json")
    assert r.returncode == 1 and f"mariposa user add NAME --uid {uids[alice]}" in r.stderr, r.stderr

    daemon.cli("user", "add", "alice", "--uid", str(uids[alice]))
    daemon.cli("user", "add", "bob", "--uid", str(uids[bob]))
    assert as_user(daemon, alice, "whoami", "--json").stdout and json.loads(
        as_user(daemon, alice, "whoami", "--json").stdout)["user"] == "alice"

    # a viewer lists projects, may not scale; the refusal is in the audit trail
    daemon.cli("grant", "alice", "viewer", "--org", "default")
    r = as_user(daemon, alice, "project", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert {p["name"] for p in json.loads(r.stdout)} == {"pa", "pb"}
    r = as_user(daemon, alice, "-j", "pa", "service", "scale", "web", "2")
    assert r.returncode == 1 and "permission denied: service:scale on default.pa" in r.stderr, r.stderr
    denied = daemon.json("audit", "--denied", "--user", "alice")
    assert any(a["action"] == "service.scale" and a["target"] == "default.pa" and a["uid"] == uids[alice]
               for a in denied), denied

    # an operator on pa scales pa, not pb
    daemon.cli("grant", "bob", "operator", "-j", "pa")
    r = as_user(daemon, bob, "-j", "pa", "service", "scale", "web", "2", "--json")
    assert r.returncode == 0, r.stderr
    r = as_user(daemon, bob, "-j", "pb", "service", "scale", "web", "2")
    assert r.returncode == 1 and "permission denied: service:scale on default.pb" in r.stderr, r.stderr

    # can-i and who-can answer as the bindings say, with exit codes
    r = as_user(daemon, bob, "can-i", "service.scale", "-j", "pa")
    assert r.returncode == 0 and r.stdout.startswith("yes: granted by bob: role operator on default.pa"), r.stdout
    r = as_user(daemon, bob, "can-i", "service:scale", "-j", "pb")
    assert r.returncode == 1 and r.stdout.startswith("no: no binding of bob grants service:scale"), r.stdout
    r = as_user(daemon, alice, "can-i", "service.scale", "-j", "pa", "--as", "bob")
    assert r.returncode == 1 and "user:admin" in r.stderr, r.stderr
    who = daemon.json("who-can", "service.scale", "-j", "pa")
    assert [w["user"] for w in who["allowed"]] == ["root", "bob"] and who["denied"] == []

    # a deny beats the operator grant
    daemon.cli("deny", "bob", "service:scale", "-j", "pa")
    r = as_user(daemon, bob, "-j", "pa", "service", "scale", "web", "1")
    assert r.returncode == 1 and "permission denied: service:scale on default.pa (denied by bob" in r.stderr
    r = as_user(daemon, bob, "can-i", "service.scale", "-j", "pa")
    assert r.returncode == 1 and "denied by bob: deny service:scale on default.pa" in r.stdout, r.stdout
    who = daemon.json("who-can", "service:scale", "-j", "pa")
    assert [w["user"] for w in who["allowed"]] == ["root"] and [d["user"] for d in who["denied"]] == ["bob"]
    assert daemon.cli("can-i", "service.scale", "-j", "pa", "--as", "bob", check=False).returncode == 1
    assert daemon.cli("can-i", "service.scale", "-j", "pa", "--as", "alice", check=False).returncode == 1
    assert daemon.cli("can-i", "project.list", "-j", "pa", "--as", "alice", check=False).returncode == 0

    # project move takes meta and secrets; the source organisation's viewer no longer sees it
    daemon.cli("-j", "pa", "meta", "set", "colour", "blue")
    daemon.cli("-j", "pa", "secret", "set", "token", input="s3cret-value")
    daemon.cli("org", "add", "acme")
    out = daemon.cli("project", "move", "pa", "--to-org", "acme").stdout
    assert "moved from organisation default to acme" in out and "dropped: bob" in out, out
    assert {p["name"]: p["org"] for p in daemon.json("project", "list")} == {"pa": "acme", "pb": "default"}
    assert daemon.json("-j", "pa", "meta", "get", "colour")["value"] == "blue"
    assert [s["name"] for s in daemon.json("-j", "pa", "secret", "list")] == ["token"]
    assert {p["name"] for p in json.loads(as_user(daemon, alice, "project", "list", "--json").stdout)} == {"pb"}
    r = as_user(daemon, alice, "project", "get", "pa")
    assert r.returncode == 1 and "project:read on acme.pa" in r.stderr, r.stderr
    assert [p["name"] for p in daemon.json("-o", "acme", "project", "list")] == ["pa"]
    assert all(t["target"].startswith("acme.pa") for t in daemon.json("-j", "pa", "queue", "list"))
    r = daemon.cli("org", "rm", "acme", check=False)
    assert r.returncode == 5 and "still has projects: pa" in r.stderr
    # the daemon reads the tables at start: a restart keeps who may do what
    gid, _ = people
    daemon.kill()
    daemon.start("--socket-group", str(gid), "--socket-mode", "0660")
    r = as_user(daemon, alice, "project", "list", "--json")
    assert r.returncode == 0 and {p["name"] for p in json.loads(r.stdout)} == {"pb"}, r.stderr
    r = as_user(daemon, bob, "can-i", "service.scale", "-j", "pa")
    assert r.returncode == 1 and "no binding of bob grants service:scale on acme.pa" in r.stdout, r.stdout
