"""The one place that decides: ``AccessPolicy.decide(caller, action, scope)``.

The order is what makes it one that people can reason about (and ``can-i`` explain):
1. the daemon's own callers (the watched directory, the scheduler, a public trigger whose token
   was found) act for the daemon; the metrics listener may scrape and nothing else;
2. who is the caller: a remote caller's token named its user; a unix caller is its uid's user,
   uid 0 (and the daemon's own uid) is the built-in root; an unmapped uid is refused, with the
   command that maps it;
3. root may do everything;
4. a ``deny`` binding that covers the scope and matches the capability refuses, whatever grants;
5. a grant whose role has the capability allows; nothing else does.

``decide`` reads an immutable ``AccessState`` replaced after each change, with the user's own
bindings found by dict lookups (by user, then by where they apply): its cost grows neither with
the bindings of other users nor with the user's own on other projects (tests/bench/bench_authorize.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mariposa.access.capabilities import ACTIONS, OPEN_ACTIONS, matches
from mariposa.access.model import ALL_ORGS, ROOT, AccessState, Binding, Decision, Scope
from mariposa.errors import Forbidden

if TYPE_CHECKING:
    from mariposa.control.caller import Caller  # control/ imports this module

# The daemon's own callers; "trigger" is a public trigger's POST (mariposa/triggers/), made a
# caller only once its token was found: the token is its credential.
DAEMON_TRANSPORTS = frozenset({"watch", "internal", "trigger"})
# The metrics listener's callers (``metrics_listen``, mariposa/metrics/listener.py): anyone who can
# reach its port may read /metrics, and do nothing else.
SCRAPER, SCRAPE = "metrics-http", "metrics.scrape"
REMOTE = "tls"  # the TLS listener's callers: who they are is their token's user


class Unmapped(Forbidden):
    """A unix caller no user is mapped to."""


class AccessPolicy:
    def __init__(self, socket_gid: int | None, daemon_uid: int | None = None,
                 state: AccessState | None = None) -> None:
        self.socket_gid = socket_gid
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
        self.state = state or AccessState()

    def admits(self, caller: Caller) -> bool:
        """The first gate, once per connection of the control socket: root, the daemon's user and
        the members of ``socket_group`` reach the API at all (a caller whose credentials the kernel
        did not give fails closed). Remote callers are admitted by their token, per request."""
        if caller.transport in DAEMON_TRANSPORTS or caller.transport == REMOTE:
            return True
        if caller.uid is None:
            return False
        if caller.uid in (0, self.daemon_uid):
            return True
        if self.socket_gid is None:
            return False
        return caller.gid == self.socket_gid or self.socket_gid in caller.groups

    def user_of(self, caller: Caller) -> str | None:
        """The user a caller acts as; None for a uid nobody mapped."""
        if caller.transport == REMOTE:
            return caller.user
        if caller.uid is None:
            return None
        if caller.uid in (0, self.daemon_uid):
            return ROOT
        return self.state.uid_user.get(caller.uid)

    def is_root(self, caller: Caller) -> bool:
        """Decided without a scope: the daemon itself, or the built-in root (the fast path of the
        control layer, which resolves a target only for those it must judge)."""
        return caller.transport in DAEMON_TRANSPORTS or (caller.transport != SCRAPER and self.user_of(caller) == ROOT)

    def decide(self, caller: Caller, action: str, scope: Scope) -> Decision:
        capability = ACTIONS.get(action)
        if caller.transport in DAEMON_TRANSPORTS:
            return Decision(True, f"the daemon itself ({caller.author})", capability=capability)
        if caller.transport == SCRAPER:
            return Decision(action == SCRAPE, "the metrics listener serves /metrics only", capability=capability)
        user = self.user_of(caller)
        if user is None:
            return Decision(False, f"uid {caller.uid} is not a Mariposa user", capability=capability)
        if user == ROOT:
            return Decision(True, "root is an admin of everything", user=user, capability=capability)
        if action in OPEN_ACTIONS:
            return Decision(True, "any user may", user=user, capability=capability)
        if capability is None:
            return Decision(False, f"'{action}' is for root only", user=user)
        return self.judge(user, capability, scope)

    def judge(self, user: str, capability: str, scope: Scope) -> Decision:
        """A user's bindings on a capability at a scope: deny first, then the first grant."""
        bindings = self.covering(user, scope)
        for b in bindings:
            if b.effect == "deny" and b.capability is not None and matches(b.capability, capability):
                return Decision(False, f"denied by {b}", b, user, capability)
        for b in bindings:
            if b.effect == "grant":
                role = self.state.roles.get(b.role or "")
                if role is not None and capability in role.capabilities:
                    return Decision(True, f"granted by {b}", b, user, capability)
        return Decision(False, f"no binding of {user} grants {capability} on {scope}", None, user, capability)

    def covering(self, user: str, scope: Scope) -> list[Binding]:
        """The user's bindings that cover ``scope``: looked up by where they apply (a project's
        scope needs those on every organisation, on its organisation and on it), so one user's
        thousand project grants cost no more than one; a listing's ``anywhere`` scans them."""
        index = self.state.scoped.get(user)
        if index is None or scope.anywhere or scope.org is None:
            return [b for b in self.state.by_user.get(user, ()) if b.covers(scope)]
        found = [*index.get((ALL_ORGS, None), ()), *index.get((scope.org, None), ())]
        if scope.project_id is not None:
            found += index.get((scope.org, scope.project_id), ())
        return found

    def allows(self, caller: Caller, action: str, scope: Scope) -> bool:
        return self.decide(caller, action, scope).allowed


def refusal(caller: Caller, action: str, scope: Scope, decision: Decision) -> Forbidden:
    """What the caller is told: what was refused, on what, and why (the binding that decided)."""
    if decision.user is None and caller.uid is not None and caller.transport not in (SCRAPER, REMOTE):
        return Unmapped(f"permission denied: uid {caller.uid} is not a Mariposa user; an admin maps it with: "
                        f"mariposa user add NAME --uid {caller.uid}")
    what = decision.capability or action
    return Forbidden(f"permission denied: {what} on {scope} ({decision.why})")
