"""The watched directory under careless and hostile files: each is refused with a reason, none
blocks or kills the watcher, and a good file beside them is still applied."""

from __future__ import annotations

import os

import pytest

from mariposa.control import WATCHER
from mariposa.store import files as file_store
from mariposa.watch import MAX_FILE, ManifestDirectory, Unreadable, read_manifest_file
from tests.unit.conftest import ROOT, Core

GOOD = "services:\n  web:\n    image: busybox\n    command: sleep 1000\n"


def test_a_plain_file_and_a_link_inside_the_directory_are_read(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    os.symlink("a.yaml", tmp_path / "b.yaml")
    assert read_manifest_file(str(tmp_path), str(tmp_path / "a.yaml")) == GOOD
    assert read_manifest_file(str(tmp_path), str(tmp_path / "b.yaml")) == GOOD


@pytest.mark.parametrize("make,reason", [
    (lambda d: os.symlink("/etc/shadow", d / "x.yaml"), "leads out of the directory"),
    (lambda d: os.symlink("/dev/zero", d / "x.yaml"), "leads out of the directory"),
    (lambda d: os.mkfifo(d / "x.yaml"), "not a regular file"),
    (lambda d: (d / "x.yaml").write_bytes(b"#" * (MAX_FILE + 1)), "larger than the 1024 KiB"),
    (lambda d: (d / "x.yaml").write_bytes(b"services: \xff\xfe\n"), "not UTF-8"),
])
def test_what_is_not_a_manifest_is_refused_without_reading_it(tmp_path, make, reason):
    make(tmp_path)
    with pytest.raises(Unreadable, match=reason):
        read_manifest_file(str(tmp_path), str(tmp_path / "x.yaml"))


async def test_bad_files_are_recorded_and_a_good_one_still_applies(core: Core, tmp_path):
    d = tmp_path / "projects"
    d.mkdir()
    os.mkfifo(d / "fifo.yaml")
    os.symlink("/etc/shadow", d / "shadow.yaml")
    (d / "sup.yaml").write_text("services:\n  web:\n    image: x\n    restart: on-failure:\u00b2\n")
    (d / "tag.yaml").write_text("x: !!int x\n")
    (d / "deep.yaml").write_text("services: " + "[" * 300 + "]" * 300 + "\n")
    (d / "good.yaml").write_text(GOOD)
    watcher = ManifestDirectory(core.ctx, core.control, str(d))
    await watcher.scan(settle=0.0)

    assert watcher.applied == 1
    assert (await core.control.projects.get(ROOT, "good"))["source"] == str(d / "good.yaml")
    for name, why in (("fifo", "not a regular file"), ("shadow", "leads out of the directory"),
                      ("sup", "1 problem"), ("tag", "1 problem"), ("deep", "1 problem")):
        status = await core.ctx.store.call(file_store.file_status, name)
        assert status["state"] == "invalid" and why in status["error"], (name, status)
        assert all(d["line"] >= 1 and d["column"] >= 1 for d in status["details"])
        assert "root:" not in repr(status)
    assert (await core.control.system.ping(WATCHER))["ok"]
