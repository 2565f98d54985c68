"""The fault-injection suite: the daemon killed at random moments, fuzzed manifests, an abusive
client on a live socket, and a runtime that goes away, a disk that fills and a store another
process locks. Each part is a module with a `run(...)` that returns its figures (inputs tried,
failures found, seconds taken), so the same code is a CI test (tests/faults/test_*.py, small
counts) and a long benchmark (tests/bench/bench_faults.py --long, large counts).

MARIPOSA_FAULTS=long makes the CI tests use the long counts too."""

from __future__ import annotations

import os

LONG = os.environ.get("MARIPOSA_FAULTS") == "long"


def count(ci: int, long: int) -> int:
    """How many rounds or examples a part runs: `ci` in the test run, `long` in the long run."""
    return long if LONG else ci
