"""Properties of the one back-off type, over any parameters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.converge.backoff import Backoff

backoffs = st.builds(
    Backoff,
    base=st.floats(0.001, 100), factor=st.floats(1, 10), cap=st.floats(0.001, 1e4),
    reset_after=st.floats(0, 1e4), first_free=st.booleans(), reset_delays=st.floats(0, 4),
)
streaks = st.integers(-3, 5000)


@settings(max_examples=300, deadline=None)
@given(b=backoffs, n=streaks)
def test_monotone_and_capped(b, n):
    assert 0.0 <= b.delay(n) <= b.delay(n + 1) <= b.cap


@settings(max_examples=200, deadline=None)
@given(b=backoffs, n=st.integers(1, 5000))
def test_first_free_only_spares_the_first(b, n):
    assert b.delay(0) == 0.0
    if b.first_free:
        assert b.delay(1) == 0.0 and b.delay(2) == min(b.base, b.cap)
    else:
        assert b.delay(1) == min(b.base, b.cap)
    assert (b.delay(n) > 0) == (n > (1 if b.first_free else 0))


@settings(max_examples=200, deadline=None)
@given(b=backoffs, n=st.integers(1, 200), last=st.floats(0, 1e6), quiet=st.floats(0, 1e5))
def test_a_streak_resets_only_after_its_quiet_time(b, n, last, quiet):
    now = last + quiet
    kept = b.streak(n, last, now)
    assert kept in (0, n)
    if kept:
        assert b.until(n, last, now) == last + b.delay(n)
    else:
        assert now - last >= b.reset_after and b.until(n, last, now) == 0.0
    if not kept:  # a longer quiet never brings a reset streak back
        assert b.streak(n, last, now + 1000.0) == 0
