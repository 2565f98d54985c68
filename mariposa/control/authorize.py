"""The one authorization hook: every control method asks ``authorize(caller, action, target)``
before it acts.

Today there is one rule, the control socket's: root, the daemon's own user and members of the
socket's group may do everything; nobody else may do anything, and neither may a caller whose
credentials the kernel did not give us (it fails closed). The daemon's own callers (the watched
directory) act for the daemon. Users and roles will replace ``SocketPolicy`` without touching a
single control method.
"""

from __future__ import annotations

import os
from typing import Protocol

import structlog

from mariposa.control.caller import Caller
from mariposa.errors import Forbidden

log = structlog.get_logger()

# The daemon's own callers; "trigger" is a public trigger's POST (mariposa/triggers/), made a
# caller only once its token was found: the token is its credential.
DAEMON_TRANSPORTS = frozenset({"watch", "internal", "trigger"})
# The metrics listener's callers (``metrics_listen``, mariposa/metrics/listener.py): anyone who can
# reach its port may read /metrics, and do nothing else.
SCRAPER, SCRAPE = "metrics-http", "metrics.scrape"


class Policy(Protocol):
    def allows(self, caller: Caller, action: str, target: str | None) -> bool: ...


class SocketPolicy:
    def __init__(self, socket_gid: int | None, daemon_uid: int | None = None) -> None:
        self.socket_gid = socket_gid
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid

    def admits(self, caller: Caller) -> bool:
        """May this caller use the daemon at all (checked once per connection, too)."""
        if caller.transport in DAEMON_TRANSPORTS:
            return True
        if caller.uid is None:
            return False
        if caller.uid in (0, self.daemon_uid):
            return True
        if self.socket_gid is None:
            return False
        return caller.gid == self.socket_gid or self.socket_gid in caller.groups

    def allows(self, caller: Caller, action: str, target: str | None) -> bool:
        if caller.transport == SCRAPER:
            return action == SCRAPE
        return self.admits(caller)


class AllowAll:
    """For tests that exercise the control layer as root would."""

    def allows(self, caller: Caller, action: str, target: str | None) -> bool:
        return True


def authorize(policy: Policy, caller: Caller, action: str, target: str | None = None) -> None:
    if policy.allows(caller, action, target):
        return
    log.warning("refused", caller=caller.author, transport=caller.transport, action=action, target=target)
    on = f" on {target}" if target else ""
    raise Forbidden(f"{caller.author} may not {action}{on}")
