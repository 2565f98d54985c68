"""Users, organisations, roles and bindings on the fake driver: every change is seen by the very
next request (the policy's state is replaced after it), refusals change nothing and say why."""

from __future__ import annotations

import inspect

import pytest

from mariposa import control as control_pkg
from mariposa.access.capabilities import ACTIONS, OPEN_ACTIONS
from mariposa.control import Caller
from mariposa.control.base import Area
from mariposa.errors import BadRequest, Conflict, Forbidden, NotFound
from tests.unit.conftest import ROOT, Core

MANIFEST = "services:\n  web:\n    image: busybox\n    command: sleep 1000\n"
ANN = Caller(transport="unix", uid=1001, gid=4242, pid=11)
BOB = Caller(transport="unix", uid=1002, gid=4242, pid=12)
ANN_IN_ACME = Caller(transport="unix", uid=1001, gid=4242, pid=11, org="acme")


def test_every_operation_names_an_action_the_policy_knows():
    """An action missing from ACTIONS is refused to all but root: a typo would fail closed, and
    silently; this finds it first."""
    unknown, seen = [], set()
    for _, module in inspect.getmembers(control_pkg, inspect.ismodule):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Area):
                for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction):
                    action = getattr(fn, "action", None)
                    seen.add(action)
                    if action is not None and action not in ACTIONS and action not in OPEN_ACTIONS:
                        unknown.append(f"{cls.__name__}.{name}: {action}")
    assert unknown == []
    assert {"user.add", "access.grant", "access.can-i", "project.move", "service.scale"} <= seen and len(seen) > 80


async def setup(core: Core) -> None:
    c = core.control.access
    await c.user_add(ROOT, "ann", [1001])
    await c.user_add(ROOT, "bob", [1002])
    for name in ("a", "b"):
        await core.control.projects.add(ROOT, name, MANIFEST)


async def test_users_names_and_uids_are_checked_and_change_nothing_when_refused(core: Core):
    c = core.control.access
    for bad, field in (("Ann", "user name"), ("", "user name"), ("a" * 33, "user name"), ("1ann", "user name")):
        with pytest.raises(BadRequest, match=field):
            await c.user_add(ROOT, bad, [1001])
    with pytest.raises(BadRequest, match="uid 0 is the built-in root"):
        await c.user_add(ROOT, "ann", [0])
    with pytest.raises(BadRequest, match="'root' is the built-in"):
        await c.user_add(ROOT, "root", [5])
    await c.user_add(ROOT, "ann", [1001, 1003])
    with pytest.raises(Conflict, match="uid 1001 is already mapped to user 'ann'"):
        await c.user_add(ROOT, "bob", [1002, 1001])
    assert [u["name"] for u in await c.user_list(ROOT)] == ["ann"]  # bob was not half made
    got = await c.user_get(ROOT, "ann")
    assert got["uids"] == [1001, 1003] and got["bindings"] == []
    with pytest.raises(NotFound):
        await c.user_get(ROOT, "bob")
    with pytest.raises(BadRequest, match="organisation name"):
        await c.org_add(ROOT, "Acme")


async def test_an_unmapped_uid_is_refused_naming_user_add_and_mapping_it_takes_effect_at_once(core: Core):
    with pytest.raises(Forbidden, match="mariposa user add NAME --uid 1001"):
        await core.control.projects.list(ANN)
    await core.control.access.user_add(ROOT, "ann", [1001])
    with pytest.raises(Forbidden, match="no binding of ann grants project:read"):  # mapped: judged by bindings
        await core.control.projects.list(ANN)
    await core.control.access.grant(ROOT, "ann", "viewer", org="default")
    assert await core.control.projects.list(ANN) == []
    await core.control.access.user_remove(ROOT, "ann")
    with pytest.raises(Forbidden, match="mariposa user add"):
        await core.control.projects.list(ANN)


async def test_viewer_operator_and_deny(core: Core):
    await setup(core)
    a = core.control.access
    await a.grant(ROOT, "ann", "viewer", org="default")
    assert {p["name"] for p in await core.control.projects.list(ANN)} == {"a", "b"}
    with pytest.raises(Forbidden, match=r"permission denied: service:scale on default\.a"):
        await core.control.services.scale(ANN, "a", "web", 2)
    await a.grant(ROOT, "ann", "operator", project="a")
    await core.control.services.scale(ANN, "a", "web", 2)
    with pytest.raises(Forbidden, match=r"service:scale on default\.b"):
        await core.control.services.scale(ANN, "b", "web", 2)
    deny = (await a.deny(ROOT, "ann", "service:scale", project="a"))["binding"]
    with pytest.raises(Forbidden, match="denied by ann: deny service:scale"):
        await core.control.services.scale(ANN, "a", "web", 3)
    no = await a.can_i(ANN, "a", "service.scale")
    assert not no["allowed"] and no["binding"]["id"] == deny["id"]
    yes = await a.can_i(ANN, "a", "service:lifecycle")
    assert yes["allowed"] and yes["binding"]["role"] == "operator"
    who = await a.who_can(ROOT, "a", "service.scale")
    assert [w["user"] for w in who["allowed"]] == ["root"]
    assert [(d["user"], d["binding"]["id"]) for d in who["denied"]] == [("ann", deny["id"])]
    await a.revoke(ROOT, binding=deny["id"][:8])
    assert (await a.can_i(ANN, "a", "service.scale"))["allowed"]
    who = await a.who_can(ROOT, "a", "service:scale")
    assert [w["user"] for w in who["allowed"]] == ["root", "ann"] and who["denied"] == []
    # asking for somebody else needs user:admin
    with pytest.raises(Forbidden, match="user:admin"):
        await a.can_i(ANN, "a", "service.scale", as_user="bob")
    assert not (await a.can_i(ROOT, "a", "service.scale", as_user="bob"))["allowed"]
    audit = await a.audit(ROOT, user="ann", denied=True)
    assert {r["action"] for r in audit} >= {"service.scale"} and all(not r["allowed"] for r in audit)


async def test_wildcard_roles_never_give_the_named_only_capabilities(core: Core):
    await setup(core)
    a = core.control.access
    made = await a.role_define(ROOT, "name: everything\ndescription: all of it\ncapabilities: ['*']\n", "e.yaml")
    assert "secret:reveal" not in made["capabilities"] and "exec" not in made["capabilities"]
    await a.grant(ROOT, "ann", "everything", org="*")
    assert (await a.can_i(ANN, "a", "project:write"))["allowed"]
    assert not (await a.can_i(ANN, "a", "secret:reveal"))["allowed"]
    with pytest.raises(BadRequest, match=r"r\.toml:3: field 'capabilities': unknown capability 'nope'"):
        await a.role_define(ROOT, 'name = "r"\ndescription = "x"\ncapabilities = [\n"nope"]\n'.replace("[\n", "["),
                            "r.toml")
    with pytest.raises(BadRequest, match=r"r\.yaml:2: field 'capabilities'"):
        await a.role_define(ROOT, "name: r\ncapabilities: 5\n", "r.yaml")
    with pytest.raises(BadRequest, match=r"r\.yaml:1: unknown field 'nmae'"):
        await a.role_define(ROOT, "nmae: r\n", "r.yaml")
    with pytest.raises(Conflict, match="built in"):
        await a.role_define(ROOT, "name: viewer\ncapabilities: [project:read]\n", "v.yaml")
    assert [r["name"] for r in await a.role_list(ROOT) if not r["builtin"]] == ["everything"]


async def test_organisations_scope_projects_and_project_move(core: Core):
    await setup(core)
    a, p = core.control.access, core.control.projects
    await a.org_add(ROOT, "acme")
    with pytest.raises(NotFound, match="no organisation 'nope'"):
        await p.add(Caller(transport="unix", uid=0, gid=0, pid=1, org="nope"), "c", MANIFEST)
    acme_root = Caller(transport="unix", uid=0, gid=0, pid=1, org="acme")
    added = await p.add(acme_root, "c", MANIFEST)
    assert added["project"]["org"] == "acme"
    assert {t["target"] for t in added["tasks"]} == {"acme.c.web"}
    assert [x["name"] for x in await p.list(acme_root)] == ["c"]
    with pytest.raises(NotFound, match="no project 'a' in organisation 'acme'"):
        await p.get(acme_root, "a")
    with pytest.raises(Conflict, match="still has projects: c"):
        await a.org_remove(ROOT, "acme")
    with pytest.raises(BadRequest, match="'default' always exists"):
        await a.org_remove(ROOT, "default")

    # ann: admin of default, viewer of acme; project move needs admin of both and a fresh token
    await a.grant(ROOT, "ann", "admin", org="default")
    await a.grant(ROOT, "ann", "viewer", org="acme")
    await a.grant(ROOT, "bob", "viewer", org="default")
    await a.grant(ROOT, "bob", "operator", project="a")
    await core.control.meta.set(ROOT, "a", "colour", "blue")
    with pytest.raises(Forbidden, match="project:move on acme"):
        await p.move(ANN, "a", "acme")
    await a.grant(ROOT, "ann", "admin", org="acme")
    with pytest.raises(Forbidden, match="mariposa token create --user U --expires 10m"):
        await p.move(ANN, "a", "acme")
    fresh = Caller(transport="unix", uid=1001, gid=4242, pid=11, fresh=True)
    moved = await p.move(fresh, "a", "acme")
    assert (moved["from"], moved["to"]) == ("default", "acme")
    assert [b["user"] for b in moved["bindings_dropped"]] == ["bob"]
    assert (await p.get(ROOT, "a"))["org"] == "acme"
    assert (await core.control.meta.get(ROOT, "a", "colour"))["value"] == "blue"
    assert {x["name"] for x in await p.list(BOB)} == {"b"}  # the source organisation's viewer no longer sees it
    with pytest.raises(Forbidden, match=r"project:read on acme\.a"):
        await p.get(BOB, "a")
    assert any(e["type"] == "project.move" for e in await core.control.events.list(ROOT))
    tasks = await core.control.queue.list(ROOT, "a")
    assert tasks and all(t["target"].startswith("acme.a") for t in tasks)


async def test_the_daemon_reads_the_tables_at_start(core: Core, tmp_path):
    """A new policy loaded from the store (as the daemon does at start) sees what was written."""
    from mariposa.access.policy import AccessPolicy
    from mariposa.store import access as access_store

    await setup(core)
    await core.control.access.grant(ROOT, "ann", "viewer", org="default")
    state = await core.ctx.store.call(access_store.load_state)
    policy = AccessPolicy(4242, daemon_uid=0, state=state)
    assert policy.user_of(ANN) == "ann" and policy.user_of(ANN_IN_ACME) == "ann"
    from mariposa.access.model import Scope

    assert policy.decide(ANN, "project.get", Scope(org="default", project="a", project_id="x")).allowed
    assert not policy.decide(BOB, "project.get", Scope(org="default", project="a", project_id="x")).allowed


async def test_the_audit_trail_is_written_once(core: Core):
    """Each decision is one row: the batch is written in the store call's transaction (a commit of
    its own inside it failed the call, and the batch, already written, was kept to go again)."""
    await setup(core)
    with pytest.raises(Forbidden):
        await core.control.services.scale(ANN, "a", "web", 2)
    await core.ctx.audit.flush()
    assert core.ctx.audit.pending == []
    await core.ctx.audit.flush()
    rows = await core.control.access.audit(ROOT, user="ann")
    assert [(r["action"], r["allowed"], r["target"]) for r in rows] == [("service.scale", False, "default.a")]


def test_the_scoped_lookup_finds_exactly_the_bindings_that_cover():
    """``covering`` (three lookups) against the plain scan with ``Binding.covers``."""
    import itertools
    import random

    from mariposa.access.model import ANYWHERE, HOST, AccessState, Binding, Scope
    from mariposa.access.policy import AccessPolicy

    rng = random.Random(18)
    orgs, projects = ["default", "acme", "*"], ["p1", "p2", None]
    bindings = [Binding(f"b{i}", rng.choice(["ann", "bob"]), "grant", org, role="viewer",
                        project_id=None if org == "*" else project)
                for i, (org, project) in enumerate(rng.choices(list(itertools.product(orgs, projects)), k=60))]
    policy = AccessPolicy(None, daemon_uid=0, state=AccessState.build([], [], bindings, ["acme"]))
    scopes = [HOST, ANYWHERE, Scope(org="acme", anywhere=True), Scope(org=""), Scope(org="acme"),
              *(Scope(org=o, project=p, project_id=p) for o in ("default", "acme") for p in ("p1", "p2", "p3"))]
    for user, scope in itertools.product(("ann", "bob", "cyd"), scopes):
        scan = {b.id for b in policy.state.by_user.get(user, ()) if b.covers(scope)}
        assert {b.id for b in policy.covering(user, scope)} == scan, (user, scope)


def test_the_capabilities_doc_is_the_table_in_code():
    from pathlib import Path

    from mariposa.access.capabilities import markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("<!-- capabilities -->\n", 1)[1].split("<!-- /capabilities -->", 1)[0]
    assert table == markdown(), "paste the output of python -m mariposa.access.capabilities into README.md"


async def test_a_binding_id_prefix_is_text_never_a_pattern(core: Core):
    await setup(core)
    await core.control.access.grant(ROOT, "ann", "viewer", org="default")
    for ref in ("____", "%%%%", "%", ""):
        with pytest.raises((NotFound, BadRequest)):
            await core.control.access.revoke(ROOT, binding=ref)
    assert len((await core.control.access.user_get(ROOT, "ann"))["bindings"]) == 1


async def test_removing_a_user_refuses_its_tokens_at_once(core: Core):
    from mariposa.errors import Unauthorized

    await setup(core)
    made = await core.control.tokens.create(ROOT, "ann", None, "ci")
    assert core.ctx.tokens.check(made["token"], made["created"] + 1)["user"] == "ann"
    await core.control.access.user_remove(ROOT, "ann")
    with pytest.raises(Unauthorized):
        core.ctx.tokens.check(made["token"], made["created"] + 2)


async def test_an_organisations_admin_manages_its_bindings_and_no_others(core: Core):
    """Grants, denies and revokes land on an organisation or a project of one: its admin may make
    them there, not in another organisation and not on '*' (that is the host's admin's)."""
    await setup(core)
    a = core.control.access
    await a.org_add(ROOT, "acme")
    await core.control.projects.add(Caller(transport="unix", uid=0, gid=0, pid=1, org="acme"), "c", MANIFEST)
    await a.grant(ROOT, "ann", "admin", org="acme")
    await a.grant(ANN, "bob", "operator", org="acme")
    await a.grant(ANN, "bob", "developer", project="c")
    await a.deny(ANN, "bob", "service:scale", project="c")
    for refused in (lambda: a.grant(ANN, "bob", "viewer", org="default"),
                    lambda: a.grant(ANN, "bob", "viewer", project="a"),
                    lambda: a.grant(ANN, "ann", "admin", org="*"),
                    lambda: a.deny(ANN, "bob", "*", org="default"),
                    lambda: a.user_add(ANN, "carl", [1005])):
        with pytest.raises(Forbidden, match="user:admin on (default|host)"):
            await refused()
    removed = await a.revoke(ANN, "bob", "developer", project="c")
    assert [b["role"] for b in removed["removed"]] == ["developer"]
    assert {(b["role"] or b["capability"], b["org"]) for b in (await a.user_get(ROOT, "bob"))["bindings"]} == {
        ("operator", "acme"), ("service:scale", "acme")}
