"""Event services run on a meta change (``on: {meta: [...]}``, issue 16) on the real Engine: a
changed watched key runs the job once, and the job reads the new value; the same value, or an
unwatched key, runs nothing; a SIGKILL of the daemon just after the change still gives exactly
one run (the change and its run are one store transaction: runs/on_meta.py)."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import IMAGE, Daemon, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  job:
    service_type: event
    image: {IMAGE}
    command: sh -c 'echo color is $COLOR, changed $MARIPOSA_META_KEYS'
    environment: {{COLOR: "{{{{ .meta.color }}}}"}}
    on: {{meta: [color, size]}}
"""


def runs(d: Daemon) -> list[dict]:
    return sorted(d.json("-j", "om", "service", "runs", "job", "--limit", "1000"), key=lambda r: r["scheduled"])


def settled(d: Daemon) -> list[dict]:
    return wait_until(lambda: (rows := runs(d)) and all(r["state"] not in ("queued", "running") for r in rows)
                      and rows, timeout=60, what="every run to end")


def test_a_meta_change_runs_the_event_service_once_with_the_new_value(daemon: Daemon, tmp_path):
    (tmp_path / "om.yaml").write_text(MANIFEST)
    (tmp_path / "meta.yaml").write_text("color: red\nsize: '1'\n")
    daemon.cli("project", "add", "om", str(tmp_path / "om.yaml"), "--meta", str(tmp_path / "meta.yaml"), "--wait")
    time.sleep(1)
    assert runs(daemon) == []  # the project's first meta is no change
    out = daemon.cli("-j", "om", "meta", "set", "color", "blue")
    assert "queued" in out.stderr
    [run] = settled(daemon)
    assert (run["trigger"], run["state"], run["exit_code"]) == ("event", "succeeded", 0)
    assert "color is blue, changed color" in daemon.cli("-j", "om", "run", "logs", run["id"]).stdout
    daemon.cli("-j", "om", "meta", "set", "color", "blue")  # the same value
    daemon.cli("-j", "om", "meta", "set", "other", "x")  # a key no service watches
    time.sleep(3)
    assert [r["id"] for r in runs(daemon)] == [run["id"]]
    daemon.cli("-j", "om", "meta", "rm", "size")  # a removal is a change too
    rows = wait_until(lambda: len(settled(daemon)) == 2 and settled(daemon), timeout=60, what="the second run")
    assert rows[1]["state"] == "succeeded"
    assert "color is blue, changed size" in daemon.cli("-j", "om", "run", "logs", rows[1]["id"]).stdout


def test_a_sigkill_right_after_a_meta_change_still_runs_once(daemon: Daemon, tmp_path):
    (tmp_path / "om.yaml").write_text(MANIFEST)
    (tmp_path / "meta.yaml").write_text("color: red\n")
    daemon.cli("project", "add", "om", str(tmp_path / "om.yaml"), "--meta", str(tmp_path / "meta.yaml"), "--wait")
    daemon.cli("-j", "om", "meta", "set", "color", "green")
    daemon.kill()  # SIGKILL: the run may be queued, being made, or running
    daemon.start()
    rows = settled(daemon)
    time.sleep(3)  # nothing more comes of the change
    rows = runs(daemon)
    assert [(r["trigger"], r["state"]) for r in rows] == [("event", "succeeded")], rows
    assert "color is green" in daemon.cli("-j", "om", "run", "logs", rows[0]["id"]).stdout
    assert daemon.containers(f"label=io.mariposa.run={rows[0]['id']}") == []
