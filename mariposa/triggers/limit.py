"""Failures per source address: what keeps a public listener from being a token-guessing oracle.

The rule: 10 failures (a wrong token, an unknown path) within 60 s from one address, and that
address is refused (429) for the next 60 s, right tokens included: were a right token let
through while the address is refused, the 202 among the 429s would still tell a guesser when it
hit. Successes never count and are never limited otherwise. Pure: the time is passed in.

Memory is bounded: at most ``max_addresses`` addresses are tracked; past that, those whose
window and block have lapsed are dropped, then the oldest.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import attrs

FAILURES = 10
WINDOW = 60.0
BLOCK = 60.0
MAX_ADDRESSES = 10_000


@attrs.define
class _Address:
    failures: deque[float] = attrs.field(factory=deque)
    blocked_until: float = 0.0


class FailureLimit:
    def __init__(self, failures: int = FAILURES, window: float = WINDOW, block: float = BLOCK,
                 max_addresses: int = MAX_ADDRESSES) -> None:
        self.failures, self.window, self.block, self.max_addresses = failures, window, block, max_addresses
        self._seen: OrderedDict[str, _Address] = OrderedDict()

    def blocked(self, address: str, now: float) -> bool:
        entry = self._seen.get(address)
        return entry is not None and now < entry.blocked_until

    def failed(self, address: str, now: float) -> bool:
        """Count a failure; whether the address is refused from now on."""
        entry = self._seen.get(address)
        if entry is None:
            self._make_room(now)
            entry = self._seen[address] = _Address()
        self._seen.move_to_end(address)
        entry.failures.append(now)
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        if len(entry.failures) >= self.failures:
            entry.blocked_until = now + self.block
            entry.failures.clear()
        return now < entry.blocked_until

    def _make_room(self, now: float) -> None:
        if len(self._seen) < self.max_addresses:
            return
        for address in [a for a, e in self._seen.items()
                        if now >= e.blocked_until and (not e.failures or e.failures[-1] <= now - self.window)]:
            del self._seen[address]
        while len(self._seen) >= self.max_addresses:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
