"""Versions and rollouts against the real Docker Engine: rolling updates that never drop
below scale, canaries, failed rollouts and reverts, pinned image ids, diff and --if-version."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request

import httpx
import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

WEB = """services:
  web:
    image: {image}
    scale: {scale}
    min_healthy_time: 1
    environment:
      COLOR: {color}
    command: sh -c 'echo $COLOR > /www/index.html && exec httpd -f -p 80 -h /www'
    healthchecks:
      - type: http
        port: 80
        poll: 0.3
        retries: 2
        timeout: 2
"""


def manifest(tmp_path, name: str, color: str, scale: int = 4, image: str = IMAGE) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(WEB.format(image=image, scale=scale, color=color))
    return str(path)


def serving(daemon: Daemon) -> list[dict]:
    instances = daemon.api("/v1/projects/ro/services/web/instances")  # what `service instances --json` prints
    return [i for i in instances if i["state"] == "running" and not i["retired"]]


def answer(address: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=LATE) as resp:  # slow is not down
            return resp.read().decode().strip()
    except OSError:
        return None


def versions_of(daemon: Daemon) -> dict[str, int]:
    seq = {v["id"]: v["seq"] for v in daemon.json("project", "versions", "ro")}
    found: dict[str, int] = {}
    for inst in serving(daemon):
        found[inst["id"]] = seq[inst["version_id"]]
    return found


def test_rolling_update_keeps_every_instance_answering(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "ro", manifest(tmp_path, "v1", "blue"), "--wait")
    wait_until(lambda: len(serving(daemon)) == 4, timeout=30, what="4 instances")
    low, total = [], []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            try:
                addrs = [i["address"] for i in serving(daemon)]
            except (AssertionError, json.JSONDecodeError, subprocess.SubprocessError, httpx.HTTPError):
                continue
            low.append(sum(1 for a in addrs if answer(a)))
            total.append(len(daemon.running("web")))
            stop.wait(0.1)  # sample, do not hammer: a busy loop here slowed the rollout it watches

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        out = daemon.cli("project", "update", "ro", manifest(tmp_path, "v2", "green"), "--rolling", "2", "--wait").stdout
    finally:
        stop.set()
        prober.join()
    assert "done" in out and "to do" in out  # --wait followed the task's progress
    assert len(low) >= 5 and min(low) >= 4, low
    final = serving(daemon)
    assert len(final) == 4 and {answer(i["address"]) for i in final} == {"green"}
    assert max(v for v in versions_of(daemon).values()) == 2 and set(versions_of(daemon).values()) == {2}
    assert max(total) <= 4 + 2, total  # never more than scale + rolling in all


def test_canary_then_the_rest(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "ro", manifest(tmp_path, "v1", "blue"), "--wait")
    daemon.cli("project", "update", "ro", manifest(tmp_path, "v2", "green"), "--canary", "1", "--wait")
    assert sorted(versions_of(daemon).values()) == [1, 1, 1, 2]
    time.sleep(3)  # the reconciler leaves the rest alone
    assert sorted(versions_of(daemon).values()) == [1, 1, 1, 2]
    daemon.cli("-j", "ro", "service", "reprovision", "web", "--count", "2", "--wait")
    assert sorted(versions_of(daemon).values()) == [1, 2, 2, 2]
    canaries = {i for i, v in versions_of(daemon).items() if v == 2}
    daemon.cli("-j", "ro", "service", "reprovision", "web", "--wait")
    now = versions_of(daemon)
    assert sorted(now.values()) == [2, 2, 2, 2]
    assert canaries <= set(now), "the rest are the old ones: instances already current stay"
    svc = daemon.json("-j", "ro", "service", "versions", "web")
    assert [r["version"] for r in svc] == [2, 1] and svc[0]["changed"]


def test_failed_rollout_stops_old_keep_serving_then_revert(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "ro", manifest(tmp_path, "v1", "blue"), "--wait")
    bad = (tmp_path / "bad.yaml")
    bad.write_text(WEB.format(image=IMAGE, scale=4, color="red").replace(
        "command: sh -c 'echo $COLOR > /www/index.html && exec httpd -f -p 80 -h /www'", "command: sh -c 'exit 7'"))
    r = daemon.cli("project", "update", "ro", str(bad), "--wait", check=False)
    assert r.returncode == 6 and "rollout stopped" in r.stderr and "exit code 7" in r.stderr
    old = serving(daemon)
    assert len(old) == 4 and {answer(i["address"]) for i in old} == {"blue"}
    tasks = daemon.json("-j", "ro", "queue", "list")
    assert tasks[0]["state"] == "failed" and "keep serving" in tasks[0]["message"]
    assert daemon.json("-j", "ro", "service", "get", "web")["frozen"]
    time.sleep(3)  # frozen: nothing retries the bad version behind the operator's back
    assert {answer(i["address"]) for i in serving(daemon)} == {"blue"}
    out = daemon.cli("project", "revert", "ro", "1", "--wait").stdout
    assert "revert to version 1" in out
    assert {i["id"] for i in serving(daemon)} == {i["id"] for i in old}  # same instances: nothing to replace
    assert daemon.json("project", "get", "ro")["version"]["seq"] == 3
    assert not daemon.json("-j", "ro", "service", "get", "web")["frozen"]
    assert "exit 7" in daemon.cli("-j", "ro", "project", "version", "2").stdout


def test_retagging_after_a_version_does_not_change_what_it_runs(daemon: Daemon, tmp_path):
    tag = f"mariposa-test/retag:{int(time.time() * 1000)}"
    docker("tag", IMAGE, tag)
    try:
        daemon.cli("project", "add", "ro", manifest(tmp_path, "v1", "blue", scale=1, image=tag), "--wait")
        original = json.loads(docker("image", "inspect", tag))[0]["Id"]
        # move the tag to a different image
        cid = docker("create", IMAGE, "true").strip()
        docker("commit", "--message", "built by mariposa tests", "--change", "LABEL moved=yes", cid, tag)
        docker("rm", cid)
        assert json.loads(docker("image", "inspect", tag))[0]["Id"] != original
        daemon.cli("-j", "ro", "service", "scale", "web", "2", "--wait")
        for c in daemon.running("web"):
            assert json.loads(docker("inspect", c["ID"]))[0]["Image"] == original
        # a new version of the same text pins the moved tag, and rolls it out
        diff = daemon.json("project", "diff", "ro", manifest(tmp_path, "v1", "blue", scale=1, image=tag))
        assert diff["new_version"] and diff["services"][0]["replace"] == 2
    finally:
        docker("rmi", "-f", tag, check=False)


def test_diff_and_if_version(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "ro", manifest(tmp_path, "v1", "blue", scale=2), "--wait")
    before = {i["id"] for i in serving(daemon)}
    d = daemon.json("project", "diff", "ro", manifest(tmp_path, "v2", "green", scale=3))
    [web] = d["services"]
    assert (web["change"], web["create"], web["replace"], web["remove"]) == ("changed", 1, 2, 0)
    text = daemon.cli("project", "diff", "ro", manifest(tmp_path, "v2", "green", scale=3)).stdout
    assert "web" in text and "changed" in text
    assert {i["id"] for i in serving(daemon)} == before and daemon.json("project", "get", "ro")["version"]["seq"] == 1
    stale = daemon.cli("project", "update", "ro", manifest(tmp_path, "v2", "green"), "--if-version", "7", check=False)
    assert stale.returncode == 5 and "not 7" in stale.stderr
    first = daemon.json("project", "versions", "ro")[0]["id"]
    daemon.cli("project", "update", "ro", manifest(tmp_path, "v2", "green", scale=2), "--if-version", first[:8], "--wait")
    history = daemon.json("project", "versions", "ro")
    assert [v["seq"] for v in history] == [2, 1] and "web: changed" in history[0]["summary"]
    assert history[0]["author"].startswith("uid=")
