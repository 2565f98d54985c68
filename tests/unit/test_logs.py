"""``service logs`` and ``instance logs`` through the control layer, on the fake driver and trio's
MockClock: merging, tail/since, following through scale-ups and restarts, retired instances,
bad input, a bounded buffer, and followers that stop with their caller."""

from __future__ import annotations

import time
from contextlib import aclosing

import pytest
import trio

from mariposa.control import logs as control_logs
from mariposa.control.base import Feed
from mariposa.control.logs import parse_since, parse_tail
from mariposa.errors import BadRequest, NotFound
from tests.unit.conftest import ROOT, Core

MANIFEST = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo hello; echo world; exec sleep 1000"]
    scale: 2
    min_healthy_time: 0
    stop: {preservestopped: always}
  quiet:
    image: busybox
    command: sleep 1000
"""


async def collect(feed: Feed, until=None, seconds: float = 60.0) -> list[dict]:
    """Run ``feed`` until it ends, or until ``until(lines)`` holds (then it is cancelled)."""
    got: list[dict] = []
    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:

            async def send(batch: list) -> None:
                got.extend(batch)
                if until is not None and until(got):
                    nursery.cancel_scope.cancel()

            await feed.run(send)
    return got


def texts(lines: list[dict]) -> list[tuple[str, str]]:
    return sorted((line["name"], line["line"]) for line in lines)


async def project(core: Core) -> list:
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    return sorted((i for i in core.driver.instances.values() if i.service == "web"), key=lambda i: i.created)


# ---- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("10m", 1000.0 - 600), ("1h30m", 1000.0 - 5400), ("1.5h", 1000.0 - 5400), ("45s", 955.0),
    ("500ms", 999.5), ("2d", 1000.0 - 172800), ("0s", 1000.0),
    ("1700000000", 1700000000.0), ("1700000000.25", 1700000000.25),
    ("2023-11-14T22:13:20Z", 1700000000.0), ("2023-11-14T23:13:20+01:00", 1700000000.0),
    (None, None), ("", None),
])
def test_since_takes_durations_times_and_epoch_seconds(text, expected):
    assert parse_since(text, now=1000.0) == expected


def test_since_without_a_zone_is_local_time_as_docker_reads_it():
    assert parse_since("2023-11-14T22:13:20", now=0) == time.mktime((2023, 11, 14, 22, 13, 20, 0, 0, -1))


@pytest.mark.parametrize("text", ["bogus", "10x", "m", "-5m", "1e400", "nan", "inf", "-1", "10m junk", "x" * 500])
def test_a_bad_since_is_refused_with_what_it_takes(text):
    with pytest.raises(BadRequest) as info:
        parse_since(text, now=1000.0)
    assert "'since' must be a duration (10m, 1h30m, 45s) or a time" in info.value.message
    assert len(info.value.message) < 200


@pytest.mark.parametrize("text,expected", [("0", 0), ("5", 5), ("1000", 1000), ("all", None), (None, None),
                                           ("", None), ("9" * 40, None)])
def test_tail_is_a_count_or_all(text, expected):
    assert parse_tail(text) == expected


@pytest.mark.parametrize("text", ["-3", "ten", "1.5", "+2", "٣"])
def test_a_bad_tail_is_refused(text):
    with pytest.raises(BadRequest, match="'tail' must be a number of lines"):
        parse_tail(text)


# ---- reading ----------------------------------------------------------------------------------


async def test_service_logs_merge_the_instances_each_line_named(core: Core):
    web = await project(core)
    lines = await collect(await core.control.services.logs(ROOT, "p", "web"))
    names = [f"web-{i.id[:8]}" for i in web]
    assert texts(lines) == sorted((n, t) for n in names for t in ("hello", "world"))
    for line in lines:
        assert line["service"] == "web" and line["instance"].startswith(line["name"][4:])
        assert abs(line["time"] - time.time()) < 60
    # each instance's lines keep their order
    for inst in web:
        assert [x["line"] for x in lines if x["instance"] == inst.id] == ["hello", "world"]


async def test_tail_since_and_one_instance(core: Core):
    web = await project(core)
    services = core.control.services
    assert texts(await collect(await services.logs(ROOT, "p", "web", tail="1"))) == sorted(
        (f"web-{i.id[:8]}", "world") for i in web)
    assert await collect(await services.logs(ROOT, "p", "web", tail="0")) == []
    assert await collect(await services.logs(ROOT, "p", "web", since=str(time.time() + 3600))) == []
    assert len(await collect(await services.logs(ROOT, "p", "web", since="1h"))) == 4
    one = await collect(await services.logs(ROOT, "p", "web", instance=web[1].id[:8]))
    assert texts(one) == [(f"web-{web[1].id[:8]}", "hello"), (f"web-{web[1].id[:8]}", "world")]
    inst = await collect(await core.control.instances.logs(ROOT, web[0].id, tail="1"))
    assert [(x["instance"], x["line"]) for x in inst] == [(web[0].id, "world")]


async def test_bad_input_is_refused_before_anything_streams(core: Core):
    await project(core)
    services, instances = core.control.services, core.control.instances
    with pytest.raises(BadRequest, match="'since' must be"):
        await services.logs(ROOT, "p", "web", since="bogus")
    with pytest.raises(BadRequest, match="'tail' must be"):
        await services.logs(ROOT, "p", "web", tail="-3")
    with pytest.raises(NotFound, match="no instance 'nope' in service web"):
        await services.logs(ROOT, "p", "web", instance="nope")
    quiet = next(i for i in core.driver.instances.values() if i.service == "quiet")
    with pytest.raises(NotFound, match="in service web"):  # an instance of another service
        await services.logs(ROOT, "p", "web", instance=quiet.id)
    with pytest.raises(NotFound):
        await services.logs(ROOT, "p", "nosuch")
    with pytest.raises(NotFound):
        await services.logs(ROOT, "nosuch", "web")
    with pytest.raises(NotFound, match="no instance 'feedface'"):
        await instances.logs(ROOT, "feedface")
    with pytest.raises(BadRequest, match="'tail' must be"):
        await instances.logs(ROOT, "feedface", tail="x")


async def test_retired_instances_stay_readable_until_removed(core: Core):
    web = await project(core)
    await core.settle(await core.control.services.stop(ROOT, "p", "web"))
    kept = await core.control.services.instances(ROOT, "p", "web")
    assert kept and all(i["retired"] and i["state"] == "exited" for i in kept)
    assert len(await collect(await core.control.services.logs(ROOT, "p", "web"))) == 4
    assert [x["line"] for x in await collect(await core.control.instances.logs(ROOT, web[0].id))] == ["hello", "world"]
    # following a retired instance gives its lines and ends: it never runs again
    assert len(await collect(await core.control.instances.logs(ROOT, web[0].id, follow=True))) == 2
    await core.control.instances.remove(ROOT, web[0].id)
    with pytest.raises(NotFound):
        await core.control.instances.logs(ROOT, web[0].id)


# ---- following --------------------------------------------------------------------------------


async def test_follow_shows_a_new_instance_from_its_first_line(core: Core):
    """The issue's "must show", on the fake: `service logs -f` while `scale +1` adds an instance."""
    web = await project(core)
    feed = await core.control.services.logs(ROOT, "p", "web", follow=True, tail="1")
    got: list[dict] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def send(batch: list) -> None:
                got.extend(batch)

            nursery.start_soon(feed.run, send)
            while len(got) < 2:  # the tail: one line of each instance there at the start
                await trio.sleep(0.1)
            assert sorted(x["line"] for x in got) == ["world", "world"]
            core.driver.print(web[0].id, "later")
            await core.settle(await core.control.services.scale(ROOT, "p", "web", "+1"))
            new = next(i for i in core.driver.instances.values() if i.service == "web" and i.id not in
                       {w.id for w in web})
            while len(got) < 5:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert [x["line"] for x in got if x["instance"] == new.id] == ["hello", "world"]  # from its first line
    assert [x["line"] for x in got if x["instance"] == web[0].id] == ["world", "later"]


async def test_follow_goes_on_after_a_restart_in_place(core: Core):
    web = await project(core)
    target = web[0]
    feed = await core.control.instances.logs(ROOT, target.id, follow=True)
    got: list[dict] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def send(batch: list) -> None:
                got.extend(batch)

            nursery.start_soon(feed.run, send)
            while len(got) < 2:
                await trio.sleep(0.1)
            await trio.sleep(1)  # so the restart's lines have a later time than the first ones
            core.driver.kill(target.id, exit_code=1)  # the restart policy starts it again, in place
            while len(got) < 4:
                await trio.sleep(0.1)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
    assert [x["line"] for x in got] == ["hello", "world", "hello", "world"]  # nothing twice, nothing lost


async def test_following_one_instance_ends_when_it_is_removed(core: Core):
    web = await project(core)
    feed = await core.control.instances.logs(ROOT, web[0].id, follow=True)
    got: list[dict] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def send(batch: list) -> None:
                got.extend(batch)

            nursery.start_soon(feed.run, send)
            while len(got) < 2:
                await trio.sleep(0.1)
            await core.control.instances.remove(ROOT, web[0].id)
            # the feed ends by itself; the nursery exits with no task left behind
    assert [x["line"] for x in got] == ["hello", "world"]


async def test_a_cancelled_follower_leaves_no_reader_behind(core: Core, monkeypatch):
    await project(core)
    open_streams = 0
    original = core.driver.logs

    async def tracked(*args, **kwargs):
        nonlocal open_streams
        open_streams += 1
        try:
            async with aclosing(original(*args, **kwargs)) as stream:
                async for line in stream:
                    yield line
        finally:
            open_streams -= 1

    monkeypatch.setattr(core.driver, "logs", tracked)
    feed = await core.control.services.logs(ROOT, "p", "web", follow=True)
    got: list[dict] = []

    async def send(batch: list) -> None:
        got.extend(batch)

    with trio.move_on_after(2) as scope:
        await feed.run(send)
    assert scope.cancelled_caught and len(got) == 4  # it followed until its caller went away
    assert open_streams == 0  # and every reader it had ended with it


async def test_a_slow_client_holds_the_readers_back_instead_of_the_daemon_buffering(core: Core, monkeypatch):
    lines = 20_000
    await core.settle(await core.control.projects.add(ROOT, "big", "services:\n  loud: {image: busybox}\n"))
    [loud] = core.driver.instances.values()
    core.driver.print(loud.id, *(f"line {n}" for n in range(lines)))
    read = 0
    original = core.driver.logs

    async def counting(*args, **kwargs):
        nonlocal read
        async with aclosing(original(*args, **kwargs)) as stream:
            async for line in stream:
                read += 1
                yield line

    monkeypatch.setattr(core.driver, "logs", counting)
    feed = await core.control.services.logs(ROOT, "big", "loud")
    sent = 0

    async def stuck(batch: list) -> None:
        nonlocal sent
        sent += len(batch)
        await trio.sleep_forever()  # a client that stopped reading

    with trio.move_on_after(2):
        await feed.run(stuck)
    assert 0 < sent <= control_logs.BATCH
    assert read <= sent + control_logs.BUFFER + 1, (read, sent)  # not the 20,000 lines
    assert len(await collect(await core.control.services.logs(ROOT, "big", "loud"))) == lines
