"""Image pulls against real registries (issue 12): Debian's docker-registry, one open and one
behind htpasswd (tests/registry.py), each holding the test image that the host does not have
under that name. Every image here is under the fixture's unique prefix; each test removes the
local tags it pulled."""

from __future__ import annotations

import json

import pytest

from tests.integration.harness import IMAGE, Daemon, docker
from tests.integration.images import OPENSSL_IMAGE


@pytest.fixture
def regs(registries):
    """The session's registries, with no local tag of theirs before or after the test."""
    for ref in registries.local_tags():
        registries.remove_local(ref)
    yield registries
    for ref in registries.local_tags():
        registries.remove_local(ref)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def image_id(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).strip()


def project_manifest(image: str, pull: str | None = None, command: str = "sleep 3600") -> str:
    return (f"services:\n  web:\n    image: {image}\n    command: {command}\n    min_healthy_time: 0\n"
            + (f"    pull: {pull}\n" if pull else ""))


def test_an_image_only_in_the_registry_is_pulled_on_add_pinned_and_shown_with_wait(daemon: Daemon, regs, tmp_path):
    ref = regs.ref(regs.open_host, "busybox")
    assert docker("images", "-q", ref).strip() == ""  # only in the registry
    r = daemon.cli("project", "add", "p", write(tmp_path, "p.yaml", project_manifest(ref)), "--wait")
    assert f"pull {ref}: v1: Pulling from {regs.prefix}/busybox" in r.stdout, r.stdout
    assert f"pull {ref}: Status: Downloaded newer image for {ref}" in r.stdout, r.stdout
    pinned = daemon.json("-j", "p", "service", "get", "web")["spec"]["image_id"]
    assert pinned == image_id(ref)
    [c] = daemon.running("web")
    assert c["Image"] in (ref, pinned)
    assert any(e["type"] == "image.pull" and ref in e["message"] for e in daemon.json("events"))
    # service add pulls through the same path
    worker = regs.push(IMAGE, regs.ref(regs.open_host, "worker"))
    section = write(tmp_path, "worker.yaml", f"image: {worker}\ncommand: sleep 3600\n")
    r = daemon.cli("-j", "p", "service", "add", "worker", section, "--wait")
    assert f"pull {worker}" in r.stdout
    assert daemon.json("-j", "p", "service", "get", "worker")["spec"]["image_id"] == image_id(worker)


def test_a_failed_pull_refuses_the_update_with_the_registrys_error_and_changes_nothing(daemon: Daemon, regs, tmp_path):
    daemon.cli("project", "add", "p", write(tmp_path, "p.yaml", project_manifest(IMAGE)), "--wait")
    before = [c["ID"] for c in daemon.running("web")]
    missing = regs.ref(regs.open_host, "nope")
    r = daemon.cli("project", "update", "p", write(tmp_path, "q.yaml", project_manifest(missing)), "--wait",
                   check=False)
    assert r.returncode == 1, r
    assert "manifest unknown" in r.stderr and missing.rsplit(":", 1)[0] in r.stderr
    assert "nothing was changed" in r.stderr
    assert [v["seq"] for v in daemon.json("project", "versions", "p")] == [1]
    assert [c["ID"] for c in daemon.running("web")] == before
    # the same without --wait, and for a project that does not exist yet: no project is made
    r = daemon.cli("project", "add", "q", write(tmp_path, "q2.yaml", project_manifest(missing)), check=False)
    assert r.returncode == 1 and "manifest unknown" in r.stderr
    assert [p["name"] for p in daemon.json("project", "list")] == ["p"]


def test_pull_never_refuses_an_image_the_host_lacks(daemon: Daemon, regs, tmp_path):
    ref = regs.ref(regs.open_host, "busybox")
    r = daemon.cli("project", "add", "p", write(tmp_path, "p.yaml", project_manifest(ref, "never")), check=False)
    assert r.returncode == 4 and "'pull: never' forbids pulling it" in r.stderr and ref in r.stderr, r
    assert daemon.json("project", "list") == [] and docker("images", "-q", ref).strip() == ""
    # an image the host has is fine with never
    daemon.cli("project", "add", "p", write(tmp_path, "ok.yaml", project_manifest(IMAGE, "never")), "--wait")


def test_pull_always_picks_up_a_moved_tag_at_the_next_version(daemon: Daemon, regs, tmp_path):
    ref = regs.ref(regs.open_host, "moving")
    regs.push(IMAGE, ref)
    daemon.cli("project", "add", "p", write(tmp_path, "p.yaml", project_manifest(ref, "always")), "--wait")
    first = daemon.json("-j", "p", "service", "get", "web")["spec"]["image_id"]
    assert first == image_id(IMAGE)
    regs.push(OPENSSL_IMAGE, ref)  # the tag moves in the registry...
    docker("tag", IMAGE, ref)  # ...and the host still has the old one under that name
    assert image_id(ref) == first
    daemon.cli("project", "update", "p", write(tmp_path, "p2.yaml", project_manifest(ref, "always", "sleep 3601")),
               "--wait")
    assert daemon.json("-j", "p", "service", "get", "web")["spec"]["image_id"] == image_id(OPENSSL_IMAGE)


def test_htpasswd_registry_refuses_until_login_and_the_password_never_shows(daemon: Daemon, regs, tmp_path):
    ref = regs.ref(regs.auth_host, "busybox")
    host, user, password = regs.auth_host, regs.user, regs.password
    path = write(tmp_path, "p.yaml", project_manifest(ref))
    outputs = []

    def cli(*args: str, **kw):
        r = daemon.cli(*args, **kw)
        outputs.append(r.stdout + r.stderr)
        return r

    r = cli("project", "add", "p", path, "--wait", check=False)
    assert r.returncode == 1 and "no basic auth credentials" in r.stderr, r
    assert daemon.json("project", "list") == []

    r = cli("registry", "login", host, "--username", user, "--password-stdin", input="wrong-" + password, check=False)
    assert r.returncode == 1 and "401 Unauthorized" in r.stderr, r
    assert daemon.json("registry", "list") == []
    # without --password-stdin and without a terminal, the password is read from stdin too
    r = cli("registry", "login", host, "--username", user, input=password + "\n")
    assert r.stdout.strip() == f"logged in to {host} as {user}"
    assert daemon.json("registry", "list") == [{"host": host, "username": user}]
    # kept as a secret, encrypted: nowhere in the state dir in the clear, and no registries.json
    assert not (daemon.state_dir / "registries.json").exists()
    assert not [p for p in daemon.state_dir.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]

    r = cli("project", "add", "p", path, "--wait")
    assert f"pull {ref}" in r.stdout
    assert daemon.json("-j", "p", "service", "get", "web")["spec"]["image_id"] == image_id(ref)
    assert len(daemon.running("web")) == 1

    for args in (("registry", "list"), ("events",), ("project", "get", "p"), ("-j", "p", "service", "get", "web"),
                 ("-j", "p", "service", "list"), ("project", "list"), ("queue", "list")):
        outputs.append(cli(*args).stdout + json.dumps(daemon.json(*args)))
    outputs.append(daemon.log.read_text())
    leaks = [text for text in outputs if password in text]
    assert leaks == [], "the registry password leaked"

    cli("registry", "logout", host)
    assert daemon.json("registry", "list") == []
    r = cli("registry", "logout", host, check=False)
    assert r.returncode == 4 and f"not logged in to {host}" in r.stderr
