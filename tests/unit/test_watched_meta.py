"""A project's meta file in the watched directory (``NAME.meta.yaml`` beside ``NAME.yaml``):
imported before the first version whichever file comes first, a later edit sets exactly the
keys it names (changed values only, rolled out as `meta set` does), a bad file changes nothing
and says where, a file without its project waits, and a restart re-imports nothing."""

from __future__ import annotations

import os

import pytest
import structlog
import trio

from mariposa.model import LABEL_SERVICE, InstanceState
from mariposa.store import files as file_store
from mariposa.watch import ManifestDirectory, meta_project, project_name, watched
from tests.unit.conftest import ROOT, Core

TEMPLATED = """\
services:
  web:
    image: busybox
    command: sleep 1000
    scale: 2
    min_healthy_time: 0
    labels:
      greeting: "{{ .meta.greeting }}"
"""


def greetings(core: Core) -> list[str]:
    return sorted(b.labels.get("greeting", "") for b in core.driver.runtime.boxes.values()
                  if b.labels.get(LABEL_SERVICE) == "web" and b.state == InstanceState.RUNNING)


async def until(predicate, timeout: float = 120.0) -> None:
    """In virtual time: the watcher queues tasks, it does not wait for them."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def meta_of(core: Core, project: str = "app") -> dict[str, str | None]:
    return {r["key"]: r["value"] for r in await core.control.meta.list(ROOT, project)}


async def seqs(core: Core, project: str = "app") -> list[int]:
    return [v["seq"] for v in await core.control.projects.versions(ROOT, project)]


async def file_events(core: Core) -> list[str]:
    """What the files did (tasks and instances are the work they queued)."""
    return [e["type"] for e in await core.control.events.list(ROOT, project="app")
            if e["type"].startswith(("meta.", "manifest.", "project."))]


def watcher(core: Core, d) -> ManifestDirectory:
    return ManifestDirectory(core.ctx, core.control, str(d))


@pytest.fixture
def d(tmp_path):
    path = tmp_path / "projects"
    path.mkdir()
    return path


def test_meta_files_are_told_from_manifests():
    assert meta_project("app.meta.yaml") == "app" and meta_project("app.meta.yml") == "app"
    assert project_name("app.meta.yaml") is None and project_name("app.yaml") == "app"
    for ignored in (".app.meta.yaml", "app.meta.yaml~", ".app.meta.yaml.swp", "app.meta.yaml.tmp", "a.b.meta.yaml"):
        assert not watched(ignored), ignored
    assert watched("app.meta.yaml") and watched("app.yml")


async def test_both_files_at_once_start_the_project_with_its_meta(core: Core, d):
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\nother: 1\n")
    await watcher(core, d).scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])
    assert await meta_of(core) == {"greeting": "hi", "other": "1"}
    assert await seqs(core) == [1]
    got = await core.control.projects.get(ROOT, "app")
    assert got["meta_file"]["state"] == "applied" and got["file"]["state"] == "applied"
    assert got["file"]["path"].endswith("app.yaml") and got["meta_file"]["path"].endswith("app.meta.yaml")
    events = [e for e in await core.control.events.list(ROOT, project="app") if e["type"] == "meta.import"]
    assert len(events) == 2 and all(e["author"] == "file" for e in events)


async def test_a_manifest_refused_for_want_of_its_meta_starts_when_the_meta_file_comes(core: Core, d):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    await w.consider("app.yaml")
    status = await core.ctx.store.call(file_store.file_status, "app")
    assert status["state"] == "invalid" and "undefined variable .meta.greeting" in repr(status["details"])
    await w.consider("app.yaml")  # the same content is not tried again on its own

    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await w.consider("app.meta.yaml")
    await until(lambda: greetings(core) == ["hi", "hi"])
    assert (await core.ctx.store.call(file_store.file_status, "app"))["state"] == "applied"
    assert (await core.ctx.store.call(file_store.meta_file_status, "app"))["state"] == "applied"
    assert w.applied == 1


async def test_a_meta_file_without_its_project_waits_and_says_so_once(core: Core, d):
    w = watcher(core, d)
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    with structlog.testing.capture_logs() as logs:
        await w.consider("app.meta.yaml")
        await w.scan(settle=0.0)
        await w.consider("app.meta.yaml")
    said = [e for e in logs if e["event"] == "meta file not imported yet"]
    assert len(said) == 1 and "app.yaml is not in" in said[0]["reason"]
    assert (await core.ctx.store.call(file_store.meta_file_status, "app"))["state"] == "waiting"

    (d / "app.yaml").write_text(TEMPLATED)
    await w.consider("app.yaml")
    await until(lambda: greetings(core) == ["hi", "hi"])
    assert (await core.ctx.store.call(file_store.meta_file_status, "app"))["state"] == "applied"


async def test_an_edit_sets_the_keys_it_names_and_only_changed_values_roll_out(core: Core, d):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\nother: 1\n")
    await w.scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])
    await core.control.meta.set(ROOT, "app", "by_hand", "kept")
    other_cas = (await core.control.meta.get(ROOT, "app", "other"))["cas"]

    # the same values, written differently: nothing changes, not even a CAS id
    (d / "app.meta.yaml").write_text("# reordered\nother: '1'\ngreeting: hi\n")
    await w.consider("app.meta.yaml")
    assert await seqs(core) == [1]
    assert (await core.control.meta.get(ROOT, "app", "other"))["cas"] == other_cas

    (d / "app.meta.yaml").write_text("greeting: hello\nother: 1\n")
    await w.consider("app.meta.yaml")
    await until(lambda: greetings(core) == ["hello", "hello"])
    assert await meta_of(core) == {"greeting": "hello", "other": "1", "by_hand": "kept"}
    assert (await core.control.meta.get(ROOT, "app", "other"))["cas"] == other_cas
    versions = await core.control.projects.versions(ROOT, "app")
    assert [v["seq"] for v in versions] == [2, 1] and versions[0]["summary"].startswith("meta greeting changed")
    assert versions[0]["author"] == "file"

    # a key `meta set` changed is the file's again only when the file changes
    await core.control.meta.set(ROOT, "app", "other", "2")
    await w.scan(settle=0.0)
    assert (await meta_of(core))["other"] == "2"


@pytest.mark.parametrize("text,line,column,says", [
    ("greeting: [hi\n", 2, 1, "YAML syntax error"),
    ("greeting: hello\nnested:\n  a: b\n", 3, 3, "a meta value is a string"),
    ("- greeting\n", 1, 1, "a meta manifest is a map"),
    ("greeting: hello\nbad key: x\n", 2, 1, "a meta key is"),
])
async def test_a_bad_meta_file_changes_nothing_and_says_where(core: Core, d, text, line, column, says):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await w.scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])

    (d / "app.meta.yaml").write_text(text)
    await w.consider("app.meta.yaml")
    status = (await core.control.projects.get(ROOT, "app"))["meta_file"]
    assert status["state"] == "invalid" and str(d / "app.meta.yaml") in status["error"]
    (problem,) = status["details"]
    assert (problem["file"], problem["line"], problem["column"]) == (str(d / "app.meta.yaml"), line, column)
    assert says in problem["message"]
    assert await meta_of(core) == {"greeting": "hi"} and await seqs(core) == [1]
    invalid = [e for e in await core.control.events.list(ROOT, project="app") if e["type"] == "manifest.invalid"]
    assert len(invalid) == 1 and "app.meta.yaml" in invalid[0]["message"]


async def test_a_new_project_with_a_bad_meta_file_is_not_made_until_it_is_fixed(core: Core, d):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: {a: b}\n")
    await w.scan(settle=0.0)
    assert [p["name"] for p in await core.control.projects.list(ROOT)] == []
    status = await core.ctx.store.call(file_store.file_status, "app")
    assert status["state"] == "refused" and "its meta file" in status["error"]
    assert status["details"][0]["line"] == 1 and status["details"][0]["column"] == 11
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await w.scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])


async def test_edits_of_both_files_import_the_meta_before_the_manifest_needs_it(core: Core, d):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await w.scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])
    (d / "app.yaml").write_text(TEMPLATED + '      who: "{{ .meta.who }}"\n')
    (d / "app.meta.yaml").write_text("greeting: hi\nwho: me\n")
    await w.consider("app.yaml")  # the manifest's event first: its meta file is read with it
    assert (await core.ctx.store.call(file_store.file_status, "app"))["state"] == "applied"
    assert (await meta_of(core))["who"] == "me"
    await w.consider("app.meta.yaml")  # then the meta file's own event: already imported
    assert await seqs(core) == [2, 1]


async def test_a_manifest_update_refused_for_a_key_is_tried_again_when_the_meta_file_sets_it(core: Core, d):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await w.scan(settle=0.0)
    (d / "app.yaml").write_text(TEMPLATED + '      who: "{{ .meta.who }}"\n')
    await w.consider("app.yaml")
    assert (await core.ctx.store.call(file_store.file_status, "app"))["state"] == "invalid"
    (d / "app.meta.yaml").write_text("greeting: hi\nwho: me\n")
    await w.consider("app.meta.yaml")
    assert (await core.ctx.store.call(file_store.file_status, "app"))["state"] == "applied"
    assert await seqs(core) == [2, 1]


async def test_deleting_the_meta_file_keeps_the_meta_and_a_restart_imports_nothing_again(core: Core, d):
    w = watcher(core, d)
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await w.scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])
    events_before = await file_events(core)

    again = watcher(core, d)  # a daemon restart: the store remembers each file's digest
    await again.scan(settle=0.0)
    assert await file_events(core) == events_before
    assert again.applied == 0 and await seqs(core) == [1]

    os.unlink(d / "app.meta.yaml")
    await again.scan(settle=0.0)
    assert await meta_of(core) == {"greeting": "hi"}
    assert (await core.ctx.store.call(file_store.meta_file_status, "app"))["state"] == "removed"
    assert (await core.ctx.store.call(file_store.file_status, "app"))["state"] == "applied"
    # the same file back: its values are already there, so nothing changes
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    await again.scan(settle=0.0)
    assert (await core.ctx.store.call(file_store.meta_file_status, "app"))["state"] == "applied"
    assert await seqs(core) == [1]


async def test_a_meta_file_for_a_project_not_from_its_file_is_refused(core: Core, d):
    await core.control.projects.add(ROOT, "app", TEMPLATED, meta="greeting: api\n")
    (d / "app.meta.yaml").write_text("greeting: file\n")
    await watcher(core, d).scan(settle=0.0)
    status = await core.ctx.store.call(file_store.meta_file_status, "app")
    assert status["state"] == "refused" and "managed through the API" in status["error"]
    assert await meta_of(core) == {"greeting": "api"}


async def test_with_two_meta_files_the_yaml_one_counts(core: Core, d):
    (d / "app.yaml").write_text(TEMPLATED)
    (d / "app.meta.yaml").write_text("greeting: hi\n")
    (d / "app.meta.yml").write_text("greeting: other\n")
    await watcher(core, d).scan(settle=0.0)
    await until(lambda: greetings(core) == ["hi", "hi"])
    status = await core.ctx.store.call(file_store.known, str(d))
    assert status[str(d / "app.meta.yml")] == "refused" and status[str(d / "app.meta.yaml")] == "applied"


async def test_a_forced_import_of_the_same_values_changes_no_cas(core: Core):
    await core.control.projects.add(ROOT, "p", TEMPLATED, meta="greeting: hi\n")
    cas = (await core.control.meta.get(ROOT, "p", "greeting"))["cas"]
    result = await core.control.meta.import_(ROOT, "p", "greeting: hi\nnew: x\n", force=True)
    assert result["imported"] == ["new"] and result["unchanged"] == ["greeting"] and result["tasks"] == []
    assert (await core.control.meta.get(ROOT, "p", "greeting"))["cas"] == cas


@pytest.mark.parametrize("text,line,column", [
    ("a: [hi\n", 2, 1),               # a syntax error the event stream raises (was an internal error)
    ("a: {b\n", 2, 1),
    ("ok: 1\na: !!int x\n", 2, 4),    # a tag the value is not (was an internal error)
    ("a: \x01\n", 1, 4),              # a character YAML forbids (was an internal error)
    ("%YAML 9.9\n---\na: 1\n", 1, 1),
])
async def test_meta_import_refuses_every_bad_yaml_with_its_position(core: Core, text, line, column):
    from mariposa.errors import InvalidManifest

    await core.control.projects.add(ROOT, "p", TEMPLATED, meta="greeting: hi\n")
    with pytest.raises(InvalidManifest) as info:
        await core.control.meta.import_(ROOT, "p", text, "m.yaml")
    (problem,) = info.value.details
    assert (problem["file"], problem["line"], problem["column"]) == ("m.yaml", line, column)
    assert await meta_of(core, "p") == {"greeting": "hi"}


async def test_a_manifest_waits_for_its_meta_file_still_being_written(core: Core, d, nursery, monkeypatch):
    """`cp app.yaml app.meta.yaml DIR/`: the manifest's quiet period ends first, but its meta
    file, still being written, is taken before it."""
    w = watcher(core, d)
    order: list[str] = []

    async def consider(self, filename: str) -> None:
        order.append(filename)

    monkeypatch.setattr(ManifestDirectory, "consider", consider)
    now = core.ctx.clock.now()
    w._pending.update({"app.yaml": now + 0.3, "app.meta.yaml": now + 0.6, "other.yaml": now + 0.4})
    w._wake.set()
    nursery.start_soon(w._apply_when_quiet)
    await until(lambda: len(order) == 3)
    assert order == ["other.yaml", "app.meta.yaml", "app.yaml"]
