"""An in-process daemon core for control-layer tests: the store, the fake driver, the executor
and the reconciler in the test's nursery, on trio's MockClock, with no HTTP and no real sleeping."""

from __future__ import annotations

import attrs
import pytest
import trio

from mariposa.context import Context
from mariposa.control import AccessPolicy, Caller, Control
from mariposa.converge.goals import GoalReader
from mariposa.converge.reconciler import Reconciler
from mariposa.drivers.fake import FakeDriver
from mariposa.queue.executor import Executor
from mariposa.store.db import Store

ROOT = Caller(transport="unix", uid=0, gid=0, pid=1)


@attrs.define
class Core:
    control: Control
    ctx: Context
    driver: FakeDriver
    clock: trio.testing.MockClock

    async def settle(self, result: dict, timeout: float = 120.0) -> list[dict]:
        """Wait (in virtual time) until the result's tasks end; their final rows."""
        done = []
        with trio.fail_after(timeout):
            for task in result["tasks"]:
                while (row := await self.control.queue.get(ROOT, task["id"]))["state"] in ("queued", "active"):
                    await trio.sleep(0.05)
                done.append(row)
        return done


async def start_core(tmp_path, nursery, mock_clock, clock=None) -> Core:
    """The control layer, executor and reconciler on a fake driver in ``nursery``; ``clock`` (None:
    the store's own) is the one clock the store and the context share."""
    # Store calls run in worker threads; a small threshold keeps the clock from jumping while one
    # is in flight, and still skips every back-off and resync wait at once.
    mock_clock.autojump_threshold = 0.02
    if clock is None:
        store = await trio.to_thread.run_sync(Store, tmp_path / "mariposa.db")
        extra = {}
    else:
        store = await trio.to_thread.run_sync(Store, tmp_path / "mariposa.db", clock)
        extra = {"clock": clock}
    driver = FakeDriver(images=("busybox", "crashy"), crash_images=("crashy",))
    ctx = Context(store=store, drivers={"docker": driver}, goals=GoalReader(store, {}), packages={}, **extra)
    executor = Executor(ctx)
    control = Control(ctx, AccessPolicy(socket_gid=4242, daemon_uid=0), executor)
    await nursery.start(executor.run)
    await nursery.start(Reconciler(ctx, resync=1.0).run)
    return Core(control, ctx, driver, mock_clock)


@pytest.fixture
async def core(tmp_path, nursery, mock_clock):
    yield await start_core(tmp_path, nursery, mock_clock)
    nursery.cancel_scope.cancel()
