"""Who may do what: users and their uids, organisations, roles, grants and denies, and the
questions about them (``can-i``, ``who-can``, ``whoami``, the audit trail).

Users, organisations, roles and bindings are the host's (``user:admin`` asked on the host: an
admin bound on every organisation, ``*``, or root). Each change is one store transaction, after
which the policy's state is read again whole (``reload``): the daemon is the tables' only
writer, so the next request is decided on what was just written, with no polling.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from mariposa.access import rolefile
from mariposa.access.capabilities import ACTIONS, CAPABILITIES, OPEN_ACTIONS
from mariposa.access.model import HOST, ROOT, AccessState, Binding, Decision, Scope
from mariposa.access.policy import AccessPolicy
from mariposa.control.authorize import Policy, authorize
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import BadRequest, NotFound
from mariposa.store import access as access_store
from mariposa.store import audit as audit_store

if TYPE_CHECKING:
    from mariposa.context import Context

MAX_AUDIT = 10_000


async def reload(ctx: Context, policy: Policy) -> None:
    """Replace the policy's state with the tables as they are now (after every change to them)."""
    state = await ctx.store.call(access_store.load_state)
    if isinstance(policy, AccessPolicy):
        policy.state = state


def _capability(action: object) -> tuple[str, str]:
    """(the action asked about, the capability it needs): ACTION may be a control action
    (``service.scale``) or a capability (``service:scale``)."""
    if not isinstance(action, str) or not action:
        raise BadRequest("an action (service.scale) or a capability (service:scale) is required")
    if action in CAPABILITIES:
        return action, action
    if action in ACTIONS:
        return action, ACTIONS[action]
    if action in OPEN_ACTIONS:
        return action, ""
    raise BadRequest(f"unknown action or capability '{action}' (mariposa role list --capabilities shows the "
                     "capabilities; actions read like service.scale)")


def _binding_json(b: Binding | None) -> dict | None:
    return None if b is None else {**b.to_json(), "text": str(b)}


class Access(Area):
    async def _reload(self) -> None:
        await reload(self.ctx, self.policy)

    @property
    def _state(self) -> AccessState:
        return self.policy.state if isinstance(self.policy, AccessPolicy) else AccessState()

    # ---- users ----------------------------------------------------------------------------------

    @operation("user.add", kind="host")
    async def user_add(self, caller: Caller, name: object, uids: object = ()) -> dict:
        if uids is None:
            uids = []
        if not isinstance(uids, list | tuple):
            raise BadRequest("'uids' must be a list of uids")
        result = await self.ctx.store.call(access_store.add_user, name, builtins.list(uids))
        await self._reload()
        return result

    @operation("user.list", kind="host")
    async def user_list(self, caller: Caller) -> builtins.list[dict]:
        state = self._state
        return [{"name": u.name, "uids": builtins.list(u.uids), "created": u.created,
                 "bindings": len(state.by_user.get(u.name, ()))} for u in sorted(state.users.values(),
                                                                                  key=lambda u: u.name)]

    @operation("user.get", kind="host")
    async def user_get(self, caller: Caller, name: str) -> dict:
        await self.ctx.store.call(access_store.require_user, name)
        state = self._state
        if name == ROOT:
            return {"name": ROOT, "uids": [0], "builtin": True, "bindings": [],
                    "note": "root is an admin of everything"}
        user = state.users[name]
        return {"name": name, "uids": builtins.list(user.uids), "created": user.created, "builtin": False,
                "bindings": [_binding_json(b) for b in state.by_user.get(name, ())]}

    @operation("user.remove", kind="host")
    async def user_remove(self, caller: Caller, name: str) -> dict:
        """Its uids, bindings and tokens go with it (the tokens' rows by ON DELETE CASCADE, and
        from the token book in memory here, so the next remote call with one is refused)."""
        result = await self.ctx.store.call(access_store.remove_user, name)
        self.ctx.tokens.forget_user(name)
        await self._reload()
        return result

    # ---- organisations --------------------------------------------------------------------------

    @operation("org.add", kind="host")
    async def org_add(self, caller: Caller, name: object) -> dict:
        result = await self.ctx.store.call(access_store.add_org, name)
        await self._reload()
        return result

    @operation("org.list")
    async def org_list(self, caller: Caller) -> builtins.list[dict]:
        return await self.ctx.store.call(access_store.list_orgs)

    @operation("org.remove", kind="host")
    async def org_remove(self, caller: Caller, name: str) -> dict:
        result = await self.ctx.store.call(access_store.remove_org, name)
        await self._reload()
        return result

    # ---- roles ----------------------------------------------------------------------------------

    @operation("role.list")
    async def role_list(self, caller: Caller) -> builtins.list[dict]:
        return [{"name": r.name, "description": r.description, "builtin": r.builtin,
                 "capabilities": sorted(r.capabilities)}
                for r in sorted(self._state.roles.values(), key=lambda r: (not r.builtin, r.name))]

    @operation("role.get")
    async def role_get(self, caller: Caller, name: str) -> dict:
        role = self._state.roles.get(name)
        if role is None:
            raise NotFound(f"no role '{name}' (mariposa role list shows them)")
        return {"name": role.name, "description": role.description, "builtin": role.builtin,
                "patterns": builtins.list(role.patterns), "capabilities": sorted(role.capabilities)}

    @operation("role.define", kind="host")
    async def role_define(self, caller: Caller, text: object, filename: object = "<role>") -> dict:
        name = filename if isinstance(filename, str) and filename else "<role>"
        role = rolefile.parse(text, name)
        result = await self.ctx.store.call(access_store.define_role, role.name, role.description,
                                           builtins.list(role.capabilities))
        await self._reload()
        return {**result, "capabilities": sorted(self._state.roles[role.name].capabilities)}

    # ---- bindings -------------------------------------------------------------------------------

    async def _where(self, org: object, project: object) -> tuple[str, str | None]:
        """(the organisation, the project id) a binding is on: exactly one of --org and -j."""
        if (org is None) == (project is None):
            raise BadRequest("say where: --org ORG (or '*', every organisation and the host) or -j PROJECT")
        if project is not None:
            if not isinstance(project, str):
                raise BadRequest("'project' must be a project name or id")
            p = await self._project(project)
            return p.org, p.id
        if not isinstance(org, str):
            raise BadRequest("'org' must be an organisation name or '*'")
        return org, None

    @operation("access.grant", ("org", "project"), kind="binding")
    async def grant(self, caller: Caller, user: str, role: str, org: object = None, project: object = None) -> dict:
        at, project_id = await self._where(org, project)
        if not isinstance(role, str) or not role:
            raise BadRequest("'role' is required")
        b = await self.ctx.store.call(lambda db: access_store.add_binding(
            db, user=user, effect="grant", org=at, role=role, project_id=project_id, author=caller.author))
        await self._reload()
        return {"binding": _binding_json(b)}

    @operation("access.deny", ("org", "project"), kind="binding")
    async def deny(self, caller: Caller, user: str, capability: str, org: object = None,
                   project: object = None) -> dict:
        at, project_id = await self._where(org, project)
        if not isinstance(capability, str) or not capability:
            raise BadRequest("'capability' is required")
        b = await self.ctx.store.call(lambda db: access_store.add_binding(
            db, user=user, effect="deny", org=at, capability=capability, project_id=project_id,
            author=caller.author))
        await self._reload()
        return {"binding": _binding_json(b)}

    @operation("access.revoke", ("org", "project"), kind="binding")
    async def revoke(self, caller: Caller, user: object = None, what: object = None, org: object = None,
                     project: object = None, binding: object = None) -> dict:
        """By binding id, or by the shape it was given with: USER ROLE (a grant) or USER
        CAPABILITY (a deny: a name with ':' or '*') on --org or -j."""
        if binding is not None:
            if not isinstance(binding, str) or not binding:
                raise BadRequest("'id' must be a binding id")
            removed = [await self.ctx.store.call(access_store.remove_binding, binding)]
        else:
            if not isinstance(user, str) or not isinstance(what, str) or not user or not what:
                raise BadRequest("say what to revoke: USER ROLE (or USER CAPABILITY) with --org or -j, or --id ID")
            at, project_id = await self._where(org, project)
            deny = ":" in what or what == "*"

            def drop(db):
                found = access_store.find_bindings(
                    db, user=user, effect="deny" if deny else "grant", org=at, role=None if deny else what,
                    capability=what if deny else None, project_id=project_id)
                for b in found:
                    access_store.remove_binding(db, b.id)
                return found

            removed = await self.ctx.store.call(drop)
            if not removed:
                where = f"project {project}" if project is not None else f"organisation {at}"
                raise NotFound(f"{user} has no {'deny of' if deny else 'role'} {what} on {where}")
        await self._reload()
        return {"removed": [_binding_json(b) for b in removed]}

    # ---- questions ------------------------------------------------------------------------------

    async def _asked_scope(self, caller: Caller, project: object) -> Scope:
        """Where can-i and who-can ask: the project given, else the organisation chosen with -o,
        else the host."""
        if project is None:
            return Scope(org=caller.org) if caller.org else HOST
        if not isinstance(project, str):
            raise BadRequest("'project' must be a project name or id")
        return self.project_scope(caller, await self._project(project))

    def _judge(self, user: str, capability: str, scope: Scope) -> Decision:
        if user == ROOT:
            return Decision(True, "root is an admin of everything", user=user, capability=capability)
        if not capability:
            return Decision(True, "any user may", user=user)
        if isinstance(self.policy, AccessPolicy):
            return self.policy.judge(user, capability, scope)
        return Decision(True, "allow-all (tests)", user=user, capability=capability)

    @operation("access.can-i", "project")
    async def can_i(self, caller: Caller, project: object = None, action: object = None,
                    as_user: object = None) -> dict:
        """Whether the caller (or, for a user:admin, ``as_user``) may: the decision and the
        binding or reason that made it, the same ``decide`` every request goes through."""
        asked, capability = _capability(action)
        scope = await self._asked_scope(caller, project)
        if as_user is not None and as_user != "":
            if not isinstance(as_user, str):
                raise BadRequest("'as' must be a user name")
            authorize(self.policy, caller, "access.can-i-as", HOST, self.ctx.audit)
            await self.ctx.store.call(access_store.require_user, as_user)
            decision = self._judge(as_user, capability, scope)
        else:  # a capability is asked as the first action that needs it: the same decide as every request
            action_of = asked if asked in ACTIONS or asked in OPEN_ACTIONS else next(
                a for a, c in ACTIONS.items() if c == capability)
            decision = self.policy.decide(caller, action_of, scope)
        return {"allowed": decision.allowed, "action": asked, "capability": capability or None,
                "on": str(scope), "user": decision.user, "why": decision.why,
                "binding": _binding_json(decision.binding)}

    @operation("access.who-can", "project")
    async def who_can(self, caller: Caller, project: object, action: object) -> dict:
        """Every user who may, with the binding that allows; and the denies that block a grant."""
        asked, capability = _capability(action)
        scope = await self._asked_scope(caller, project)
        state = self._state
        allowed: builtins.list[dict[str, object]] = [
            {"user": ROOT, "why": "root is an admin of everything", "binding": None}]
        denied: builtins.list[dict[str, object]] = []
        for name in sorted(state.users):
            decision = self._judge(name, capability, scope)
            if decision.allowed:
                allowed.append({"user": name, "why": decision.why, "binding": _binding_json(decision.binding)})
            elif decision.binding is not None:  # a deny decided it: would a grant have allowed?
                denied.append({"user": name, "why": decision.why, "binding": _binding_json(decision.binding)})
        return {"action": asked, "capability": capability or None, "on": str(scope), "allowed": allowed,
                "denied": denied}

    @operation("access.whoami")
    async def whoami(self, caller: Caller) -> dict:
        user = self.policy.user_of(caller) if isinstance(self.policy, AccessPolicy) else None
        if caller.name is not None:
            user = caller.name
        bindings = self._state.by_user.get(user or "", ())
        return {"user": user, "uid": caller.uid, "via": caller.transport, "org": caller.org,
                "root": user == ROOT, "token": caller.token,
                "bindings": [_binding_json(b) for b in bindings]}

    @operation("audit.list", kind="host")
    async def audit(self, caller: Caller, user: object = None, denied: object = False,
                    limit: object = 200) -> builtins.list[dict]:
        if user is not None and not isinstance(user, str):
            raise BadRequest("'user' must be a user name")
        if not isinstance(denied, bool):
            raise BadRequest("'denied' must be true or false")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_AUDIT:
            raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_AUDIT}")
        await self.ctx.audit.flush()
        return await self.ctx.store.call(lambda db: audit_store.listing(db, user=user or None, denied=denied,
                                                                         limit=limit))

