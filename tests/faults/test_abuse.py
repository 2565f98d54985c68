"""Part 3 in the test run: a hostile client against a live daemon on real Docker (abuse.py)."""

from __future__ import annotations

import json

import pytest

from tests.faults import count
from tests.faults.abuse import LIST_BOUND_MS, RSS_BOUND_MB, run
from tests.integration.harness import LATE

pytestmark = pytest.mark.docker
QUIET_LIST_MS = 10.0


def test_a_hostile_client_changes_nothing_and_slows_nobody(tmp_path, docker_images):
    figures = run(tmp_path, scale=count(1, 4))
    print(json.dumps(figures, indent=1))
    assert not figures["failures"], "\n".join(figures["failures"][:50])
    assert figures["5xx"] == figures["busy_503"]
    assert figures["list_samples"] >= 20, "project list was hardly sampled"
    # 95 % of the answers within the bound on a quiet machine, where an idle project list takes
    # about QUIET_LIST_MS; on one that other work loads (CI and other suites share 2 cores, at load
    # 8-14), the bound grows as the idle list (sampled just before the abuse) is slower than that.
    # The slowest answer within what a loaded machine may add (LATE): 500 requests that arrive at
    # once are served in turn, and the sampler waits its turn.
    slower = max(1.0, figures["list_idle_p95_ms"] / QUIET_LIST_MS)
    assert figures["list_p95_ms"] <= LIST_BOUND_MS * slower, figures
    assert figures["list_max_ms"] <= LIST_BOUND_MS + LATE * 1000, figures
    assert figures["rss_max_mb"] <= RSS_BOUND_MB, figures
