"""Daemon SIGKILL anywhere, on real Docker (issue 11, fault injection part 1): random rounds
through tests/faults/sigkill.py, and the issue's defect #17 replayed as it was reported."""

from __future__ import annotations

import time

import pytest

from tests.faults import LONG, count, sigkill
from tests.integration.harness import IMAGE, LATE, Daemon, wait_until

pytestmark = pytest.mark.docker


@pytest.mark.timeout(3600 if LONG else 600)
def test_sigkill_during_any_action_loses_nothing_and_leaves_nothing(docker_images, tmp_path):
    figures = sigkill.run(count(20, 100), tmp_path)
    table = sigkill.report(figures)
    print(table)
    assert all(n >= 1 for n in figures["kills"].values()), table  # every kind of action was killed
    assert figures["acknowledged"] >= 1, table
    assert {k: figures[k] for k in sigkill.FAILURES} == dict.fromkeys(sigkill.FAILURES, 0), table


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
    daemon = Daemon(tmp_path).start()

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
            daemon.start()
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
