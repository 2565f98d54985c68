"""Runtime faults on a live daemon (tests/faults/runtime.py): the Docker Engine restarted under
a running project (a private dockerd: the host's serves everyone else), the state directory's
disk full, the store locked by another process. Each asserts that every expectation held and
prints its figures (pytest -s shows them)."""

from __future__ import annotations

import json

import pytest

from tests.faults import runtime

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def _report(figures: dict) -> None:
    print(json.dumps(figures, indent=2, default=str))
    assert figures["problems"] == [], "\n".join(figures["problems"])


def test_dockerd_restarted_under_a_running_project(tmp_path):
    figures = runtime.dockerd_restart(tmp_path)
    _report(figures)
    assert figures["doubled"] == 0 and figures["unknown_to_store"] == 0


def test_state_dir_disk_full(tmp_path):
    figures = runtime.disk_full(tmp_path)
    _report(figures)
    assert figures["integrity_check"] == "ok"


def test_store_locked_by_another_process(tmp_path):
    figures = runtime.store_locked(tmp_path)
    _report(figures)
    assert figures["integrity_check"] == "ok"
