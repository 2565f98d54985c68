"""Manifest fuzzing in the test run: 2,000 inputs (10,000 with MARIPOSA_FAULTS=long) through the
daemon's manifest parser, each answered with a spec or a ManifestError at a line:column, within
1 s and 100 MB. MARIPOSA_FUZZ_SEED=N replays a run (its seed is in the failure message)."""

from __future__ import annotations

import os

from mariposa.manifest.service import _OPTIONS
from tests.faults import count, fuzz
from tests.faults.fuzz import OPTION_VALUES, corpus, run


def test_every_option_has_a_strategy():
    """A new option joins the fuzzing the day it joins the table."""
    assert set(OPTION_VALUES) == set(_OPTIONS)


def test_the_corpus_has_the_examples_and_the_tests_manifests():
    texts = corpus()
    assert len(texts) >= 50
    assert any("jupiter" in t for t in texts) and any("healthchecks" in t for t in texts)


def test_the_same_seed_gives_the_same_inputs():
    assert run(20, seed=7)["digest"] == run(20, seed=7)["digest"] != run(20, seed=8)["digest"]


def test_fuzzed_manifests_are_refused_with_a_position_fast_and_small():
    seed = os.environ.get("MARIPOSA_FUZZ_SEED")
    figures = run(count(2000, 10_000), seed=int(seed) if seed else None)
    failures = figures.pop("failure_examples")
    summary = f"seed {figures['seed']} (MARIPOSA_FUZZ_SEED={figures['seed']} replays it): {figures}"
    assert not failures, summary + "\n" + "\n".join(failures)
    assert figures["inputs"] >= count(2000, 10_000) * 0.95, summary
    assert figures["crashes"] == figures["problems_without_position"] == 0, summary
    assert figures["slowest_seconds"] <= 1.0 and figures["max_memory_mb"] <= 100, summary
    # Both answers are exercised: the fuzzer is no good if nothing it builds is ever accepted.
    assert figures["accepted"] > 0, summary
    print(summary)


def test_an_input_that_runs_away_is_stopped_and_reported(monkeypatch):
    def forever(text):
        while True:
            pass

    monkeypatch.setattr(fuzz, "_parse", forever)
    monkeypatch.setattr(fuzz, "HANG_SECONDS", 0.5)
    with fuzz.Watchdog() as watchdog:
        fuzzer = fuzz.Fuzzer(watchdog)
        fuzzer.check("test", "services: {}")
    assert [f.reason for f in fuzzer.failures] == ["still running after 0.5 s: stopped"]
