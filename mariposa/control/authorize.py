"""The one authorization hook: every control method asks ``authorize(policy, caller, action,
scope)`` before it acts (``control/base.py`` resolves the scope from the method's target). The
rules are ``access.policy.AccessPolicy``'s; this module records each decision in the audit trail
and turns a refusal into the error the caller reads.
"""

from __future__ import annotations

from typing import Protocol

from mariposa.access.audit import AuditTrail
from mariposa.access.model import Decision, Scope
from mariposa.access.policy import SCRAPE as SCRAPE
from mariposa.access.policy import SCRAPER as SCRAPER
from mariposa.access.policy import AccessPolicy as AccessPolicy
from mariposa.access.policy import refusal
from mariposa.clock import wall_clock
from mariposa.control.caller import Caller


class Policy(Protocol):
    def decide(self, caller: Caller, action: str, scope: Scope) -> Decision: ...

    def is_root(self, caller: Caller) -> bool: ...

    def user_of(self, caller: Caller) -> str | None: ...


class AllowAll:
    """For tests that exercise the control layer as root would."""

    def decide(self, caller: Caller, action: str, scope: Scope) -> Decision:
        return Decision(True, "allow-all (tests)")

    def is_root(self, caller: Caller) -> bool:
        return True

    def user_of(self, caller: Caller) -> str | None:
        return caller.user or "root"


def authorize(policy: Policy, caller: Caller, action: str, scope: Scope,
              audit: AuditTrail | None = None) -> Decision:
    decision = policy.decide(caller, action, scope)
    if audit is not None:
        audit.record(caller, action, scope, decision, wall_clock())
    if not decision.allowed:
        raise refusal(caller, action, scope, decision)
    return decision
