"""Public triggers (mariposa/triggers/): the manifest's refusals, the tokens (made once, kept
across versions, stored hashed, shown once), the failure limit, and a POST's effect through the
trigger app, in-process on the fake driver (no sockets: tests/integration/test_triggers.py has
the listener on real Docker)."""

from __future__ import annotations

import hashlib
import json

import pytest

from mariposa.access.model import Scope
from mariposa.control.caller import Caller
from mariposa.errors import NotFound
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.store import triggers as trigger_store
from mariposa.triggers import tokens
from mariposa.triggers.app import NOT_FOUND, TOO_MANY, TriggerApp
from mariposa.triggers.limit import FailureLimit
from tests.unit.conftest import ROOT

EVENT = """services:
  job:
    service_type: event
    image: busybox
    command: sh -c 'sleep 1'
    triggers:
      - name: deploy-hook
        action: run
  web:
    image: busybox
    triggers:
      - {name: web-up, action: scale, scale: "+1"}
      - {name: web-three, action: scale, scale: 3}
      - {name: web-stop, action: stop}
      - {name: web-start, action: start}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "m.yaml")
    return [str(p) for p in info.value.problems]


def service(triggers: str, kind: str = "event") -> str:
    return f"services:\n  s:\n    service_type: {kind}\n    image: busybox\n    triggers:\n{triggers}"


# ---- the manifest -----------------------------------------------------------------------------


def test_triggers_parse():
    spec = parse_manifest(EVENT, "m.yaml")
    assert [(t.name, t.action, t.scale) for t in spec.service("job").triggers] == [("deploy-hook", "run", None)]
    assert [(t.name, t.action, t.scale) for t in spec.service("web").triggers] == [
        ("web-up", "scale", "+1"), ("web-three", "scale", "3"), ("web-stop", "stop", None),
        ("web-start", "start", None)]


@pytest.mark.parametrize("triggers, kind, expected", [
    ("      - {name: a, action: explode}\n", "event",
     "m.yaml:6:27: services.s.triggers[0].action: unknown trigger action 'explode'"),
    ("      - {action: run}\n", "event", "m.yaml:6:9: services.s.triggers[0]: a trigger needs a 'name'"),
    ("      - {name: a}\n", "event", "m.yaml:6:9: services.s.triggers[0]: a trigger needs an 'action'"),
    ("      - {name: a, action: run}\n      - {name: a, action: stop}\n", "event",
     "m.yaml:7:9: services.s.triggers[1]: trigger 'a' is given twice"),
    ("      - {name: a, action: stop, scale: 2}\n", "event",
     "m.yaml:6:33: services.s.triggers[0].scale: 'scale' is only for action scale, not stop"),
    ("      - {name: a, action: scale}\n", "event",
     "m.yaml:6:27: services.s.triggers[0].action: action scale needs 'scale'"),
    ("      - {name: a, action: scale, scale: -1}\n", "event",
     "m.yaml:6:41: services.s.triggers[0].scale: must be 0 or more, got -1"),
    ("      - {name: a, action: scale, scale: 'x1'}\n", "event",
     "m.yaml:6:41: services.s.triggers[0].scale: expected a scale"),
    ("      - {name: a, action: run}\n", "continuous",
     "m.yaml:6:27: services.s.triggers[0].action: action 'run' is only for service_type scheduled or event"),
    ("      - {name: 'a b', action: stop}\n", "event",
     "m.yaml:6:16: services.s.triggers[0].name: invalid trigger name"),
    ("      - {name: a, action: stop, when: now}\n", "event",
     "m.yaml:6:33: services.s.triggers[0].when: unknown trigger option 'when'"),
    ("      - stop\n", "event", "m.yaml:6:9: services.s.triggers[0]: expected a trigger mapping"),
])
def test_bad_triggers_are_refused_where_written(triggers, kind, expected):
    found = problems(service(triggers, kind))
    assert any(p.startswith(expected) for p in found), found


def test_trigger_names_are_unique_in_the_project():
    text = EVENT.replace("web-stop", "deploy-hook")
    assert problems(text) == ["m.yaml:14:16: services.web.triggers[2].name: trigger name 'deploy-hook' is "
                              "taken by service 'job': trigger names are unique in a project"]


def test_start_stop_scale_triggers_on_a_continuous_service():
    spec = parse_manifest(service("      - {name: a, action: stop}\n", "continuous"), "m.yaml")
    assert spec.service("s").triggers[0].action == "stop"


def test_triggers_never_change_the_instances():
    with_triggers = parse_manifest(EVENT, "m.yaml").service("web")
    without = parse_manifest(EVENT.split("  web:")[0] + "  web:\n    image: busybox\n", "m.yaml").service("web")
    assert with_triggers.spec_hash == without.spec_hash


# ---- tokens and the failure limit ------------------------------------------------------------------


def test_a_wrong_token_takes_the_compare_a_right_one_does(monkeypatch):
    """Constant time: the same compare_digest, on operands of the same length, whether a row was
    found or not (the timing itself is not asserted: only that both paths do the same work)."""
    calls = []
    real = tokens.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.new_token()
    assert tokens.TOKEN_RE.fullmatch(token)
    row = trigger_store.TriggerRow("p", "t", "s", "run", None, tokens.token_hash(token), None, 0.0, None)
    assert tokens.matches(tokens.token_hash(token), row)
    assert not tokens.matches(tokens.token_hash(tokens.new_token()), None)
    assert not tokens.matches(tokens.token_hash(tokens.new_token()), row)
    assert calls == [(64, 64)] * 3


def test_failure_limit():
    limit = FailureLimit(failures=10, window=60, block=60, max_addresses=3)
    for i in range(9):
        assert not limit.failed("a", 100 + i)
    assert not limit.blocked("a", 109)
    assert limit.failed("a", 109)  # the 10th within a minute
    assert limit.blocked("a", 110) and limit.blocked("a", 168.9)
    assert not limit.blocked("a", 169.1)
    assert not limit.blocked("b", 110)  # per address
    for i in range(9):  # spread out: never 10 within a minute
        assert not limit.failed("c", 1000 + i * 10)
    for i in range(20):  # never more than max_addresses tracked
        limit.failed(f"x{i}", 2000)
    assert len(limit) <= 3


# ---- the store and the control layer -------------------------------------------------------------


async def rows(core, project="p"):
    p = await core.control.projects._project(project)
    return await core.ctx.store.call(trigger_store.listing, p.id)


async def test_tokens_made_once_kept_across_versions_and_gone_with_their_trigger(core):
    await core.control.projects.add(ROOT, "p", EVENT, "m.yaml")
    first = {r.name: r for r in await rows(core)}
    assert set(first) == {"deploy-hook", "web-up", "web-three", "web-stop", "web-start"}
    assert all(len(r.token_hash) == 64 and r.pending for r in first.values())
    # a new version: kept triggers keep their tokens, a changed action is taken, a new one is made
    changed = EVENT.replace("web-stop, action: stop", "web-stop, action: start").replace(
        "      - {name: web-start, action: start}\n", "      - {name: web-new, action: stop}\n")
    await core.control.projects.update(ROOT, "p", changed, "m.yaml")
    second = {r.name: r for r in await rows(core)}
    assert set(second) == {"deploy-hook", "web-up", "web-three", "web-stop", "web-new"}
    for name in ("deploy-hook", "web-up", "web-three", "web-stop"):
        assert second[name].token_hash == first[name].token_hash
    assert second["web-stop"].action == "start"
    assert second["web-new"].token_hash not in {r.token_hash for r in first.values()}
    await core.control.projects.delete(ROOT, "p")
    assert await core.ctx.store.call(lambda db: db.execute("SELECT COUNT(*) FROM triggers").fetchone()[0]) == 0


async def test_list_masks_reveal_shows_once_rotate_replaces(core):
    await core.control.projects.add(ROOT, "p", EVENT, "m.yaml")
    core.ctx.trigger_base = "http://127.0.0.1:8787"
    listed = await core.control.triggers.list(ROOT, "p")
    assert {r["url"] for r in listed} == {"http://127.0.0.1:8787/v1/triggers/<hidden>"}
    assert not any(r["revealed"] for r in listed)
    shown = {r["name"]: r for r in await core.control.triggers.reveal(ROOT, "p")}
    token = shown["deploy-hook"]["url"].rsplit("/", 1)[1]
    assert tokens.TOKEN_RE.fullmatch(token) and shown["deploy-hook"]["path"] == "/v1/triggers/" + token
    stored = {r.name: r for r in await rows(core)}
    assert stored["deploy-hook"].token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert all(r.pending is None for r in stored.values())
    again = await core.control.triggers.reveal(ROOT, "p")  # once only
    assert all(r["url"].endswith("<hidden>") and r["revealed"] for r in again)
    rotated = await core.control.triggers.rotate(ROOT, "p", "deploy-hook")
    new = rotated["url"].rsplit("/", 1)[1]
    assert new != token and tokens.TOKEN_RE.fullmatch(new)
    assert (await rows(core))[0].token_hash == tokens.token_hash(new)
    with pytest.raises(NotFound):
        await core.control.triggers.rotate(ROOT, "p", "nope")
    # the tokens are nowhere else: not in the project, its events, its listing
    seen = json.dumps([await core.control.projects.get(ROOT, "p"), await core.control.events.list(ROOT, "p"),
                       await core.control.triggers.list(ROOT, "p")], default=str)
    assert token not in seen and new not in seen
    assert "trigger deploy-hook of service job: token replaced" in seen


async def test_a_post_acts_through_the_control_layer_as_the_trigger(core):
    await core.control.projects.add(ROOT, "p", EVENT, "m.yaml")
    core.ctx.trigger_base = "http://127.0.0.1:8787"
    urls = {r["name"]: r["path"] for r in await core.control.triggers.reveal(ROOT, "p")}
    app = TriggerApp(core.control)
    resp = await app.handle("POST", urls["deploy-hook"], "10.0.0.1")
    assert resp.status == 202, resp.body
    run = await core.control.runs.get(ROOT, resp.body["run"])
    assert (run["trigger"], run["author"], run["service"]) == ("url", "trigger:deploy-hook", "job")
    resp = await app.handle("POST", urls["web-three"], "10.0.0.1")
    assert resp.status == 202 and set(resp.body) == {"task"}
    await core.settle({"tasks": [{"id": resp.body["task"]}]})
    await core.settle({"tasks": [{"id": (await app.handle("POST", urls["web-up"], "10.0.0.1")).body["task"]}]})
    [web] = [s for s in await core.control.services.list(ROOT, "p") if s["name"] == "web"]
    assert web["scale"] == 4
    stop = await app.handle("POST", urls["web-stop"], "10.0.0.1")
    await core.settle({"tasks": [{"id": stop.body["task"]}]})
    start = await app.handle("POST", urls["web-start"], "10.0.0.1")
    assert start.status == 202
    await core.settle({"tasks": [{"id": start.body["task"]}]})
    authors = [e["author"] for e in await core.control.events.list(ROOT, "p") if e["type"].startswith("service.")]
    assert {"trigger:web-three", "trigger:web-up", "trigger:web-stop", "trigger:web-start"} <= set(authors)


async def test_wrong_tokens_get_the_unknown_paths_404_then_429(core):
    await core.control.projects.add(ROOT, "p", EVENT, "m.yaml")
    urls = {r["name"]: r["path"] for r in await core.control.triggers.reveal(ROOT, "p")}
    app = TriggerApp(core.control)
    wrong = await app.handle("POST", tokens.path(tokens.new_token()), "10.0.0.2")
    unknown = await app.handle("POST", "/v1/projects", "10.0.0.3")
    get = await app.handle("GET", urls["deploy-hook"], "10.0.0.4")
    assert wrong == unknown == get == NOT_FOUND
    for _ in range(8):
        assert (await app.handle("POST", tokens.path(tokens.new_token()), "10.0.0.2")).status == 404
    assert (await app.handle("POST", tokens.path(tokens.new_token()), "10.0.0.2")).status == 404  # the 10th
    assert await app.handle("POST", urls["deploy-hook"], "10.0.0.2") == TOO_MANY  # right ones too, for a while
    assert (await app.handle("POST", urls["deploy-hook"], "10.0.0.9")).status == 202  # another address
    for _ in range(20):  # successes are never limited
        assert (await app.handle("POST", urls["web-three"], "10.0.0.9")).status == 202


async def test_a_trigger_caller_is_no_socket_caller(core):
    """``trigger:NAME`` is admitted as the daemon's own callers are; nobody else gets that transport."""
    where = Scope(org="default", project="p")
    assert core.control.policy.allows(Caller(transport="trigger", name="trigger:x"), "service.run", where)
    assert not core.control.policy.allows(Caller(transport="unix"), "service.run", where)


# ---- the configuration ----------------------------------------------------------------------------


def test_triggers_listen_in_the_configuration(tmp_path):
    from mariposa import config as configuration
    from mariposa.triggers.listener import parse_listen

    good = tmp_path / "good.toml"
    good.write_text('triggers_listen = "127.0.0.1:8787"\n')
    assert configuration.load(str(good)).triggers_listen == "127.0.0.1:8787"
    assert configuration.DaemonConfig().triggers_listen is None  # absent: no listener
    bad = tmp_path / "bad.toml"
    bad.write_text('resync = 5\ntriggers_listen = "8787"\n')
    with pytest.raises(configuration.ConfigError, match=r"bad.toml:2: triggers_listen: triggers_listen must be "
                                                        r"HOST:PORT"):
        configuration.load(str(bad))
    assert parse_listen("[::1]:8787") == ("::1", 8787)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for wrong in ("localhost", ":80", "a:b", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(wrong)
