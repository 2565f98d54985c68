"""Live mdata: the manifest option, the files swapped in whole, and the keeper that follows the
meta without restarting an instance (mariposa/mdata/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from mariposa.errors import Conflict
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.mdata.files import DATA, MdataFiles
from mariposa.mdata.keeper import MdataKeeper
from mariposa.model import LABEL_INSTANCE, LABEL_SERVICE, InstanceState
from tests.unit.conftest import ROOT, Core

# ---- the files ------------------------------------------------------------------------------------


def test_files_are_swapped_in_whole_and_only_when_they_change(tmp_path: Path):
    files = MdataFiles(tmp_path)
    directory, changed = files.write("p", "i1", {"a": "1", "b": "2"})
    assert changed and Path(directory) == tmp_path / "mdata" / "p" / "i1"
    d = Path(directory)
    assert os.readlink(d / "a") == f"{DATA}/a" and (d / "a").read_text() == "1" and (d / "b").read_text() == "2"
    first = os.readlink(d / DATA)
    assert (d / first / "a").stat().st_mode & 0o777 == 0o444
    assert files.write("p", "i1", {"a": "1", "b": "2"}) == (directory, False)  # nothing to do
    assert os.readlink(d / DATA) == first
    _, changed = files.write("p", "i1", {"a": "one", "c": "3"})
    assert changed
    assert (d / "a").read_text() == "one" and (d / "c").read_text() == "3"
    assert not (d / "b").exists() and not (d / "b").is_symlink()  # a key no longer set goes
    assert sorted(os.listdir(d)) == sorted([DATA, os.readlink(d / DATA), "a", "c"])  # the old values went
    assert files.values("p", "i1") == {"a": "one", "c": "3"}
    files.discard("p", "i1")
    assert not d.exists()


def test_a_reader_never_sees_a_mix_of_old_and_new(tmp_path: Path):
    """The values of all keys change in one rename: a reader through ..data sees one set."""
    files = MdataFiles(tmp_path)
    files.write("p", "i", {"a": "0", "b": "0"})
    d = files.directory("p", "i")
    for n in range(1, 30):
        files.write("p", "i", {"a": str(n), "b": str(n)})
        data = os.readlink(d / DATA)
        assert (d / data / "a").read_text() == (d / data / "b").read_text() == str(n)


def test_sweep_removes_the_files_of_gone_instances(tmp_path: Path):
    files = MdataFiles(tmp_path)
    files.write("p", "live", {"a": "1"})
    files.write("p", "gone", {"a": "1"})
    assert files.sweep({"live"}) == 1
    assert files.values("p", "live") == {"a": "1"} and files.values("p", "gone") is None


# ---- the manifest ---------------------------------------------------------------------------------


def one_service(body: str):
    return parse_manifest("services:\n  web:\n    image: x\n" + body, "m.yaml").services[0]


def test_mdata_takes_a_list_or_a_map_with_templates_and_a_signal():
    svc = one_service("    mdata:\n      - com.example.master=true\n      - name={{ .placement.instance.name }}\n"
                      "    mdata_signal: hup\n")
    assert svc.mdata == (("com.example.master", "true"), ("name", "{{ .placement.instance.name }}"))
    assert svc.mdata_signal == "SIGHUP"
    assert one_service("    mdata: {a: b}\n").mdata == (("a", "b"),)


def test_a_change_of_mdata_values_replaces_no_instance_but_having_mdata_does():
    plain = one_service("")
    first = one_service("    mdata: {a: b}\n")
    second = one_service("    mdata: {a: c, d: e}\n    mdata_signal: SIGUSR1\n")
    assert first.spec_hash == second.spec_hash != plain.spec_hash


@pytest.mark.parametrize("body,where,says", [
    ("    mdata:\n      - ../etc=x\n", (5, 9), "invalid mdata key '../etc'"),
    ("    mdata: {.hidden: x}\n", (4, 13), "invalid mdata key '.hidden'"),
    ("    mdata: {a/b: x}\n", (4, 13), "invalid mdata key 'a/b'"),
    ("    mdata:\n      - a=1\n      - a=2\n", (6, 9), "mdata key 'a' is set twice"),
    ("    mdata: {a: '{{ .secret.pw }}'}\n", (4, 16), "a secret may appear only in environment"),
    ("    mdata: {a: '{{ .meta }}'}\n", (4, 16), ".meta"),
    ("    mdata: [3]\n", (4, 13), "a KEY=VALUE string"),
    ("    mdata_signal: SIGNOPE\n", (4, 19), "unknown mdata_signal 'SIGNOPE'"),
    ("    mdata_signal: '99'\n", (4, 19), "not a signal number"),
])
def test_bad_mdata_is_refused_where_it_is_written(body, where, says):
    with pytest.raises(ManifestError) as info:
        one_service(body)
    problem = info.value.problems[0]
    assert says in problem.message and (problem.line, problem.column) == where


# ---- the keeper, on the fake runtime --------------------------------------------------------------

MANIFEST = """\
services:
  web:
    image: busybox
    command: sleep 1000
    scale: 2
    mdata:
      greeting: "{{ .meta.greeting }}!"
      me: "{{ .placement.instance.name }}"
    mdata_signal: SIGHUP
  plain:
    image: busybox
    command: sleep 1000
"""


@pytest.fixture
async def keeper(core: Core, tmp_path: Path, nursery) -> MdataKeeper:
    core.ctx.mdata = MdataKeeper(core.ctx, MdataFiles(tmp_path / "run"))
    await nursery.start(core.ctx.mdata.run)
    return core.ctx.mdata


def boxes(core: Core, service: str) -> list:
    return [b for b in core.driver.runtime.boxes.values()
            if b.labels.get(LABEL_SERVICE) == service and b.state == InstanceState.RUNNING]


async def wait_for_files(keeper: MdataKeeper, core: Core, want: str) -> None:
    with trio.fail_after(600):  # virtual time: it jumps while a store call runs in a thread
        while not all((keeper.files.values("p", b.labels[LABEL_INSTANCE]) or {}).get("greeting") == want
                      for b in boxes(core, "web")):
            await trio.sleep(0.01)


async def test_instances_read_the_current_meta_without_a_restart(core: Core, keeper: MdataKeeper):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST, meta="greeting: hi\n"))
    web = boxes(core, "web")
    assert len(web) == 2
    for box in web:
        assert box.mdata_dir == str(keeper.files.directory("p", box.labels[LABEL_INSTANCE]))
        assert keeper.files.values("p", box.labels[LABEL_INSTANCE]) == {"greeting": "hi!", "me": box.name}
    assert all(b.mdata_dir is None for b in boxes(core, "plain"))
    before = {b.runtime_id for b in core.driver.runtime.boxes.values()}

    changed = await c.meta.set(ROOT, "p", "greeting", "hello")
    assert changed["tasks"] == []  # live: no new version, no task
    await wait_for_files(keeper, core, "hello!")
    assert {b.runtime_id for b in core.driver.runtime.boxes.values()} == before  # no restart
    with trio.fail_after(600):
        while any(b.signals != ["SIGHUP"] for b in boxes(core, "web")):
            await trio.sleep(0.01)
    assert all(b.signals == [] for b in boxes(core, "plain"))
    assert [v["seq"] for v in await c.projects.versions(ROOT, "p")] == [1]
    assert any(e["type"] == "mdata.update" for e in await c.events.list(ROOT, project="p"))

    # the same value again: nothing written, nobody signalled
    await c.meta.set(ROOT, "p", "greeting", "hello")
    await trio.sleep(1)
    assert all(b.signals == ["SIGHUP"] for b in boxes(core, "web"))

    # a key mdata uses cannot be removed while the version uses it
    with pytest.raises(Conflict, match="used by web"):
        await c.meta.remove(ROOT, "p", "greeting")


async def test_a_new_version_that_changes_only_mdata_rewrites_the_files_in_place(core: Core, keeper: MdataKeeper):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST, meta="greeting: hi\n"))
    before = {b.runtime_id for b in core.driver.runtime.boxes.values()}
    await core.settle(await c.projects.update(ROOT, "p", MANIFEST.replace('"{{ .meta.greeting }}!"',
                                                                            '"{{ .meta.greeting }}?"')))
    await wait_for_files(keeper, core, "hi?")
    assert {b.runtime_id for b in core.driver.runtime.boxes.values()} == before


async def test_the_files_go_with_the_instance(core: Core, keeper: MdataKeeper):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST, meta="greeting: hi\n"))
    ids = [b.labels[LABEL_INSTANCE] for b in boxes(core, "web")]
    await core.settle(await c.services.scale(ROOT, "p", "web", 0))
    assert all(keeper.files.values("p", i) is None for i in ids)


async def test_a_new_scale_reaches_the_files_of_the_instances_already_running(core: Core, keeper: MdataKeeper):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST.replace('me: "{{ .placement.instance.name }}"',
                                                                         'n: "{{ .scale }}"'), meta="greeting: hi\n"))
    first = [b.labels[LABEL_INSTANCE] for b in boxes(core, "web")]
    assert [keeper.files.values("p", i)["n"] for i in first] == ["2", "2"]
    await core.settle(await c.services.scale(ROOT, "p", "web", 3))
    with trio.fail_after(600):  # virtual time: it jumps while a store call runs in a thread
        while not all((keeper.files.values("p", b.labels[LABEL_INSTANCE]) or {}).get("n") == "3"
                      for b in boxes(core, "web")):
            await trio.sleep(0.05)
    assert set(first) < {b.labels[LABEL_INSTANCE] for b in boxes(core, "web")}
    # down again: no instance is made, so only the reconciler's view of the goal says so
    await core.settle(await c.services.scale(ROOT, "p", "web", 2))
    with trio.fail_after(600):  # virtual time: it jumps while a store call runs in a thread
        while not all((keeper.files.values("p", b.labels[LABEL_INSTANCE]) or {}).get("n") == "2"
                      for b in boxes(core, "web")):
            await trio.sleep(0.05)
