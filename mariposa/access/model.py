"""Who may do what, as plain values: users, roles, bindings, the scope an action is asked on and
the decision. ``AccessState`` is the whole of it in memory, replaced (never changed) after every
change to the tables, so ``decide`` reads it without a lock or a trip to the store."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mariposa.access.capabilities import BUILTIN_ROLES, expand

ALL_ORGS = "*"  # a binding on every organisation, and on the host
DEFAULT_ORG = "default"
ROOT = "root"  # the built-in user of uid 0 (and of the daemon's own uid): admin of everything


@attrs.frozen
class Scope:
    """What an action is asked on: a project of an organisation, an organisation as a whole, the
    host (``org`` None: users, registries, the secrets key), or ``anywhere`` (a listing with no
    project named, allowed to whoever may read something and then filtered to what they may)."""

    org: str | None = None
    project: str | None = None  # the project's name
    project_id: str | None = None
    anywhere: bool = False
    ref: str | None = None  # a target left unresolved (root's fast path): the audit trail shows it as given

    def __str__(self) -> str:
        if self.ref is not None:
            return self.ref
        if self.anywhere:
            return self.org or "any organisation"
        if self.org is None:
            return "host"
        return f"{self.org}.{self.project}" if self.project else self.org


HOST = Scope()
ANYWHERE = Scope(anywhere=True)


@attrs.frozen
class User:
    name: str
    uids: tuple[int, ...] = ()
    created: float = 0.0


@attrs.frozen
class Role:
    name: str
    description: str
    patterns: tuple[str, ...]  # as written, wildcards kept
    capabilities: frozenset[str]  # expanded
    builtin: bool = False

    @classmethod
    def of(cls, name: str, description: str, patterns: tuple[str, ...], builtin: bool = False) -> Role:
        return cls(name, description, tuple(patterns), expand(patterns), builtin)


BUILTIN = {name: Role.of(name, text, caps, builtin=True) for name, (text, caps) in BUILTIN_ROLES.items()}


@attrs.frozen
class Binding:
    id: str
    user: str
    effect: str  # grant | deny
    org: str  # an organisation, or ALL_ORGS
    role: str | None = None  # a grant's
    capability: str | None = None  # a deny's (a name, area:* or *)
    project_id: str | None = None  # on one project of ``org``
    project: str | None = None  # its name, for people

    def covers(self, scope: Scope) -> bool:
        """Whether the binding applies where the action is asked (an ``anywhere`` scope is covered
        by every binding on its organisation, or on any when it names none)."""
        if self.org == ALL_ORGS:
            return True
        if scope.anywhere:
            return scope.org is None or scope.org == self.org
        if scope.org is None or self.org != scope.org:
            return False
        return self.project_id is None or self.project_id == scope.project_id

    @property
    def on(self) -> str:
        where = "every organisation" if self.org == ALL_ORGS else self.org
        # a project deleted since the state was read has no name any more: its id says which it was
        return f"{where}.{self.project or 'project ' + self.project_id[:12]}" if self.project_id else where

    def __str__(self) -> str:
        what = f"role {self.role}" if self.effect == "grant" else f"deny {self.capability}"
        return f"{self.user}: {what} on {self.on} (binding {self.id[:8]})"

    def to_json(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class Decision:
    allowed: bool
    why: str
    binding: Binding | None = None
    user: str | None = None
    capability: str | None = None


@attrs.frozen
class AccessState:
    users: Mapping[str, User] = attrs.Factory(dict)
    uid_user: Mapping[int, str] = attrs.Factory(dict)
    roles: Mapping[str, Role] = attrs.Factory(lambda: dict(BUILTIN))
    by_user: Mapping[str, tuple[Binding, ...]] = attrs.Factory(dict)
    orgs: frozenset[str] = frozenset({DEFAULT_ORG})
    # each user's bindings by where they apply, (org, project id or None), '*' under ('*', None):
    # a check finds the few that cover its scope in three lookups, however many the user has
    scoped: Mapping[str, Mapping[tuple[str, str | None], tuple[Binding, ...]]] = attrs.Factory(dict)

    @classmethod
    def build(cls, users: list[User], roles: list[Role], bindings: list[Binding], orgs: list[str]) -> AccessState:
        by_user: dict[str, list[Binding]] = {}
        scoped: dict[str, dict[tuple[str, str | None], list[Binding]]] = {}
        for b in bindings:
            by_user.setdefault(b.user, []).append(b)
            where = (ALL_ORGS, None) if b.org == ALL_ORGS else (b.org, b.project_id)
            scoped.setdefault(b.user, {}).setdefault(where, []).append(b)
        return cls(
            users={u.name: u for u in users},
            uid_user={uid: u.name for u in users for uid in u.uids},
            roles={**{r.name: r for r in roles}, **BUILTIN},
            by_user={k: tuple(v) for k, v in by_user.items()},
            orgs=frozenset(orgs) | {DEFAULT_ORG},
            scoped={u: {k: tuple(v) for k, v in index.items()} for u, index in scoped.items()},
        )

    @property
    def bindings(self) -> list[Binding]:
        return [b for bs in self.by_user.values() for b in bs]
