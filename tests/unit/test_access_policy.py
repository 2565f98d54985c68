"""The one place that decides (access/policy.py), on states built by hand: who a caller is, that
root may do all, that a deny beats every grant, that the named-only capabilities never come by a
wildcard, and that a binding covers exactly its organisation or project."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mariposa.access.capabilities import ACTIONS, CAPABILITIES, NAMED_ONLY, OPEN_ACTIONS, expand
from mariposa.access.model import ALL_ORGS, ANYWHERE, HOST, AccessState, Binding, Role, Scope, User
from mariposa.access.policy import AccessPolicy, Unmapped, refusal
from mariposa.control.caller import Caller

ALICE, BOB = 1001, 1002
A = Scope(org="default", project="a", project_id="pa")
B = Scope(org="default", project="b", project_id="pb")
OTHER = Scope(org="acme", project="c", project_id="pc")


def policy(*bindings: Binding, roles: tuple[Role, ...] = ()) -> AccessPolicy:
    state = AccessState.build([User("alice", (ALICE,)), User("bob", (BOB,))], list(roles), list(bindings),
                              ["default", "acme"])
    return AccessPolicy(socket_gid=4242, daemon_uid=999, state=state)


def unix(uid: int) -> Caller:
    return Caller(transport="unix", uid=uid, gid=uid, pid=1)


def grant(role: str, org: str = "default", project: str | None = None, user: str = "alice") -> Binding:
    return Binding(id=f"g-{role}-{org}-{project}", user=user, effect="grant", role=role, org=org,
                   project_id=f"p{project}" if project else None, project=project)


def deny(capability: str, org: str = "default", project: str | None = None, user: str = "alice") -> Binding:
    return Binding(id=f"d-{capability}-{org}-{project}", user=user, effect="deny", capability=capability, org=org,
                   project_id=f"p{project}" if project else None, project=project)


def test_root_and_the_daemons_own_uid_may_do_everything_without_a_binding():
    p = policy()
    for uid in (0, 999):
        assert p.decide(unix(uid), "secret.reveal", A).allowed
        assert p.decide(unix(uid), "user.add", HOST).allowed
        assert p.is_root(unix(uid))


def test_an_unmapped_uid_is_refused_naming_the_command_that_maps_it():
    p = policy(grant("admin", ALL_ORGS))
    decision = p.decide(unix(4000), "project.list", ANYWHERE)
    assert not decision.allowed
    error = refusal(unix(4000), "project.list", ANYWHERE, decision)
    assert isinstance(error, Unmapped)
    assert "mariposa user add NAME --uid 4000" in str(error)


def test_a_viewer_reads_but_does_not_scale_and_is_told_what_on_what():
    p = policy(grant("viewer"))
    assert p.decide(unix(ALICE), "project.get", A).allowed
    assert p.decide(unix(ALICE), "project.list", ANYWHERE).allowed
    decision = p.decide(unix(ALICE), "service.scale", A)
    assert not decision.allowed
    assert str(refusal(unix(ALICE), "service.scale", A, decision)).startswith(
        "permission denied: service:scale on default.a")
    assert not p.decide(unix(ALICE), "secret.reveal", A).allowed


def test_a_project_binding_covers_that_project_only_and_an_org_binding_its_projects_only():
    p = policy(grant("operator", project="a"), grant("viewer", org="acme"))
    assert p.decide(unix(ALICE), "service.scale", A).allowed
    assert not p.decide(unix(ALICE), "service.scale", B).allowed
    assert p.decide(unix(ALICE), "project.get", OTHER).allowed
    assert not p.decide(unix(ALICE), "project.get", B).allowed
    assert not p.decide(unix(ALICE), "user.add", HOST).allowed  # the host needs a binding on '*'
    assert policy(grant("admin", ALL_ORGS)).decide(unix(ALICE), "user.add", HOST).allowed


def test_a_deny_beats_every_grant_and_names_itself():
    p = policy(grant("admin", ALL_ORGS), grant("operator", project="a"), deny("service:scale", project="a"))
    decision = p.decide(unix(ALICE), "service.scale", A)
    assert not decision.allowed and decision.binding is not None and decision.binding.effect == "deny"
    assert "deny service:scale" in decision.why
    assert p.decide(unix(ALICE), "service.scale", B).allowed  # only where it is bound
    assert p.decide(unix(ALICE), "service.stop", A).allowed  # only what it names


def test_a_wildcard_deny_covers_everything_even_the_named_only():
    p = policy(grant("admin"), deny("*"))
    assert not p.decide(unix(ALICE), "secret.reveal", A).allowed
    assert not p.decide(unix(ALICE), "project.get", A).allowed
    p = policy(grant("admin"), deny("secret:*"))
    assert not p.decide(unix(ALICE), "secret.reveal", A).allowed
    assert p.decide(unix(ALICE), "meta.set", A).allowed


def test_secret_reveal_and_exec_come_by_name_only():
    assert not NAMED_ONLY & expand(["*"])
    assert "secret:reveal" not in expand(["secret:*"])
    assert "secret:write" in expand(["secret:*"])
    everything = Role.of("everything", "all by wildcard", ("*",))
    p = policy(grant("everything"), roles=(everything,))
    assert p.decide(unix(ALICE), "secret.set", A).allowed
    assert not p.decide(unix(ALICE), "secret.reveal", A).allowed
    assert not p.decide(unix(ALICE), "instance.exec", A).allowed
    revealer = Role.of("revealer", "by name", ("project:read", "secret:reveal"))
    assert policy(grant("revealer"), roles=(revealer,)).decide(unix(ALICE), "secret.reveal", A).allowed


def test_an_unknown_capability_in_a_role_is_refused():
    with pytest.raises(ValueError, match="unknown capability 'service:explode'"):
        expand(["project:read", "service:explode"])
    with pytest.raises(ValueError, match="matches no capability"):
        expand(["nothing:*"])


def test_the_builtin_roles_nest():
    p = policy()
    caps = {name: role.capabilities for name, role in p.state.roles.items()}
    assert caps["viewer"] < caps["operator"] < caps["developer"] < caps["admin"]
    assert "secret:reveal" in caps["admin"] and "secret:reveal" not in caps["developer"]


def test_the_daemon_itself_and_the_scraper():
    p = policy()
    assert p.decide(Caller(transport="watch", name="file"), "project.update", A).allowed
    scraper = Caller(transport="metrics-http")
    assert p.decide(scraper, "metrics.scrape", HOST).allowed
    assert not p.decide(scraper, "project.list", ANYWHERE).allowed


def test_a_remote_caller_is_its_tokens_user_whatever_uid():
    p = policy(grant("viewer", user="bob"))
    remote = Caller(transport="tls", user="bob", token="t1")
    assert p.decide(remote, "project.get", A).allowed
    assert not p.decide(remote, "service.scale", A).allowed
    assert not p.is_root(Caller(transport="tls", user=None, uid=0))  # a uid means nothing remotely


def test_any_known_user_may_ask_the_open_actions():
    p = policy()
    for action in OPEN_ACTIONS:
        assert p.decide(unix(ALICE), action, ANYWHERE).allowed
    assert not p.decide(unix(4000), "system.ping", ANYWHERE).allowed


def test_every_action_needs_a_capability_that_exists():
    assert set(ACTIONS.values()) <= set(CAPABILITIES)
    assert len(CAPABILITIES) >= 20


capability = st.sampled_from(sorted(CAPABILITIES))
scopes = st.sampled_from([A, B, OTHER])


@given(st.lists(st.tuples(st.sampled_from(["viewer", "operator", "developer", "admin"]),
                          st.sampled_from(["default", "acme", ALL_ORGS]), st.sampled_from([None, "a", "b"])),
                max_size=6),
       capability, st.sampled_from(["default", "acme", ALL_ORGS]), st.sampled_from([None, "a", "b"]), scopes)
def test_a_covering_deny_always_wins(grants, denied, deny_org, deny_project, scope):
    bindings = [grant(r, o, pr if o != ALL_ORGS else None) for r, o, pr in grants]
    bindings.append(deny(denied, deny_org, deny_project if deny_org != ALL_ORGS else None))
    p = policy(*bindings)
    for action, cap in ACTIONS.items():
        if cap == denied and bindings[-1].covers(scope):
            assert not p.decide(unix(ALICE), action, scope).allowed
