"""The dashboard's one control operation: a one-time sign-in link for the caller
(``mariposa ui``, as ``nomad ui -authenticate``). The pages themselves call the other areas."""

from __future__ import annotations

from mariposa.access.policy import AccessPolicy
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import BadRequest, Forbidden
from mariposa.ui.sessions import SIGNIN_TTL


class Dashboard(Area):
    @operation("ui.signin")
    async def signin(self, caller: Caller) -> dict:
        """A link that signs the caller's user in once, within ``SIGNIN_TTL`` seconds. The code
        is in the answer only, never in a log or the audit trail."""
        user = caller.user or (self.policy.user_of(caller) if isinstance(self.policy, AccessPolicy) else None)
        if user is None:
            raise Forbidden("permission denied: only a Mariposa user can sign in to the dashboard")
        if self.ctx.dashboard_base is None:
            raise BadRequest("the dashboard is served by the remote listener, which is off: set "
                             "listen = \"HOST:PORT\" in /etc/mariposa/mariposa.toml and restart the daemon")
        code = self.ctx.sessions.issue_code(user)
        return {"url": f"{self.ctx.dashboard_base}/ui/signin?code={code}", "user": user,
                "expires_in": int(SIGNIN_TTL)}
