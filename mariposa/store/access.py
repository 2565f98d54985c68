"""Who may do what, read from the store into one ``AccessState`` (access/model.py) for the policy.

A minimal reader so the daemon's policy knows its users and bindings from the start (the remote
listener's tokens name users); the tables are written by the user, org, role and grant commands.
"""

from __future__ import annotations

import json

import sqlite_utils

from mariposa.access.model import AccessState, Binding, Role, User


def load_state(db: sqlite_utils.Database) -> AccessState:
    uids: dict[str, list[int]] = {}
    for uid, user in db.execute("SELECT uid, user FROM user_uids ORDER BY uid").fetchall():
        uids.setdefault(user, []).append(uid)
    users = [User(name, tuple(uids.get(name, ())), created)
             for name, created in db.execute("SELECT name, created FROM users").fetchall()]
    roles = [Role.of(name, description or "", tuple(json.loads(caps)))
             for name, description, caps in db.execute("SELECT name, description, capabilities FROM roles").fetchall()]
    names = dict(db.execute("SELECT id, name FROM projects").fetchall())
    bindings = [Binding(id=r[0], user=r[1], effect=r[2], role=r[3], capability=r[4], org=r[5], project_id=r[6],
                        project=names.get(r[6]) if r[6] else None)
                for r in db.execute("SELECT id, user, effect, role, capability, org, project_id FROM bindings")]
    orgs = [r[0] for r in db.execute("SELECT name FROM orgs").fetchall()]
    return AccessState.build(users, roles, bindings, orgs)
