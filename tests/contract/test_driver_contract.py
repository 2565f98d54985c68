"""The driver contract (``mariposa/drivers/base.py``), run on every driver through the ``kit``
fixture. Test bodies speak the protocol only; the commands are plain POSIX sh, which the Docker
image runs for real and the fake driver reads (see ``mariposa/drivers/fake.py``).

Timings allow for a loaded 2-core machine: lower bounds are what the contract promises, upper
bounds are generous.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from contextlib import aclosing

import attrs
import pytest
import trio

from mariposa.drivers.base import (
    MAX_LOG_LINE,
    AuthFailed,
    DriverError,
    DriverEvent,
    ImageNotFound,
    LogLine,
    PullFailed,
    PullProgress,
    RegistryAuth,
    VolumeInUse,
)
from mariposa.model import Instance, InstanceState, MountSpec, NetworkRef, volume_name

SLEEPER = "exec sleep 3600"  # honours SIGTERM
STUBBORN = 'trap "" TERM; while true; do sleep 1; done'  # ignores it
CHATTY = "echo one; echo two; exec sleep 3600"


async def eventually(probe, seconds: float = 20.0, what: str = "condition"):
    """Poll ``probe`` (async, returns a truthy value when done) until it holds."""
    with trio.move_on_after(seconds):
        while True:
            if result := await probe():
                return result
            await trio.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds}s")


async def only(driver, inst: Instance) -> Instance | None:
    return next((i for i in await driver.inventory(inst.project_id) if i.id == inst.id), None)


async def exited(driver, inst: Instance) -> Instance | None:
    now = await only(driver, inst)
    return now if now is not None and now.state == InstanceState.EXITED else None


async def collect(stream, until, seconds: float = 20.0) -> list[DriverEvent]:
    """Events from ``stream`` up to and including the first one ``until`` accepts."""
    seen = []
    with trio.fail_after(seconds):
        async for event in stream:
            seen.append(event)
            if until(event):
                return seen
    raise AssertionError(f"event stream ended after {seen}")


def identity(inst: Instance) -> tuple:
    return (inst.id, inst.runtime_id, inst.name, inst.project_id, inst.project_name, inst.service,
            inst.version_id, inst.spec_hash, inst.image, inst.compute_type, round(inst.created, 3))


async def test_create_reports_identity_that_survives_a_driver_restart(kit):
    req = kit.request("web", SLEEPER)
    inst = await kit.driver.create(req)
    assert inst.state == InstanceState.RUNNING and isinstance(inst.state, InstanceState)
    assert (inst.id, inst.name, inst.project_id, inst.project_name, inst.service, inst.version_id, inst.spec_hash) == (
        req.instance_id, req.name, kit.project, "ctest", "web", "v1", req.spec.spec_hash)
    assert inst.compute_type == kit.driver.compute_type and inst.image == kit.image
    assert 0 < inst.created <= time.time() + 1

    driver = await kit.restart()
    [again] = await driver.inventory()
    assert identity(again) == identity(inst) and again.state == InstanceState.RUNNING
    # the new driver acts on what the old one made
    await driver.stop(again, timeout=10)
    await driver.remove(again)
    assert await driver.inventory() == [] and await kit.leftovers() == []


async def test_inventory_filters_by_project_after_a_restart(kit):
    a = await kit.driver.create(kit.request("web", SLEEPER))
    b = await kit.driver.create(kit.request("web", SLEEPER, project="f" * 32))
    driver = await kit.restart()
    assert [i.id for i in await driver.inventory(kit.project)] == [a.id]
    assert [i.id for i in await driver.inventory("f" * 32)] == [b.id]
    assert sorted(i.id for i in await driver.inventory()) == sorted([a.id, b.id])
    assert await driver.inventory("0" * 32) == []
    assert {i.compute_type for i in await driver.inventory()} == {driver.compute_type}


async def test_create_is_idempotent_by_instance_id(kit):
    req = kit.request("web", SLEEPER)
    first = await kit.driver.create(req)
    again = await kit.driver.create(req)
    assert again.runtime_id == first.runtime_id and again.id == first.id
    assert [i.id for i in await kit.driver.inventory()] == [first.id]


async def test_start_stop_remove_are_idempotent(kit):
    driver = kit.driver
    inst = await driver.create(kit.request("web", SLEEPER))
    await driver.start(inst)  # running already
    await driver.stop(inst, timeout=10)
    await driver.stop(inst, timeout=10)  # stopped already
    assert (await only(driver, inst)).state == InstanceState.EXITED
    await driver.start(inst)
    await driver.start(inst)
    assert (await only(driver, inst)).state == InstanceState.RUNNING
    await driver.remove(inst)  # running: stopped first
    await driver.remove(inst)  # gone already
    await driver.stop(inst, timeout=1)  # gone is stopped enough
    with pytest.raises(DriverError):
        await driver.start(inst)  # but it cannot come back
    assert await driver.inventory() == [] and await kit.leftovers() == []


async def test_created_but_not_started_reports_creating(kit):
    inst = await kit.create_unstarted(kit.request("web", SLEEPER))
    assert (await only(kit.driver, inst)).state == InstanceState.CREATING
    assert inst.exit_code is None
    await kit.driver.start(inst)
    assert (await only(kit.driver, inst)).state == InstanceState.RUNNING


async def test_a_program_that_exits_reports_its_exit_code(kit):
    inst = await kit.driver.create(kit.request("job", "exit 3"))
    done = await eventually(lambda: exited(kit.driver, inst), what="exit 3 seen")
    assert done.exit_code == 3


async def test_a_kill_is_an_event_and_an_exit_code(kit):
    inst = await kit.driver.create(kit.request("web", SLEEPER))
    async with aclosing(kit.driver.events()) as stream:
        await kit.kill(inst)
        seen = await collect(stream, lambda e: e.action == "die")
    die = seen[-1]
    assert (die.instance_id, die.project_id, die.service, die.exit_code) == (inst.id, kit.project, "web", 137)
    assert all(e.instance_id == inst.id and e.cursor for e in seen)
    after = await eventually(lambda: exited(kit.driver, inst), what="killed instance seen exited")
    assert after.exit_code == 137


async def test_events_resume_from_a_cursor_without_loss_or_duplicates(kit):
    driver = kit.driver
    a = await driver.create(kit.request("a", SLEEPER))
    b = await driver.create(kit.request("b", SLEEPER))

    def key(e: DriverEvent) -> tuple:
        return (e.action, e.instance_id)

    async with aclosing(driver.events()) as stream:
        await kit.kill(a)
        first = await collect(stream, lambda e: key(e) == ("die", a.id))
    assert ("create", a.id) not in map(key, first)  # before the subscription: not delivered
    cursor = first[-1].cursor

    # while nobody listens
    await kit.kill(b)
    await eventually(lambda: exited(driver, b), what="b exited")
    await driver.remove(a)

    async with aclosing(driver.events(since=cursor)) as stream:
        second = await collect(stream, lambda e: key(e) == ("destroy", a.id))
    keys = [key(e) for e in second]
    assert ("die", b.id) in keys  # nothing lost
    assert not set(keys) & set(map(key, first))  # nothing delivered twice
    assert len(keys) == len(set(keys)), keys
    assert keys.index(("die", b.id)) < keys.index(("destroy", a.id))  # in order

    # a second reconnect from the newest cursor replays nothing at all
    c = kit.request("c", SLEEPER)
    async with aclosing(driver.events(since=second[-1].cursor)) as stream:
        await driver.create(c)
        third = await collect(stream, lambda e: e.instance_id == c.instance_id)
    assert [e.instance_id for e in third] == [c.instance_id]


async def test_exec_returns_exit_code_and_output(kit):
    inst = await kit.driver.create(kit.request("web", SLEEPER))
    code, out = await kit.driver.exec(inst, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20)
    # stdout and stderr travel apart, so their relative order is not part of the contract
    assert code == 3 and sorted(out.splitlines()) == [b"err", b"out"]
    assert await kit.driver.exec(inst, ["sh", "-c", "exit 0"], timeout=20) == (0, b"")
    with pytest.raises(trio.TooSlowError):
        await kit.driver.exec(inst, ["sh", "-c", "sleep 30"], timeout=0.5)
    await kit.driver.stop(inst, timeout=10)
    with pytest.raises(DriverError):
        await kit.driver.exec(inst, ["sh", "-c", "exit 0"], timeout=20)


async def test_named_volumes_are_made_for_their_instances_kept_and_removed_only_when_unused(kit):
    """Issue 12: a project's named volume outlives its instances and goes only when asked."""
    data = MountSpec("volume", "data", "/data", labels=(("backup", "nightly"),))
    req = kit.request("db", "echo kept > /data/f; exec sleep 3600", volumes=(data,))
    inst = await kit.driver.create(req)
    (vol,) = await kit.driver.volumes(req.project_name)
    assert (vol.name, vol.runtime_name) == ("data", volume_name(req.project_name, "data"))
    assert ("backup", "nightly") in vol.labels and vol.used_by == (inst.name,)
    with pytest.raises(VolumeInUse):
        await kit.driver.remove_volume(req.project_name, "data")
    await kit.driver.remove(inst)
    await kit.driver.remove_network(req.project_id)
    (vol,) = await kit.driver.volumes(req.project_name)  # kept with no instance and no network
    assert vol.used_by == ()
    await kit.driver.remove_volume(req.project_name, "data")
    assert await kit.driver.volumes(req.project_name) == []
    await kit.driver.remove_volume(req.project_name, "data")  # gone already: no error


async def test_exec_runs_as_the_user_asked_for_or_the_service_s_own(kit):
    """A command health check's `user` (issue 12), and the service's `user` when it gives none."""
    inst = await kit.driver.create(kit.request("web", SLEEPER))
    assert await kit.driver.exec(inst, ["id", "-u"], timeout=20) == (0, b"0\n")
    assert await kit.driver.exec(inst, ["id", "-u"], timeout=20, user="65534") == (0, b"65534\n")
    assert await kit.driver.exec(inst, ["id", "-u"], timeout=20, user="nobody") == (0, b"65534\n")
    other = await kit.driver.create(kit.request("worker", SLEEPER, user="nobody"))
    assert await kit.driver.exec(other, ["id", "-u"], timeout=20) == (0, b"65534\n")
    assert await kit.driver.exec(other, ["id", "-u"], timeout=20, user="0") == (0, b"0\n")


async def test_a_signal_reaches_a_running_instance_and_leaves_it_running(kit):
    """Live mdata's ``mdata_signal``: a SIGHUP the process handles does not stop it; a stopped
    instance cannot be signalled (an error), a removed one needs no signal (none)."""
    inst = await kit.driver.create(kit.request("web", 'trap "echo got-hup" HUP; while true; do sleep 0.2; done'))
    await kit.driver.signal(inst, "SIGHUP")
    await trio.sleep(0.5)
    assert (await only(kit.driver, inst)).state == InstanceState.RUNNING
    await kit.driver.stop(inst, timeout=10)
    with pytest.raises(DriverError):
        await kit.driver.signal(inst, "SIGHUP")
    await kit.driver.remove(inst)
    await kit.driver.signal(inst, "SIGHUP")


async def test_stop_kills_a_process_that_ignores_sigterm_after_the_timeout(kit):
    inst = await kit.driver.create(kit.request("stubborn", STUBBORN))
    t0 = trio.current_time()
    await kit.driver.stop(inst, timeout=2)
    took = trio.current_time() - t0
    assert 1.9 <= took < 15, took
    after = await only(kit.driver, inst)
    assert after.state == InstanceState.EXITED and after.exit_code == 137


async def test_stop_without_timeout_uses_the_instances_own(kit):
    inst = await kit.driver.create(kit.request("stubborn", STUBBORN, stop_timeout=1))
    t0 = trio.current_time()
    await kit.driver.stop(inst)
    took = trio.current_time() - t0
    assert 0.9 <= took < 10, took
    assert (await only(kit.driver, inst)).exit_code == 137


async def test_stop_of_a_process_that_honours_sigterm_is_prompt(kit):
    inst = await kit.driver.create(kit.request("web", SLEEPER))
    t0 = trio.current_time()
    await kit.driver.stop(inst, timeout=30)
    took = trio.current_time() - t0
    assert took < 10, took  # far from the 30 s a kill would have waited
    after = await only(kit.driver, inst)
    assert after.state == InstanceState.EXITED and after.exit_code != 137


async def test_a_missing_image_is_refused_and_leaves_nothing(kit):
    with pytest.raises(ImageNotFound) as info:
        await kit.driver.resolve_image(kit.missing_image)
    assert kit.missing_image in str(info.value)
    with pytest.raises(ImageNotFound):
        await kit.driver.create(kit.request("web", SLEEPER, image=kit.missing_image))
    assert await kit.driver.inventory() == [] and await kit.leftovers() == []


async def test_resolve_image_gives_a_stable_content_id(kit):
    first = await kit.driver.resolve_image(kit.image)
    assert first and first != kit.image and await kit.driver.resolve_image(kit.image) == first


async def read_logs(driver, inst: Instance, **kw) -> list[LogLine]:
    async with aclosing(driver.logs(inst, **kw)) as stream:
        return [line async for line in stream]


def texts(lines: list[LogLine]) -> list[bytes]:
    return [line.line for line in lines]


async def test_address_and_logs(kit):
    driver = kit.driver
    before = time.time()
    inst = await driver.create(kit.request("chatty", CHATTY))

    async def read(**kw) -> list[bytes]:
        return texts(await read_logs(driver, inst, **kw))

    async def both() -> list[bytes] | None:  # 'one' can be logged a moment before 'two'
        lines = await read()
        return lines if len(lines) >= 2 else None

    assert await eventually(both, what="output logged") == [b"one", b"two"]
    assert await read(tail=1) == [b"two"]
    assert await read(tail=0) == []
    assert await read(since=time.time() + 3600) == []

    address = await driver.address(inst)
    assert address is not None and ipaddress.ip_address(address)
    assert (await only(driver, inst)).address == address

    followed: list[LogLine] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async with aclosing(driver.logs(inst, follow=True)) as stream:
                    async for line in stream:
                        followed.append(line)

            nursery.start_soon(follow)
            while texts(followed) != [b"one", b"two"]:
                await trio.sleep(0.05)
            await driver.stop(inst, timeout=10)  # following ends with the instance
    assert texts(followed) == [b"one", b"two"]
    assert await driver.address(inst) is None
    # Each line carries the time the runtime took it, in order.
    first, second = followed
    assert before - 1 <= first.when <= second.when <= time.time() + 1, (before, followed)


async def test_logs_since_is_inclusive_and_stopped_instances_stay_readable(kit):
    driver = kit.driver
    inst = await driver.create(kit.request("chatty", CHATTY))
    lines = await eventually(lambda: _two(driver, inst), what="output logged")
    await driver.stop(inst, timeout=10)
    assert texts(await read_logs(driver, inst)) == [b"one", b"two"]  # a stopped instance's output is kept
    assert texts(await read_logs(driver, inst, since=lines[1].when))[-1:] == [b"two"]  # at or after
    assert texts(await read_logs(driver, inst, since=lines[1].when + 0.001)) == []
    assert texts(await read_logs(driver, inst, since=lines[0].when, tail=1)) == [b"two"]
    await driver.remove(inst)
    with pytest.raises(DriverError):
        await read_logs(driver, inst)


async def _two(driver, inst: Instance) -> list[LogLine] | None:
    lines = await read_logs(driver, inst)
    return lines if len(lines) == 2 else None


async def test_logs_merge_stderr_and_keep_long_lines_whole(kit):
    long = "x" * 40_000  # past the 16 KiB at which Docker's logger cuts a line
    huge = "y" * (MAX_LOG_LINE + 10)
    script = f"echo out; echo err >&2; echo {long}; echo {huge}; exec sleep 3600"
    inst = await kit.driver.create(kit.request("loud", script))
    lines = await eventually(lambda: _count(kit.driver, inst, 5), what="output logged")
    # stdout and stderr are both there; the order between the two streams is the runtime's (a
    # loaded host has shown stderr's line after stdout's long ones), stdout's own is kept
    got = texts(lines)
    assert b"err" in got
    got.remove(b"err")
    assert got == [b"out", long.encode(), b"y" * MAX_LOG_LINE, b"y" * 10]


async def _count(driver, inst: Instance, n: int) -> list[LogLine] | None:
    lines = await read_logs(driver, inst)
    return lines if len(lines) >= n else None


async def test_networks_are_idempotent(kit):
    await kit.driver.ensure_network(kit.project, "ctest")
    await kit.driver.ensure_network(kit.project, "ctest")
    inst = await kit.driver.create(kit.request("web", SLEEPER))
    assert await kit.driver.address(inst)
    await kit.driver.remove(inst)
    await kit.driver.remove_network(kit.project)
    await kit.driver.remove_network(kit.project)


async def test_pull_brings_an_image_from_its_registry_with_progress(kit):
    with pytest.raises(ImageNotFound):
        await kit.driver.resolve_image(kit.pullable)
    lines: list[PullProgress] = []

    async def progress(p: PullProgress) -> None:
        lines.append(p)

    await kit.driver.pull(kit.pullable, None, progress)
    assert (await kit.driver.resolve_image(kit.pullable)).startswith("sha256:")
    assert lines and all(p.image == kit.pullable and p.status for p in lines)
    await kit.driver.pull(kit.pullable, None)  # again, with it there: a moved tag would be picked up
    inst = await kit.driver.create(kit.request("web", SLEEPER, image=kit.pullable))
    assert inst.running


async def test_a_refused_pull_raises_the_registrys_words(kit):
    with pytest.raises(PullFailed) as info:
        await kit.driver.pull(kit.unpullable, None)
    assert "not found" in str(info.value) and kit.unpullable.rsplit(":", 1)[0] in str(info.value)
    with pytest.raises(ImageNotFound):
        await kit.driver.resolve_image(kit.unpullable)


async def test_login_checks_credentials_and_never_repeats_the_password(kit):
    await kit.driver.login(kit.login)
    wrong = RegistryAuth(kit.login.server, kit.login.username, "not-the-password-42")
    with pytest.raises(AuthFailed) as info:
        await kit.driver.login(wrong)
    assert "401" in str(info.value) and "not-the-password-42" not in str(info.value)
    assert "not-the-password-42" not in repr(wrong)


async def test_a_pull_from_a_registry_that_never_answers_blocks_nothing_and_is_cancellable(kit):
    """The pull waits on I/O (the event loop keeps ticking meanwhile), and a cancel ends it."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.05)
            ticks += 1

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        with trio.move_on_after(1.5) as scope:
            await kit.driver.pull(kit.silent, None)
        nursery.cancel_scope.cancel()
    assert scope.cancelled_caught, "the pull ended by itself: the registry was meant never to answer"
    assert time.monotonic() - t0 < 1.5 + 5  # the cancel ended it, within a loaded machine's reaction
    assert ticks >= 10  # 30 at 0.05 s each in 1.5 s if nothing blocked the loop; a blocked loop gives ~0


async def test_shared_networks_are_made_joined_and_removed_only_when_unused(kit):
    """Issue 12: a project's shared network is made on first use and joined by another project as
    external; deleting the maker keeps it while others use it; external ones are never removed."""
    tag = uuid.uuid4().hex[:8]
    alpha, beta, outside = f"a{tag}", f"b{tag}", f"ext-{tag}"
    await kit.make_network(outside)
    shared = NetworkRef("shared")
    a = attrs.evolve(kit.request("api", SLEEPER, networks=(shared, NetworkRef("o", True, outside))),
                     project_name=alpha)
    before = await kit.leftovers()
    missing = attrs.evolve(kit.request("web", SLEEPER, networks=(NetworkRef("x", True, f"gone-{tag}"),)),
                           project_name=beta)
    with pytest.raises(DriverError, match=f"gone-{tag}"):
        await kit.driver.create(missing)
    assert await kit.leftovers() == before  # nothing made
    assert not await kit.driver.network_exists(f"{alpha}_shared")
    api = await kit.driver.create(a)
    assert await kit.driver.network_exists(f"{alpha}_shared") and await kit.driver.network_exists(outside)
    b = attrs.evolve(kit.request("web", SLEEPER, project=uuid.uuid4().hex,
                                 networks=(NetworkRef("mesh", True, f"{alpha}_shared"),)), project_name=beta)
    web = await kit.driver.create(b)
    await kit.driver.create(b)  # a replayed create joins nothing twice
    # the project's own instance (one a crash left behind) never keeps it: only other projects' do
    kept = await kit.driver.remove_network(a.project_id, alpha)
    assert kept == [f"network {alpha}_shared is kept, still in use by {web.name}"]
    assert await kit.driver.network_exists(f"{alpha}_shared")
    await kit.driver.remove(api)
    await kit.driver.remove(web)
    assert await kit.driver.remove_network(b.project_id, beta) == []
    assert await kit.driver.network_exists(f"{alpha}_shared")  # beta only joined it
    assert await kit.driver.remove_network(a.project_id, alpha) == []
    assert not await kit.driver.network_exists(f"{alpha}_shared")
    assert await kit.driver.network_exists(outside)  # external: never removed


BURNER = "while :; do :; done"


async def test_stats_counters_never_go_down_and_a_busy_instance_uses_cpu(kit):
    mib = 1 << 20
    busy = await kit.driver.create(kit.request("burn", BURNER))
    idle = await kit.driver.create(kit.request("idle", SLEEPER, memory=128 * mib))  # a VM boots in it
    first = {i.id: await kit.driver.stats(i) for i in (busy, idle)}
    t0 = time.monotonic()
    await trio.sleep(2)
    second = {i.id: await kit.driver.stats(i) for i in (busy, idle)}
    elapsed = time.monotonic() - t0
    for inst in (busy, idle):
        a, b = first[inst.id], second[inst.id]
        assert a is not None and b is not None, inst.service
        assert b.when > a.when
        for counter in ("cpu_ns", "net_rx", "net_tx", "block_read", "block_write"):
            assert getattr(b, counter) >= getattr(a, counter) >= 0, (inst.service, counter, a, b)
        assert b.memory > 0
    assert second[idle.id].memory_limit == 128 * mib
    # a loaded 2-core machine: a busy loop gets well over a fifth of a core
    burned = (second[busy.id].cpu_ns - first[busy.id].cpu_ns) / 1e9 / elapsed
    assert burned > 0.2, f"the busy instance used {burned:.0%} of a core"


async def test_stats_of_a_stopped_or_removed_instance_are_none(kit):
    inst = await kit.driver.create(kit.request("web", SLEEPER))
    assert await kit.driver.stats(inst) is not None
    await kit.driver.stop(inst, timeout=5)
    assert await kit.driver.stats(inst) is None
    await kit.driver.start(inst)
    assert await eventually(lambda: kit.driver.stats(inst), what="a reading after a start again")
    await kit.kill(inst)
    assert await eventually(lambda: _none(kit.driver.stats(inst)), what="no reading once killed")
    await kit.driver.remove(inst)
    assert await kit.driver.stats(inst) is None


async def _none(reading) -> bool:
    return await reading is None
