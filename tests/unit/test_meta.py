"""Project meta through the control layer: CAS, atomic increments, import semantics, audit."""

from __future__ import annotations

import pytest
import trio

from mariposa.errors import BadRequest, Conflict, InvalidManifest, NotFound
from mariposa.model import LABEL_SERVICE, InstanceState
from tests.unit.conftest import ROOT, Core

MANIFEST = """\
services:
  web:
    image: busybox
    command: sleep 1000
"""


async def project(core: Core, name: str = "p") -> None:
    await core.control.projects.add(ROOT, name, MANIFEST)


async def test_set_get_list_and_cas(core: Core):
    await project(core)
    m = core.control.meta
    first = await m.set(ROOT, "p", "greeting", "hi")
    assert (await m.get(ROOT, "p", "greeting"))["value"] == "hi"
    second = await m.set(ROOT, "p", "greeting", "hello", cas=first["cas"])
    assert second["cas"] != first["cas"]
    with pytest.raises(Conflict) as info:
        await m.set(ROOT, "p", "greeting", "stale", cas=first["cas"])
    assert info.value.exit_code == 5 and second["cas"] in info.value.message
    assert (await m.get(ROOT, "p", "greeting"))["value"] == "hello"
    with pytest.raises(Conflict):  # a CAS for a key not set is a mismatch too
        await m.set(ROOT, "p", "other", "x", cas="abc")
    with pytest.raises(Conflict):
        await m.remove(ROOT, "p", "greeting", cas=first["cas"])
    assert await m.list(ROOT, "p") == [{"key": "greeting", "value": "hello", "cas": second["cas"]}]
    await m.remove(ROOT, "p", "greeting", cas=second["cas"])
    with pytest.raises(NotFound):
        await m.get(ROOT, "p", "greeting")
    assert await m.list(ROOT, "p") == []


@pytest.mark.parametrize("key", ["", "a.b", "-x", "x" * 129, "a b", "{{"])
async def test_bad_keys_are_refused(core: Core, key: str):
    await project(core)
    with pytest.raises(BadRequest, match="meta key"):
        await core.control.meta.set(ROOT, "p", key, "v")


async def test_increment_counts_missing_and_null_as_zero_and_refuses_text(core: Core):
    await project(core)
    m = core.control.meta
    assert (await m.increment(ROOT, "p", "n"))["value"] == "1"
    assert (await m.increment(ROOT, "p", "n", 5))["value"] == "6"
    assert (await m.increment(ROOT, "p", "n", -10))["value"] == "-4"
    await m.set(ROOT, "p", "nothing", None)
    assert (await m.increment(ROOT, "p", "nothing", 2))["value"] == "2"
    await m.set(ROOT, "p", "word", "abc")
    with pytest.raises(BadRequest, match="not an integer"):
        await m.increment(ROOT, "p", "word")
    assert (await m.get(ROOT, "p", "word"))["value"] == "abc"
    for wrong in (1.5, True, "2", 2**60):
        with pytest.raises(BadRequest):
            await m.increment(ROOT, "p", "n", wrong)


async def test_concurrent_increments_lose_none(core: Core):
    await project(core)
    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(core.control.meta.increment, ROOT, "p", "counter", 1)
    assert (await core.control.meta.get(ROOT, "p", "counter"))["value"] == "100"


async def test_import_keeps_set_keys_unless_forced_and_is_all_or_nothing(core: Core):
    await project(core)
    m = core.control.meta
    await m.set(ROOT, "p", "a", "old")
    result = await m.import_(ROOT, "p", "a: new\nb: 2\nc: true\nd: null\n")
    assert result["kept"] == ["a"] and sorted(result["imported"]) == ["b", "c", "d"]
    values = {r["key"]: r["value"] for r in await m.list(ROOT, "p")}
    assert values == {"a": "old", "b": "2", "c": "true", "d": None}
    forced = await m.import_(ROOT, "p", "a: new\n", force=True)
    assert forced["kept"] == [] and (await m.get(ROOT, "p", "a"))["value"] == "new"
    with pytest.raises(InvalidManifest) as info:
        await m.import_(ROOT, "p", "e: fine\nf: [1, 2]\n", "meta.yaml")
    assert info.value.details[0]["line"] == 2 and info.value.details[0]["file"] == "meta.yaml"
    with pytest.raises(InvalidManifest):
        await m.import_(ROOT, "p", "- a\n- b\n")
    assert "e" not in {r["key"] for r in await m.list(ROOT, "p")}


async def test_every_change_is_audited_without_its_value(core: Core):
    await project(core)
    m = core.control.meta
    await m.set(ROOT, "p", "k", "s3cr3t-value")
    await m.increment(ROOT, "p", "n")
    await m.import_(ROOT, "p", "x: 1\n")
    await m.remove(ROOT, "p", "k")
    found = [e for e in await core.control.events.list(ROOT, project="p") if e["type"].startswith("meta.")]
    assert [e["type"] for e in found] == ["meta.set", "meta.increment", "meta.import", "meta.rm"]
    assert all(e["author"] == "uid=0" for e in found)
    assert not any("s3cr3t" in e["message"] for e in found)


async def test_meta_goes_with_its_project(core: Core):
    await project(core)
    await core.control.meta.set(ROOT, "p", "k", "v")
    await core.settle(await core.control.projects.delete(ROOT, "p"))
    await project(core)
    assert await core.control.meta.list(ROOT, "p") == []


TEMPLATED = """\
services:
  web:
    image: busybox
    command: sleep 1000
    scale: 2
    min_healthy_time: 0
    labels:
      greeting: "{{ .meta.greeting }}"
  quiet:
    image: busybox
    command: sleep 1000
    on_meta_change: none
    labels:
      greeting: "{{ .meta.greeting }}"
  other:
    image: busybox
    command: sleep 1000
"""


def greetings(core: Core, service: str) -> list[str]:
    return sorted(b.labels.get("greeting", "") for b in core.driver.runtime.boxes.values()
                  if b.labels.get(LABEL_SERVICE) == service and b.state == InstanceState.RUNNING)


async def test_a_meta_change_rolls_out_a_new_version_of_the_services_that_use_it(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", TEMPLATED, meta="greeting: hi\n"))
    assert greetings(core, "web") == ["hi", "hi"] and greetings(core, "quiet") == ["hi"]
    other_before = {b.runtime_id for b in core.driver.runtime.boxes.values()
                    if b.labels.get(LABEL_SERVICE) == "other"}
    changed = await c.meta.set(ROOT, "p", "greeting", "hello")
    assert [t["service"] for t in changed["tasks"]] == ["web"]
    await core.settle(changed)
    assert greetings(core, "web") == ["hello", "hello"]
    assert greetings(core, "quiet") == ["hi"]  # on_meta_change: none
    assert {b.runtime_id for b in core.driver.runtime.boxes.values()
            if b.labels.get(LABEL_SERVICE) == "other"} == other_before
    versions = await c.projects.versions(ROOT, "p")
    assert [v["seq"] for v in versions] == [2, 1] and versions[0]["summary"].startswith("meta greeting changed")
    assert versions[0]["meta_hash"] != versions[1]["meta_hash"] and versions[0]["meta_keys"] == ["greeting"]
    # the same value again is no new version
    assert (await c.meta.set(ROOT, "p", "greeting", "hello"))["tasks"] == []
    # `none` takes the new value when it is reprovisioned
    await core.settle(await c.services.reprovision(ROOT, "p", "quiet"))
    assert greetings(core, "quiet") == ["hello"]


async def test_a_key_in_use_cannot_be_removed_and_undefined_keys_refuse_the_version(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", TEMPLATED, meta="greeting: hi\n"))
    with pytest.raises(Conflict, match="used by quiet, web"):
        await c.meta.remove(ROOT, "p", "greeting")
    with pytest.raises(InvalidManifest) as info:
        await c.projects.update(ROOT, "p", TEMPLATED.replace("sleep 1000\n", "sleep {{ .meta.nope }}\n", 1))
    assert "undefined variable .meta.nope" in info.value.details[0]["message"]
    assert (info.value.details[0]["line"], info.value.details[0]["column"]) == (4, 14)
    assert [v["seq"] for v in await c.projects.versions(ROOT, "p")] == [1]
    with pytest.raises(InvalidManifest, match="undefined variable|problem"):
        await c.projects.add(ROOT, "q", TEMPLATED)


async def test_project_copy_without_meta_lists_the_keys_to_set(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", TEMPLATED, meta="greeting: hi\nunused: x\n"))
    with pytest.raises(BadRequest, match="needs meta greeting") as info:
        await c.projects.copy(ROOT, "p", "q")
    assert info.value.details == [{"missing_meta": ["greeting"]}]
    with pytest.raises(NotFound):
        await c.projects.get(ROOT, "q")
    copied = await c.projects.copy(ROOT, "p", "q", with_meta=True)
    await core.settle(copied)
    assert {r["key"]: r["value"] for r in await c.meta.list(ROOT, "q")} == {"greeting": "hi", "unused": "x"}
    await c.projects.add(ROOT, "s", MANIFEST)
    assert (await c.projects.copy(ROOT, "s", "t"))["meta"] == []


async def test_a_service_section_is_judged_by_the_projects_meta(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST, meta="greeting: hi\n"))
    with pytest.raises(InvalidManifest) as info:
        await c.services.add(ROOT, "p", "worker", "image: busybox\ncommand: echo {{ .meta.nope }}\n", "w.yaml")
    [problem] = info.value.details
    assert (problem["file"], problem["line"]) == ("w.yaml", 2) and ".meta.nope" in problem["message"]
    added = await c.services.add(ROOT, "p", "worker", "image: busybox\ncommand: echo {{ .meta.greeting }}\n")
    assert added["changed"]
    diff = await c.projects.diff(ROOT, "p", (await c.projects.get(ROOT, "p"))["version"]["manifest"])
    assert diff["new_version"] is False


async def test_a_secret_named_in_environment_cannot_be_removed(core: Core):
    c = core.control
    await c.secrets.set(ROOT, "p", "db", "s3cr3t")
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST.replace(
        "    command: sleep 1000\n",
        "    command: sleep 1000\n    secret_env: true\n    environment:\n      DB: '{{ .secret.db }}'\n")))
    with pytest.raises(Conflict, match="used by service web"):
        await c.secrets.remove(ROOT, "p", "db")
