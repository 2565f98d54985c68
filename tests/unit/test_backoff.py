"""The three back-offs keep the numbers they had before they shared one type."""

from __future__ import annotations

import pytest

from mariposa.converge.backoff import Backoff
from mariposa.converge.reconciler import RETRY
from mariposa.converge.supervise import REPLACE, RESTART, replace_after


def test_restart_is_dockers_own_schedule():
    assert [RESTART.delay(s) for s in range(4)] == [0, 0.1, 0.2, 0.4]
    assert RESTART.delay(20) == 60
    assert RESTART.resets(7, 10.0) and not RESTART.resets(7, 9.99)  # a run of 10 s starts afresh


def test_replacement_first_at_once_then_doubling_to_five_minutes():
    assert [REPLACE.delay(n) for n in (0, 1, 2, 3, 4, 10)] == [0, 0, 2, 4, 8, 300]
    assert replace_after(0, None, 100.0) == 0.0
    assert replace_after(1, 100.0, 101.0) == 100.0  # the first failed instance is replaced at once
    assert replace_after(3, 100.0, 101.0) == 104.0
    assert REPLACE.streak(2, 100.0, 100.0 + 61) == 0  # a quiet minute resets it
    assert REPLACE.streak(9, 100.0, 100.0 + 61) == 9  # unless twice the delay is longer
    assert REPLACE.streak(9, 100.0, 100.0 + 2 * 256) == 0


def test_retry_of_failing_tasks():
    assert [RETRY.delay(n) for n in (0, 1, 2, 3, 8, 9, 50)] == [0, 2, 4, 8, 256, 300, 300]
    assert not RETRY.resets(50, 1e9)  # only a task that succeeds ends the streak


def test_huge_streaks_stay_at_the_cap():
    assert RETRY.delay(10**6) == 300 and RESTART.delay(5000) == 60


@pytest.mark.parametrize("kw", [dict(base=0, factor=2, cap=1), dict(base=1, factor=0.5, cap=1),
                                dict(base=1, factor=2, cap=0)])
def test_nonsense_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        Backoff(**kw)
