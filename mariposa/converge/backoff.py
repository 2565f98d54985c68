"""One back-off, with the parameters of each use named where it is used.

Three things in Mariposa wait longer after each failure in a row: the restart of an exited
instance (``RESTART`` in ``supervise.py``), the replacement of a failed instance (``REPLACE``,
same module) and the retry of a service whose tasks keep failing (``RETRY`` in
``reconciler.py``). They differ only in their numbers, so one value type holds the arithmetic:

    failure in a row:   1        2               3                 n
    delay:              base     base*factor     base*factor**2    min(cap, base*factor**(n-1))
    with first_free:    0        base            base*factor       min(cap, base*factor**(n-2))

A streak ends after a quiet time: ``reset_after`` seconds, and, when the quiet time is counted
from the failure itself (so it includes the wait), also ``reset_delays`` times the current
delay, or a long delay would reset the streak it is part of.
"""

from __future__ import annotations

import math

import attrs


def _positive(instance, attribute, value) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen
class Backoff:
    base: float = attrs.field(validator=_positive)  # the first delay that is not free
    factor: float = attrs.field(validator=attrs.validators.ge(1.0))
    cap: float = attrs.field(validator=_positive)  # no delay is longer
    reset_after: float = math.inf  # quiet this long and the streak starts afresh
    first_free: bool = False  # the first failure of a streak costs nothing
    reset_delays: float = 0.0  # ... and quiet for this many times the current delay too

    def delay(self, n: int) -> float:
        """Seconds to wait after the ``n``-th failure in a row (0 for none)."""
        steps = n - (2 if self.first_free else 1)
        if steps < 0:
            return 0.0
        try:
            return min(self.cap, self.base * self.factor**steps)
        except OverflowError:
            return self.cap

    def resets(self, n: int, quiet: float) -> bool:
        """Whether ``quiet`` seconds without a failure end a streak of ``n``."""
        return quiet >= max(self.reset_after, self.reset_delays * self.delay(n))

    def streak(self, n: int, last_at: float | None, now: float) -> int:
        """The streak still in force at ``now``, ``n`` failures long when the last was at
        ``last_at`` (0 once it has reset)."""
        if not n or last_at is None or self.resets(n, now - last_at):
            return 0
        return n

    def until(self, n: int, last_at: float | None, now: float) -> float:
        """When the next attempt may happen (0.0: at once), the streak read at ``now``."""
        n = self.streak(n, last_at, now)
        if n == 0:
            return 0.0
        assert last_at is not None  # streak() is 0 without a last failure
        return last_at + self.delay(n)
