"""The LXC driver's pure parts (drivers/lxc.py), without LXC: cgroup keys, MACs, exit codes from
LXC's log, users from the image's passwd, and the log index that gives each line a stable time."""

from __future__ import annotations

import os
import time

import pytest

from mariposa.bridges import bridge_name, project_network
from mariposa.drivers.base import MAX_LOG_LINE, DriverError
from mariposa.drivers.journal import read_log as _read_log
from mariposa.drivers.lxc import (
    HOOK_GRACE,
    _exit_code,
    _mac,
    _passwd_lookup,
    _resource_keys,
)


def test_memory_and_cpus_in_either_cgroup_hierarchy():
    assert _resource_keys(64 << 20, 0.5, v2=False) == [
        "lxc.cgroup.memory.limit_in_bytes = 67108864", "lxc.cgroup.cpu.cfs_period_us = 100000",
        "lxc.cgroup.cpu.cfs_quota_us = 50000"]
    assert _resource_keys(64 << 20, 2, v2=True) == ["lxc.cgroup2.memory.max = 67108864",
                                                   "lxc.cgroup2.cpu.max = 200000 100000"]
    assert _resource_keys(None, None, v2=True) == []


def test_names_fit_a_linux_interface_and_macs_follow_addresses():
    assert project_network("ab" * 16) == "mlxabababababab" and len(project_network("ab" * 16)) == 15
    assert len(bridge_name("a-very-long-project_shared")) == 15 and bridge_name("x").startswith("mlx")
    assert _mac("10.200.46.2") == "02:4c:0a:c8:2e:02"


def _home(tmp_path, log: str, exit_file: str | None = None, age: float = 10.0):
    (tmp_path / "lxc.log").write_text(log)
    then = time.time() - age
    os.utime(tmp_path / "lxc.log", (then, then))
    if exit_file is not None:
        (tmp_path / "exit").write_text(exit_file)
    return tmp_path


def test_exit_codes_from_the_hook_or_lxc_s_own_log(tmp_path):
    line = "lxc-start c 2026 INFO error - error.c:lxc_error_set_and_log:31 - Child <123> ended on {}\n"
    assert _exit_code(_home(tmp_path, line.format("error (3)"), exit_file="7\n")) == 7  # the hook's word first
    (tmp_path / "exit").unlink()
    assert _exit_code(_home(tmp_path, line.format("error (3)"))) == 3
    assert _exit_code(_home(tmp_path, line.format("signal SIGKILL(9)"))) == 137
    assert _exit_code(_home(tmp_path, "Started\n")) == 0  # LXC logs failures only
    assert _exit_code(_home(tmp_path, line.format("error (3)"), age=HOOK_GRACE / 3)) is None  # the hook may come


def test_users_by_name_uid_or_uid_gid_from_the_image(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    assert _passwd_lookup([tmp_path], "nobody") == (65534, 65534)
    assert _passwd_lookup([tmp_path], "65534") == (65534, 65534)
    assert _passwd_lookup([tmp_path], "1000") == (1000, 1000)
    assert _passwd_lookup([tmp_path], "nobody:5") == (65534, 5)
    with pytest.raises(DriverError, match="'ghost'"):
        _passwd_lookup([tmp_path], "ghost")


def test_log_lines_keep_the_time_they_were_first_seen_and_long_lines_come_in_pieces(tmp_path):
    out = tmp_path / "out"
    out.write_bytes(b"one\ntwo\n")
    first, offset = _read_log(tmp_path, 0, to_end=True)
    assert [line.line for line in first] == [b"one", b"two"] and offset == 8
    time.sleep(0.02)
    with open(out, "ab") as f:
        f.write(b"x" * (MAX_LOG_LINE + 5) + b"\npartial")
    later, offset = _read_log(tmp_path, 0, to_end=False)
    assert [line.line for line in later] == [b"one", b"two", b"x" * MAX_LOG_LINE, b"x" * 5]  # no partial yet
    assert [line.when for line in later[:2]] == [line.when for line in first]  # stable across reads
    assert later[2].when >= first[1].when
    rest, end = _read_log(tmp_path, offset, to_end=True)
    assert [line.line for line in rest] == [b"partial"] and end == out.stat().st_size


async def test_the_event_journal_resumes_from_a_cursor_and_across_a_rotation(tmp_path):
    from contextlib import aclosing

    import trio

    from mariposa.drivers.lxc import LxcDriver
    from mariposa.model import LABEL_INSTANCE, LABEL_PROJECT, LABEL_SERVICE

    driver = LxcDriver("owner", tmp_path)
    driver._ensure_layout()

    def side(i: str) -> dict:
        return {"labels": {LABEL_INSTANCE: i, LABEL_PROJECT: "p", LABEL_SERVICE: "s"}}

    driver.journal.append("create", side("before")["labels"], "n0")  # before the subscription: never delivered
    async with aclosing(driver.events()) as stream:
        driver.journal.append("create", side("a")["labels"], "n1")
        with trio.fail_after(5):
            first = await stream.__anext__()
    assert (first.action, first.instance_id, first.project_id, first.service) == ("create", "a", "p", "s")
    driver.journal.append("die", side("b")["labels"], "n2")
    driver.journal.rotate()  # small: kept
    async with aclosing(driver.events(since=first.cursor)) as stream:
        with trio.fail_after(5):
            second = await stream.__anext__()
    assert (second.action, second.instance_id) == ("die", "b")
    (tmp_path / "events.log").rename(tmp_path / "events.log.1")  # as _rotate_journal does past its size
    driver.journal.append("destroy", side("c")["labels"], "n3")
    async with aclosing(driver.events(since=second.cursor)) as stream:
        with trio.fail_after(5):
            third = await stream.__anext__()
    assert (third.action, third.instance_id) == ("destroy", "c")
    await driver.aclose()
