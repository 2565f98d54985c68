"""Part 3 in the test run: a hostile client against a live daemon on real Docker (abuse.py)."""

from __future__ import annotations

import json

import pytest

from tests.faults import count
from tests.faults.abuse import LIST_BOUND_MS, RSS_BOUND_MB, run

pytestmark = pytest.mark.docker


def test_a_hostile_client_changes_nothing_and_slows_nobody(tmp_path, docker_images):
    figures = run(tmp_path, scale=count(1, 4))
    print(json.dumps(figures, indent=1))
    assert not figures["failures"], "\n".join(figures["failures"][:50])
    assert figures["5xx"] == figures["busy_503"]
    assert figures["list_samples"] >= 20, "project list was hardly sampled"
    assert figures["list_max_ms"] <= LIST_BOUND_MS, figures
    assert figures["rss_max_mb"] <= RSS_BOUND_MB, figures
