"""The numbers of supervision: restart and replacement back-offs, and merging what the daemon
remembers about instances into what the runtime reports. Pure, like the planner it feeds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from mariposa.model import Instance

RESTART_CAP = 60.0  # seconds; Docker caps its own restart delay at one minute too
REPLACE_BASE = 2.0
REPLACE_CAP = 300.0
REPLACE_RESET = 60.0  # a service without a failed instance for this long starts afresh


RESTART_BASE = 0.1  # as Docker's own restart policy: 100 ms, doubling


def restart_delay(step: int) -> float:
    """0 after a long run, then 0.1 s, 0.2 s, 0.4 s ... (up to a minute) for instances that
    keep exiting quickly."""
    return 0.0 if step <= 0 else min(RESTART_CAP, RESTART_BASE * 2.0 ** (step - 1))


def replace_delay(count: int) -> float:
    """The wait before the replacement of the ``count``-th failed instance in a row: the first
    is replaced at once, then 2 s, 4 s, 8 s ... up to five minutes."""
    return 0.0 if count <= 1 else min(REPLACE_CAP, REPLACE_BASE ** (count - 1))


def effective_replacements(replacements: int, last_at: float | None, now: float) -> int:
    if not replacements or last_at is None:
        return 0
    quiet = max(REPLACE_RESET, 2 * replace_delay(replacements))
    return 0 if now - last_at > quiet else replacements


def replace_after(replacements: int, last_at: float | None, now: float) -> float:
    count = effective_replacements(replacements, last_at, now)
    return 0.0 if count == 0 else last_at + replace_delay(count)


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
            health=rec["health"],
            restarts=rec["restarts"],
            ready_at=exited_at + restart_delay(rec["backoff_step"]),
            started_at=rec["last_start_at"] or 0.0,
            health_since=rec["health_since"] or 0.0,
        ))
    return out
