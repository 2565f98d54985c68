"""The rows of who may do what: organisations, users and their uids, custom roles and bindings,
and ``load_state``, which reads them all into the ``AccessState`` the policy decides on.

Every function here checks what it is given before it writes (a name's shape, a uid nobody else
has, a role that exists), so a refused change changes nothing; the daemon is the only writer and
replaces the policy's state after each change (control/access.py).
"""

from __future__ import annotations

import json
import re

import sqlite_utils

from mariposa.access.capabilities import BUILTIN_ROLES, expand, matches
from mariposa.access.model import ALL_ORGS, DEFAULT_ORG, ROOT, AccessState, Binding, Role, User
from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa.store.db import new_id, now

NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_UID = 2**32 - 2  # (uid_t)-1 is "no uid"


def check_name(field: str, value: object) -> str:
    """A user, organisation or role name: lowercase, 1-32 characters, starting with a letter."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise BadRequest(f"{field} {str(value)[:40]!r} must be 1-32 lowercase letters, digits, '-' or '_', "
                         "starting with a letter")
    return value


def check_uid(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"uid {value!r} must be a whole number")
    try:
        uid = int(value)
    except ValueError:
        raise BadRequest(f"uid {value!r} must be a whole number") from None
    if uid == 0:
        raise BadRequest("uid 0 is the built-in root user and cannot be mapped")
    if not 0 < uid <= MAX_UID:
        raise BadRequest(f"uid {uid} is out of range (1-{MAX_UID})")
    return uid


# ---- organisations ------------------------------------------------------------------------------


def org_exists(db: sqlite_utils.Database, name: str) -> bool:
    return db.execute("SELECT 1 FROM orgs WHERE name = ?", [name]).fetchone() is not None


def require_org(db: sqlite_utils.Database, name: str) -> str:
    if not org_exists(db, name):
        raise NotFound(f"no organisation '{name}' (mariposa org list shows them)")
    return name


def add_org(db: sqlite_utils.Database, name: object) -> dict:
    name = check_name("organisation name", name)
    if name == ALL_ORGS or org_exists(db, name):
        raise Conflict(f"organisation '{name}' already exists")
    db.execute("INSERT INTO orgs (name, created) VALUES (?, ?)", [name, now()])
    return {"name": name}


def list_orgs(db: sqlite_utils.Database) -> list[dict]:
    return [dict(r) for r in db.query(
        "SELECT o.name, o.created, (SELECT COUNT(*) FROM projects p WHERE p.org = o.name) AS projects "
        "FROM orgs o ORDER BY o.name")]


def remove_org(db: sqlite_utils.Database, name: str) -> dict:
    if name == DEFAULT_ORG:
        raise BadRequest("the organisation 'default' always exists and cannot be removed")
    require_org(db, name)
    projects = [r[0] for r in db.execute("SELECT name FROM projects WHERE org = ? ORDER BY name", [name])]
    if projects:
        raise Conflict(f"organisation '{name}' still has projects: {', '.join(projects)}; "
                       "move them (mariposa project move P --to-org O) or delete them first")
    bindings = db.execute("DELETE FROM bindings WHERE org = ?", [name]).rowcount
    db.execute("DELETE FROM orgs WHERE name = ?", [name])
    return {"name": name, "removed": True, "bindings_removed": bindings}


# ---- users --------------------------------------------------------------------------------------


def _uid_owner(db: sqlite_utils.Database, uid: int) -> str | None:
    row = db.execute("SELECT user FROM user_uids WHERE uid = ?", [uid]).fetchone()
    return row[0] if row else None


def add_user(db: sqlite_utils.Database, name: object, uids: list[object]) -> dict:
    name = check_name("user name", name)
    if name == ROOT:
        raise BadRequest("'root' is the built-in user of uid 0 and cannot be added")
    if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
        raise Conflict(f"user '{name}' already exists")
    checked = sorted({check_uid(u) for u in uids})
    for uid in checked:
        owner = _uid_owner(db, uid)
        if owner is not None:
            raise Conflict(f"uid {uid} is already mapped to user '{owner}' (a uid is one user's; "
                           f"mariposa user rm {owner} first)")
    db.execute("INSERT INTO users (name, created) VALUES (?, ?)", [name, now()])
    db.conn.executemany("INSERT INTO user_uids (uid, user) VALUES (?, ?)", [(uid, name) for uid in checked])
    return {"name": name, "uids": checked}


def require_user(db: sqlite_utils.Database, name: str) -> str:
    if name == ROOT:
        return name
    if not isinstance(name, str) or not db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
        raise NotFound(f"no user '{name}' (mariposa user list shows them)")
    return name


def remove_user(db: sqlite_utils.Database, name: str) -> dict:
    if name == ROOT:
        raise BadRequest("'root' is built in and cannot be removed")
    require_user(db, name)
    bindings = db.execute("SELECT COUNT(*) FROM bindings WHERE user = ?", [name]).fetchone()[0]
    db.execute("DELETE FROM users WHERE name = ?", [name])  # uids, bindings and tokens cascade
    return {"name": name, "removed": True, "bindings_removed": bindings}


def users(db: sqlite_utils.Database) -> list[User]:
    uids: dict[str, list[int]] = {}
    for uid, user in db.execute("SELECT uid, user FROM user_uids ORDER BY uid"):
        uids.setdefault(user, []).append(uid)
    return [User(r["name"], tuple(uids.get(r["name"], ())), r["created"])
            for r in db.query("SELECT name, created FROM users ORDER BY name")]


# ---- roles --------------------------------------------------------------------------------------


def define_role(db: sqlite_utils.Database, name: str, description: str | None, patterns: list[str]) -> dict:
    """Add a custom role or replace one; a built-in role's name is refused."""
    if name in BUILTIN_ROLES:
        raise Conflict(f"role '{name}' is built in and cannot be redefined")
    expand(patterns)  # checked by the caller with the file's positions; here again for any other caller
    replaced = db.execute("SELECT 1 FROM roles WHERE name = ?", [name]).fetchone() is not None
    db.execute("INSERT INTO roles (name, description, capabilities, created) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(name) DO UPDATE SET description = excluded.description, "
               "capabilities = excluded.capabilities", [name, description, json.dumps(list(patterns)), now()])
    return {"name": name, "replaced": replaced}


def roles(db: sqlite_utils.Database) -> list[Role]:
    out = []
    for r in db.query("SELECT name, description, capabilities FROM roles ORDER BY name"):
        try:
            out.append(Role.of(r["name"], r["description"] or "", tuple(json.loads(r["capabilities"]))))
        except ValueError:  # a capability a newer release removed: the role gives nothing it no longer knows
            known = tuple(p for p in json.loads(r["capabilities"]) if _known(p))
            out.append(Role.of(r["name"], r["description"] or "", known))
    return out


def _known(pattern: str) -> bool:
    try:
        expand([pattern])
        return True
    except ValueError:
        return False


# ---- bindings -----------------------------------------------------------------------------------


def add_binding(db: sqlite_utils.Database, *, user: str, effect: str, org: str, role: str | None = None,
                capability: str | None = None, project_id: str | None = None, author: str | None = None) -> Binding:
    require_user(db, user)
    if user == ROOT:
        raise BadRequest("root is an admin of everything: it has no bindings")
    if org != ALL_ORGS:
        require_org(db, org)
    if project_id is not None and org == ALL_ORGS:
        raise BadRequest("a binding on one project is on that project's organisation, not '*'")
    if role is not None and role not in BUILTIN_ROLES and not db.execute(
            "SELECT 1 FROM roles WHERE name = ?", [role]).fetchone():
        raise NotFound(f"no role '{role}' (mariposa role list shows them)")
    if capability is not None:
        check_capability(capability)
    same = db.execute(
        "SELECT id FROM bindings WHERE user = ? AND effect = ? AND org = ? AND role IS ? AND capability IS ? "
        "AND project_id IS ?", [user, effect, org, role, capability, project_id]).fetchone()
    binding_id = same[0] if same else new_id()
    if not same:
        db.execute("INSERT INTO bindings (id, user, effect, role, capability, org, project_id, created, author) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [binding_id, user, effect, role, capability, org, project_id, now(), author])
    return get_binding(db, binding_id)


def check_capability(pattern: str) -> str:
    """A deny's capability: a name, ``area:*`` or ``*`` (a deny's wildcard covers the named-only ones)."""
    from mariposa.access.capabilities import CAPABILITIES

    if pattern == "*" or pattern in CAPABILITIES:
        return pattern
    if pattern.endswith(":*") and any(matches(pattern, c) for c in CAPABILITIES):
        return pattern
    raise BadRequest(f"unknown capability '{pattern}' (mariposa role list --capabilities shows them)")


_BINDINGS = ("SELECT b.*, p.name AS project FROM bindings b LEFT JOIN projects p ON p.id = b.project_id")


def _binding(row: dict) -> Binding:
    return Binding(id=row["id"], user=row["user"], effect=row["effect"], org=row["org"], role=row["role"],
                   capability=row["capability"], project_id=row["project_id"], project=row["project"])


def get_binding(db: sqlite_utils.Database, binding_id: str) -> Binding:
    """By id, or a unique prefix of 4 or more characters (compared as text, never as a pattern)."""
    rows = list(db.query(_BINDINGS + " WHERE substr(b.id, 1, length(?)) = ? ORDER BY b.id LIMIT 2",
                         [binding_id, binding_id]))
    exact = [r for r in rows if r["id"] == binding_id]
    if exact:
        return _binding(exact[0])
    if len(binding_id) >= 4 and len(rows) == 1:
        return _binding(rows[0])
    if len(rows) > 1 and len(binding_id) >= 4:
        raise BadRequest(f"binding id prefix '{binding_id}' is ambiguous; give more characters")
    raise NotFound(f"no binding '{binding_id}'")


def bindings(db: sqlite_utils.Database) -> list[Binding]:
    return [_binding(r) for r in db.query(_BINDINGS + " ORDER BY b.created, b.id")]


def remove_binding(db: sqlite_utils.Database, binding_id: str) -> Binding:
    b = get_binding(db, binding_id)
    db.execute("DELETE FROM bindings WHERE id = ?", [b.id])
    return b


def find_bindings(db: sqlite_utils.Database, *, user: str, effect: str, org: str, role: str | None,
                  capability: str | None, project_id: str | None) -> list[Binding]:
    return [_binding(r) for r in db.query(
        _BINDINGS + " WHERE b.user = ? AND b.effect = ? AND b.org = ? AND b.role IS ? AND b.capability IS ? "
        "AND b.project_id IS ?", [user, effect, org, role, capability, project_id])]


def drop_project_bindings(db: sqlite_utils.Database, project_id: str) -> list[Binding]:
    """A moved project's own bindings: they were given on its old organisation."""
    dropped = [_binding(r) for r in db.query(_BINDINGS + " WHERE b.project_id = ?", [project_id])]
    db.execute("DELETE FROM bindings WHERE project_id = ?", [project_id])
    return dropped


# ---- the whole of it ----------------------------------------------------------------------------


def load_state(db: sqlite_utils.Database) -> AccessState:
    return AccessState.build(users(db), roles(db), bindings(db),
                             [r[0] for r in db.execute("SELECT name FROM orgs")])


def move_project(db: sqlite_utils.Database, project_id: str, org: str, author: str | None) -> tuple[str, list[Binding]]:
    """Move a project to ``org`` in one transaction: (the organisation it left, the bindings on it
    that were dropped). Its meta (keyed by project id), its secrets (by project name), versions
    and tasks stay with it as they are: only its ``org`` changes."""
    from mariposa.store import events as event_store

    require_org(db, org)
    row = db.execute("SELECT name, org FROM projects WHERE id = ?", [project_id]).fetchone()
    if row is None:
        raise NotFound(f"no project '{project_id}'")
    name, source = row
    if source == org:
        raise BadRequest(f"project '{name}' is already in organisation '{org}'")
    dropped = drop_project_bindings(db, project_id)
    db.execute("UPDATE projects SET org = ? WHERE id = ?", [org, project_id])
    event_store.record(db, "project.move", f"project {name} moved from organisation {source} to {org}"
                       + (f"; {len(dropped)} binding(s) on the project dropped" if dropped else ""),
                       project_id=project_id, author=author)
    return source, dropped
