"""A project's meta file in the watched directory, on the real thing: dropped with its manifest
it starts the project in one step with the value in the instances' environment; an edit rolls
out a new version (never below scale) with the new value; a bad edit says file:line:column and
changes nothing; a restart imports nothing again."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

APP = f"""services:
  web:
    image: {IMAGE}
    scale: 2
    min_healthy_time: 0.5
    environment:
      GREETING: "{{{{ .meta.greeting }}}}"
    command: sleep 100000
"""

APPLIED = 30 + LATE  # inotify, the quiet period, a version and its start on a loaded machine


def serving(daemon: Daemon) -> list[dict]:
    instances = daemon.api("/v1/projects/app/services/web/instances")
    return [i for i in instances if i["state"] == "running" and not i["retired"]]


def greetings(daemon: Daemon) -> list[str]:
    """GREETING of each running instance (one replaced meanwhile is left out: asked again)."""
    ids = [c["ID"] for c in daemon.running("web")]
    found = json.loads(docker("inspect", *ids, check=False) or "[]") if ids else []
    return sorted(dict(e.split("=", 1) for e in c["Config"]["Env"]).get("GREETING", "") for c in found
                  if c["State"]["Running"])


def test_meta_file_beside_its_manifest(daemon: Daemon):
    d = daemon.manifest_dir
    d.mkdir(exist_ok=True)
    # as `cp app.yaml app.meta.yaml DIR/` would: the manifest first, which needs its meta
    (d / "app.yaml").write_text(APP)
    (d / "app.meta.yaml").write_text("greeting: hi\nunused: 1\n")
    wait_until(lambda: greetings(daemon) == ["hi", "hi"], timeout=APPLIED, what="2 instances greeting hi")
    got = daemon.json("project", "get", "app")
    assert got["version"]["seq"] == 1 and got["file"]["state"] == "applied"
    assert got["meta_file"]["state"] == "applied"
    assert "manifest.invalid" not in {e["type"] for e in daemon.json("-j", "app", "events")}
    imported = [e for e in daemon.json("-j", "app", "events") if e["type"] == "meta.import"]
    assert len(imported) == 2 and {e["author"] for e in imported} == {"file"}

    # an edit: a new version, rolled out one instance at a time, with the new value
    daemon.cli("-j", "app", "meta", "set", "by_hand", "kept")
    before = {c["ID"] for c in daemon.running("web")}
    counts: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                counts.append(len(serving(daemon)))
            except (httpx.HTTPError, json.JSONDecodeError):
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        (d / "app.meta.yaml").write_text("greeting: hello\nunused: 1\n")
        wait_until(lambda: greetings(daemon) == ["hello", "hello"], timeout=APPLIED, what="hello everywhere")
    finally:
        stop.set()
        sampler.join()
    assert len(counts) >= 10 and min(counts) >= 2, counts
    assert not before & {c["ID"] for c in daemon.running("web")}
    versions = daemon.json("project", "versions", "app")
    assert [v["seq"] for v in versions] == [2, 1] and versions[0]["summary"].startswith("meta greeting changed")
    assert versions[0]["author"] == "file"
    meta = {r["key"]: r["value"] for r in daemon.json("-j", "app", "meta", "list")}
    assert meta == {"greeting": "hello", "unused": "1", "by_hand": "kept"}

    # a bad edit: refused with its position, nothing changes
    running = sorted(c["ID"] for c in daemon.running("web"))
    (d / "app.meta.yaml").write_text("greeting: bye\nunused: [1, 2]\n")
    got = wait_until(lambda: (p := daemon.json("project", "get", "app"))["meta_file"]["state"] == "invalid" and p,
                     timeout=APPLIED, what="the meta file refused")
    (problem,) = got["meta_file"]["details"]
    assert (problem["line"], problem["column"]) == (2, 9) and problem["field"] == "unused"
    shown = daemon.cli("project", "get", "app").stdout
    assert "meta file: NOT APPLIED" in shown and f"{d / 'app.meta.yaml'}:2:9: unused:" in shown
    assert any(e["type"] == "manifest.invalid" and "app.meta.yaml" in e["message"]
               for e in daemon.json("-j", "app", "events"))
    time.sleep(1)
    assert daemon.cli("-j", "app", "meta", "get", "greeting").stdout == "hello\n"
    assert [v["seq"] for v in daemon.json("project", "versions", "app")] == [2, 1]
    assert sorted(c["ID"] for c in daemon.running("web")) == running

    # a restart imports nothing again; deleting the file deletes no meta
    (d / "app.meta.yaml").write_text("greeting: hello\nunused: 1\n")
    wait_until(lambda: daemon.json("project", "get", "app")["meta_file"]["state"] == "applied",
               timeout=APPLIED, what="the fixed meta file")
    last = max(e["id"] for e in daemon.json("-j", "app", "events"))
    daemon.kill()
    daemon.start()
    time.sleep(2)
    assert [e for e in daemon.json("-j", "app", "events") if e["id"] > last and e["type"].startswith("meta.")] == []
    assert [v["seq"] for v in daemon.json("project", "versions", "app")] == [2, 1]
    (d / "app.meta.yaml").unlink()
    wait_until(lambda: daemon.json("project", "get", "app")["meta_file"]["state"] == "removed",
               timeout=APPLIED, what="the meta file's removal seen")
    assert daemon.cli("-j", "app", "meta", "get", "greeting").stdout == "hello\n"
    assert sorted(c["ID"] for c in daemon.running("web")) == running
