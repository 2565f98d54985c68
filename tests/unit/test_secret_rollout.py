"""A secret change reaches the services that read it into their environment as a meta change
does (a new version, rolled out; `on_meta_change: none` left alone), secret names with dots in
templates, and `project copy --with-secrets`. No value appears in any answer or event."""

from __future__ import annotations

import json

import pytest

from mariposa.control.secrets import new_secret_name
from mariposa.converge.goals import with_meta
from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.interpolate import check_variable, lookup_in, render, variables
from mariposa.model import LABEL_SERVICE, InstanceState
from mariposa.store import secrets as secret_store
from tests.unit.conftest import ROOT, Core

CANARY = "canary-env-5d1e-s3cr3t"

MANIFEST = """\
services:
  api:
    image: busybox
    command: sleep 1000
    scale: 2
    min_healthy_time: 0
    secret_env: true
    environment:
      DB_PASSWORD: "{{ .secret.db.password }}"
      PLAIN: hello
  lazy:
    image: busybox
    command: sleep 1000
    secret_env: true
    on_meta_change: none
    environment:
      DB_PASSWORD: "pw={{ .secret.db.password }}"
  files:
    image: busybox
    command: sleep 1000
    secrets: [db.password]
"""


def boxes(core: Core, service: str) -> list:
    return [b for b in core.driver.runtime.boxes.values()
            if b.labels.get(LABEL_SERVICE) == service and b.state == InstanceState.RUNNING]


def env_of(core: Core, service: str) -> list[str]:
    return sorted(b.environment.get("DB_PASSWORD", "") for b in boxes(core, service))


async def test_a_secret_change_rolls_out_a_new_version_of_its_env_users_only(core: Core):
    c = core.control
    await c.secrets.set(ROOT, "p", "db.password", CANARY)
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    assert env_of(core, "api") == [CANARY, CANARY] and env_of(core, "lazy") == [f"pw={CANARY}"]
    files_before = {b.runtime_id for b in boxes(core, "files")}
    lazy_before = {b.runtime_id for b in boxes(core, "lazy")}
    first = (await c.projects.versions(ROOT, "p"))[0]
    assert first["env_secrets"] == ["db.password"] and first["meta_keys"] == []

    changed = await c.secrets.set(ROOT, "p", "db.password", CANARY + "-v2")
    assert [t["service"] for t in changed["tasks"]] == ["api"]  # rolled with its options: --rolling 1
    assert changed["instances_updated"] == 1  # the file user's file, in place
    await core.settle(changed)
    assert env_of(core, "api") == [CANARY + "-v2"] * 2
    assert env_of(core, "lazy") == [f"pw={CANARY}"]  # on_meta_change: none: until its next reprovision
    assert {b.runtime_id for b in boxes(core, "lazy")} == lazy_before
    assert {b.runtime_id for b in boxes(core, "files")} == files_before
    versions = await c.projects.versions(ROOT, "p")
    assert [v["seq"] for v in versions] == [2, 1]
    assert versions[0]["summary"].startswith("secret db.password changed: api: changed")
    assert versions[0]["meta_hash"] != versions[1]["meta_hash"]

    # the same value again is no new version; the value is in no answer or event
    assert (await c.secrets.set(ROOT, "p", "db.password", CANARY + "-v2"))["tasks"] == []
    shown = json.dumps([await c.projects.versions(ROOT, "p"), await c.projects.get(ROOT, "p"),
                        await c.events.list(ROOT, project="p"), await c.secrets.list(ROOT, "p")])
    assert CANARY not in shown and "db.password" in shown

    await core.settle(await c.services.reprovision(ROOT, "p", "lazy"))
    assert env_of(core, "lazy") == [f"pw={CANARY}-v2"]
    with pytest.raises(Conflict, match="used by services api, lazy, files"):
        await c.secrets.remove(ROOT, "p", "db.password")


async def test_a_secret_no_service_reads_into_its_environment_makes_no_version(core: Core):
    c = core.control
    await c.secrets.set(ROOT, "p", "db.password", CANARY)
    await c.secrets.set(ROOT, "p", "unused", CANARY)
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    assert (await c.secrets.set(ROOT, "p", "unused", "other-value"))["tasks"] == []
    assert [v["seq"] for v in await c.projects.versions(ROOT, "p")] == [1]
    await c.secrets.remove(ROOT, "p", "unused")


async def test_a_version_made_before_secrets_were_recorded_keeps_its_digest():
    """A daemon upgraded under a running project must not replace instances: a version whose
    record has no secret.NAME entries gives its services the digest they had."""
    spec = parse_manifest(MANIFEST, "m.yaml")
    assert {s.name: s.meta_digest for s in with_meta(spec, {"other": "x"}).services} == {
        "api": None, "lazy": None, "files": None}
    recorded = {s.name: s.meta_digest for s in with_meta(spec, {"secret.db.password": "h1"}).services}
    assert recorded["api"] is not None and recorded["lazy"] is None and recorded["files"] is None
    assert with_meta(spec, {"secret.db.password": "h2"}).service("api").meta_digest != recorded["api"]


@pytest.mark.parametrize("name", ["db.password", "tls.crt", "a_b-c.d", "x" * 128, "0.1"])
def test_secret_names_with_dots_are_template_paths(name: str):
    assert new_secret_name(name) == name
    [var] = variables(f"{{{{ .secret.{name} }}}}")
    assert check_variable(var) is None
    assert render(f"x={{{{.secret.{name}}}}}", lookup_in({}, {}, {name: "v"})) == "x=v"


@pytest.mark.parametrize("name", ["a..b", "a.", ".a", "a.-b", "-a", "a b", "a/b", "x" * 129, ""])
def test_secret_names_no_template_could_name_are_refused_at_set(name: str):
    with pytest.raises(BadRequest, match="parts separated by single dots"):
        new_secret_name(name)


def test_a_dotted_secret_in_a_template_is_checked_as_one_name():
    assert "write .secret.NAME" in (check_variable(variables("{{ .secret }}")[0]) or "")
    assert check_variable(variables("{{ .meta.a.b }}")[0]) is not None  # meta keys hold no dots
    text = "services:\n  web:\n    image: x\n    secret_env: true\n    environment:\n      A: '{{ .secret.db.pw }}'\n"
    with pytest.raises(ManifestError, match="unknown secret 'db.pw'") as info:
        parse_manifest(text, "m.yaml", secrets=frozenset({"db"}))
    assert (info.value.problems[0].line, info.value.problems[0].column) == (6, 10)
    svc = parse_manifest(text, "m.yaml", secrets=frozenset({"db.pw"})).service("web")
    assert svc is not None and svc.environment == (("A", "{{ .secret.db.pw }}"),)


async def test_dotted_secret_set_refused_through_the_control_layer(core: Core):
    with pytest.raises(BadRequest, match="single dots"):
        await core.control.secrets.set(ROOT, "p", "db..password", CANARY)
    assert await core.control.secrets.list(ROOT, "p") == []


async def test_project_copy_needs_with_secrets_for_the_secrets_its_manifest_uses(core: Core):
    c = core.control
    await c.secrets.set(ROOT, "p", "db.password", CANARY)
    await c.secrets.set(ROOT, "p", "extra", CANARY + "-extra")
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))

    with pytest.raises(BadRequest, match="needs secrets db.password; copy with --with-secrets") as info:
        await c.projects.copy(ROOT, "p", "q")
    assert info.value.details == [{"missing_secrets": ["db.password"]}] and CANARY not in info.value.message
    with pytest.raises(NotFound):
        await c.projects.get(ROOT, "q")
    assert await c.secrets.list(ROOT, "q") == []

    copied = await c.projects.copy(ROOT, "p", "q", with_secrets=True)
    assert copied["secrets"] == ["db.password", "extra"] and CANARY not in json.dumps(copied)
    await core.settle(copied)
    assert [r["name"] for r in await c.secrets.list(ROOT, "q")] == ["db.password", "extra"]
    assert await core.ctx.vault.get(secret_store.PROJECT, "q", "extra") == (CANARY + "-extra").encode()
    q_api = [b for b in boxes(core, "api") if b.name.startswith("q-")]
    assert sorted(b.environment["DB_PASSWORD"] for b in q_api) == [CANARY, CANARY]
    events = await c.events.list(ROOT, project="q")
    copies = [e for e in events if e["type"] == "secret.set"]
    assert len(copies) == 2 and all("copied from project p (hmac-sha256 " in e["message"] for e in copies)
    assert CANARY not in json.dumps(events)

    # the copy's secrets are its own: a change to p's leaves q alone, and q's rolls q out
    await core.settle(await c.secrets.set(ROOT, "p", "db.password", "p-only-value"))
    assert await core.ctx.vault.get(secret_store.PROJECT, "q", "db.password") == CANARY.encode()
    moved = await c.secrets.set(ROOT, "q", "db.password", "q-only-value")
    assert [t["service"] for t in moved["tasks"]] == ["api"]

    # a name whose secrets are already set (they outlive a project) needs no copy
    await core.settle(await c.projects.copy(ROOT, "q", "p2", with_secrets=True))
    await core.settle(await c.projects.delete(ROOT, "p2"))
    await core.settle(await c.projects.copy(ROOT, "p", "p2"))


async def test_project_copy_lists_missing_meta_and_secrets_together(core: Core):
    c = core.control
    await c.secrets.set(ROOT, "p", "db.password", CANARY)
    text = MANIFEST.replace("      PLAIN: hello\n", "      PLAIN: '{{ .meta.greeting }}'\n")
    await core.settle(await c.projects.add(ROOT, "p", text, meta="greeting: hi\n"))
    with pytest.raises(BadRequest) as info:
        await c.projects.copy(ROOT, "p", "q")
    assert "needs meta greeting and secrets db.password" in info.value.message
    assert info.value.details == [{"missing_meta": ["greeting"]}, {"missing_secrets": ["db.password"]}]
    await core.settle(await c.projects.copy(ROOT, "p", "q", with_meta=True, with_secrets=True))
    assert sorted(b.environment["PLAIN"] for b in boxes(core, "api") if b.name.startswith("q-")) == ["hi", "hi"]
