"""Daemon SIGKILL anywhere, on real Docker (issue 11, fault injection part 1): random rounds
through tests/faults/sigkill.py, and the issue's defect #17 replayed as it was reported."""

from __future__ import annotations

import time

import pytest

from tests.faults import LONG, count, sigkill
from tests.integration.harness import IMAGE, LATE, Daemon, wait_until

pytestmark = pytest.mark.docker


@pytest.mark.timeout(7200 if LONG else 1200)  # a loaded machine; about 4 minutes in CI
def test_sigkill_during_any_action_loses_nothing_and_leaves_nothing(docker_images, tmp_path):
    figures = sigkill.run(count(20, 100), tmp_path)
    table = sigkill.report(figures)
    print(table)
    assert all(n >= 1 for n in figures["kills"].values()), table  # every kind of action was killed
    assert figures["acknowledged"] >= 1, table
    assert {k: figures[k] for k in sigkill.FAILURES} == dict.fromkeys(sigkill.FAILURES, 0), table


def test_the_checks_see_each_failure():
    """The rounds' judge, on worlds made by hand: each failure it counts is one it can see."""
    project, service = {"id": "p1", "name": "p", "desired": "running"}, {
        "desired": "running", "scale": 2, "frozen": 0, "frozen_reason": None, "keep_stale": 0}
    goal = {"spec_hash": "h1", "spec": {"healthchecks": []}}

    def box(instance: str, running: bool = True, project_id: str = "p1", spec: str = "h1") -> sigkill.Container:
        return sigkill.Container(instance * 8, running, "running" if running else "exited (143)", {
            "io.mariposa.project": project_id, "io.mariposa.service": "web", "io.mariposa.instance": instance,
            "io.mariposa.spec-hash": spec})

    def world(boxes, nets=(("net-p1", "p1"),), tasks=(), instances=None) -> sigkill.World:
        store = sigkill.Store({"p1": project}, {("p1", "web"): service}, {}, instances or {}, list(tasks))
        return sigkill.World(store, list(boxes), list(nets), {("p1", "web"): goal})

    def failing(w: sigkill.World) -> set[str]:
        return {k for k, v in sigkill.judge(w).items() if v}

    assert failing(world([box("a"), box("b")])) == set()
    assert failing(world([box("a"), box("a")])) == {"duplicates"}
    assert failing(world([box("a"), box("b")], nets=[("net-p1", "p1"), ("net-p1", "p1")])) == {"duplicates"}
    assert failing(world([box("a"), box("b"), box("c", project_id="gone")])) == {"orphans"}
    assert failing(world([box("a"), box("b")], nets=[("net-p1", "p1"), ("net-x", "gone")])) == {"orphans"}
    retired = {"c": {"retired": 1, "retired_reason": "scale down", "health": None}}
    assert failing(world([box("a"), box("b"), box("c", running=False)], instances=retired)) == {"strays"}
    kept = {"c": {"retired": 1, "retired_reason": "unhealthy", "health": "unhealthy"}}
    assert failing(world([box("a"), box("b"), box("c", running=False)], instances=kept)) == set()
    assert failing(world([box("a")])) == {"unconverged"}
    assert failing(world([box("a"), box("b", spec="h0")])) == {"unconverged"}
    task = {"id": "t" * 12, "kind": "scale", "project_name": "p", "service": "web", "state": "active"}
    assert failing(world([box("a"), box("b")], tasks=[task])) == {"stuck"}


# The script: seven instances of a service that dies on SIGTERM (exit 143 under Docker's
# init), scaled to three, and the daemon killed 0-0.8 s after the CLI's answer, while it stops
# and deletes the four. Before migration 0006 the restart found them stopped with exit 143 and
# kept them as failures ("exited (143) retired") for ever.
SEVEN = f"""services:
  web:
    image: {IMAGE}
    scale: 7
    command: sleep 100000
"""


def test_scale_down_interrupted_by_sigkill_finishes_its_removals(docker_images, tmp_path):
    """Defect #17, replayed at four delays."""
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SEVEN)
    daemon = Daemon(tmp_path).start(timeout=sigkill.START)

    def left() -> list[str]:
        return sorted(c["Status"] for c in daemon.containers("label=io.mariposa.service=web"))

    try:
        daemon.cli("project", "add", "web", str(manifest), "--wait")
        for delay in (0.0, 0.3, 0.55, 0.8):
            daemon.cli("-j", "web", "service", "scale", "web", "7", "--wait")
            assert len(daemon.running("web")) == 7
            daemon.cli("-j", "web", "service", "scale", "web", "3")
            time.sleep(delay)
            daemon.kill()
            daemon.start(timeout=sigkill.START)
            try:
                wait_until(lambda: len(daemon.containers("label=io.mariposa.service=web")) == 3
                           and len(daemon.running("web")) == 3, timeout=30 + LATE)
            except AssertionError:
                raise AssertionError(f"killed {delay} s after the answer, the restart left {left()}") from None
            time.sleep(2.2)  # a resync later (the harness's --resync 2): still so, nothing kept
            assert len(daemon.running("web")) == 3 and len(left()) == 3, (delay, left())
            instances = daemon.api("/v1/projects/web/services/web/instances")
            assert len(instances) == 3 and not any(i["retired"] for i in instances), (delay, instances)
            assert daemon.api("/v1/queue?state=queued,active") == [], delay
    finally:
        daemon.cleanup()
