#!/usr/bin/env python3
"""Benchmark: the authorization check, in µs per call, at 1,000 bindings.

    .venv/bin/python tests/bench/bench_authorize.py [--bindings 1000] [--calls 20000]

How the figures are taken, and why:
- ``AccessPolicy.decide`` (what every request runs) on an ``AccessState`` holding N bindings, in
  two shapes: spread over N users (one each; the caller's few among many), and one user holding
  all N (every project of an organisation granted one by one, the deny the caller meets last).
  Each call is a unix caller whose uid maps to the user, asking ``service.scale`` on a project.
- Beside it, the naive way: the same decision as SQL queries per call on the real store (the
  uid's user, then its bindings that cover the project, deny first, then a role that has the
  capability), on a file store with the migrations applied: what a check that reads the store
  on every request costs.
- Both in one process, one after the other, each the median of 5 runs of ``--calls`` calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mariposa.access.capabilities import BUILTIN_ROLES  # noqa: E402
from mariposa.access.model import AccessState, Binding, Role, Scope, User  # noqa: E402
from mariposa.access.policy import AccessPolicy  # noqa: E402
from mariposa.control.caller import Caller  # noqa: E402
from mariposa.store.db import open_database  # noqa: E402

ORG = "default"


def shapes(n: int) -> dict[str, tuple[list[User], list[Binding], Caller, Scope]]:
    """(users, bindings, the caller, where it asks) for each shape."""
    spread_users = [User(f"u{i}", (10_000 + i,)) for i in range(n)]
    spread = [Binding(f"b{i}", f"u{i}", "grant", ORG, role="operator", project_id=f"p{i}", project=f"proj{i}")
              for i in range(n)]
    one_users = [User("heavy", (20_000,))]
    one = [Binding(f"h{i}", "heavy", "grant", ORG, role="viewer", project_id=f"p{i}", project=f"proj{i}")
           for i in range(n - 2)]
    one += [Binding("hg", "heavy", "grant", ORG, role="operator"),
            Binding("hd", "heavy", "deny", ORG, capability="service:scale", project_id=f"p{n - 1}",
                    project=f"proj{n - 1}")]
    target = n // 2
    return {
        f"{n:,} bindings over {n:,} users": (spread_users, spread, Caller("unix", uid=10_000 + target, pid=1),
                                             Scope(org=ORG, project=f"proj{target}", project_id=f"p{target}")),
        f"{n:,} bindings of one user": (one_users, one, Caller("unix", uid=20_000, pid=1),
                                        Scope(org=ORG, project=f"proj{n - 1}", project_id=f"p{n - 1}")),
    }


def per_call(fn, calls: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(runs)


NAIVE_USER = "SELECT user FROM user_uids WHERE uid = ?"
NAIVE_BINDINGS = ("SELECT effect, role, capability FROM bindings WHERE user = ? AND (org = '*' OR (org = ? AND "
                  "(project_id IS NULL OR project_id = ?)))")


def naive(db, roles: dict[str, frozenset[str]], caller: Caller, capability: str, scope: Scope) -> bool:
    """The same decision read from the store on every call."""
    row = db.execute(NAIVE_USER, [caller.uid]).fetchone()
    if row is None:
        return False
    rows = db.execute(NAIVE_BINDINGS, [row[0], scope.org, scope.project_id]).fetchall()
    if any(effect == "deny" and cap in (capability, "*", capability.split(":")[0] + ":*")
           for effect, _, cap in rows):
        return False
    return any(effect == "grant" and capability in roles.get(role, ()) for effect, role, _ in rows)


def load(db, users: list[User], bindings: list[Binding]) -> None:
    with db.conn:
        db.conn.execute("DELETE FROM bindings")
        db.conn.execute("DELETE FROM user_uids")
        db.conn.execute("DELETE FROM users")
        db.conn.execute("DELETE FROM projects")
        db.conn.executemany("INSERT INTO users (name, created) VALUES (?, 0)", [(u.name,) for u in users])
        db.conn.executemany("INSERT INTO user_uids (uid, user) VALUES (?, ?)",
                            [(uid, u.name) for u in users for uid in u.uids])
        ids = sorted({b.project_id for b in bindings if b.project_id})
        db.conn.executemany("INSERT INTO projects (id, name, created, desired) VALUES (?, ?, 0, 'running')",
                            [(i, f"proj-{i}") for i in ids])
        db.conn.executemany(
            "INSERT INTO bindings (id, user, effect, role, capability, org, project_id, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            [(b.id, b.user, b.effect, b.role, b.capability, b.org, b.project_id) for b in bindings])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--bindings", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    roles = {name: Role.of(name, text, caps, builtin=True).capabilities for name, (text, caps) in BUILTIN_ROLES.items()}
    results = []
    with tempfile.TemporaryDirectory(prefix="mariposa-bench-authorize-") as tmp:
        db = open_database(Path(tmp) / "mariposa.db")
        for name, (users, bindings, caller, scope) in shapes(args.bindings).items():
            policy = AccessPolicy(socket_gid=None, daemon_uid=0,
                                  state=AccessState.build(users, [], bindings, [ORG]))
            decided = policy.decide(caller, "service.scale", scope)
            load(db, users, bindings)
            assert naive(db, roles, caller, "service:scale", scope) == decided.allowed, name
            ours = per_call(lambda p=policy, c=caller, s=scope: p.decide(c, "service.scale", s), args.calls)
            sql = per_call(lambda c=caller, s=scope: naive(db, roles, c, "service:scale", s),
                           max(args.calls // 10, 100))
            results.append({"shape": name, "decide_us": round(ours, 2), "sql_per_call_us": round(sql, 2),
                            "allowed": decided.allowed, "why": decided.why})
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'shape':34} {'decide()':>10} {'SQL per call':>13} {'ratio':>7}  decision")
    for r in results:
        print(f"{r['shape']:34} {r['decide_us']:7.2f} µs {r['sql_per_call_us']:10.2f} µs "
              f"{r['sql_per_call_us'] / r['decide_us']:6.1f}x  {'allowed' if r['allowed'] else 'refused'}: {r['why']}")


if __name__ == "__main__":
    main()
