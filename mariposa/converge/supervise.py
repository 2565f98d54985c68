"""The numbers of supervision: restart and replacement back-offs, and merging what the daemon
remembers about instances into what the runtime reports. Pure, like the planner it feeds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from mariposa.converge.backoff import Backoff
from mariposa.model import Instance

# Docker's own restart policy: 100 ms, doubling, capped at a minute; an instance that ran for
# 10 s (its run is the quiet time) starts afresh.
RESTART = Backoff(base=0.1, factor=2.0, cap=60.0, reset_after=10.0)
# The first failed instance is replaced at once, then 2 s, 4 s, 8 s ... up to five minutes; a
# service without a failed instance for a minute (and twice the delay) starts afresh.
REPLACE = Backoff(base=2.0, factor=2.0, cap=300.0, reset_after=60.0, first_free=True, reset_delays=2.0)


def replace_after(replacements: int, last_at: float | None, now: float) -> float:
    """When the service's next replacement instance may be made (0.0: at once)."""
    return REPLACE.until(replacements, last_at, now)


def merge(instances: Iterable[Instance], records: Mapping[str, dict], now: float) -> list[Instance]:
    out = []
    for inst in instances:
        rec = records.get(inst.id)
        if rec is None:
            out.append(inst)
            continue
        exited_at = rec["last_exit_at"] if rec["last_exit_at"] is not None else now
        out.append(attrs.evolve(
            inst,
            retired=bool(rec["retired"]),
            removing=bool(rec.get("removing")),
            health=rec["health"],
            restarts=rec["restarts"],
            ready_at=exited_at + RESTART.delay(rec["backoff_step"]),
            started_at=rec["last_start_at"] or 0.0,
            health_since=rec["health_since"] or 0.0,
        ))
    return out
