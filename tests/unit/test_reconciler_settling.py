"""The reconciler and the runtime's lagging listing: Docker 20.10 sends ``die`` before its
container listing shows the container stopped, so a pass run at the event still sees it running.
The reconciler must then look again soon (``RECHECK``), not at the next resync, and stop looking
once the listing agrees, the instance starts again, or ``SETTLE`` has passed."""

from __future__ import annotations

import time
import uuid

import trio

from mariposa.context import Context
from mariposa.converge.goals import GoalReader
from mariposa.converge.reconciler import SETTLE, Reconciler
from mariposa.drivers.fake import FakeDriver
from mariposa.model import CreateRequest, ServiceSpec
from mariposa.store.db import Store


async def _setup(tmp_path):
    store = await trio.to_thread.run_sync(Store, tmp_path / "mariposa.db")
    driver = FakeDriver()
    ctx = Context(store=store, drivers={"docker": driver}, goals=GoalReader(store, {}), packages={})
    inst = await driver.create(CreateRequest(
        instance_id=uuid.uuid4().hex, owner=store.owner, project_id=uuid.uuid4().hex, project_name="p",
        version_id="v1", spec=ServiceSpec(name="web", image="busybox", command=("sleep", "1000")),
        created=time.time()))
    return ctx, driver, inst


async def test_a_death_not_yet_listed_is_looked_at_again_until_it_is(tmp_path):
    ctx, driver, inst = await _setup(tmp_path)
    reconciler = Reconciler(ctx, resync=60.0)
    await reconciler.reconcile_once()
    assert not reconciler.settling  # nothing died: wait for events or the resync

    ctx.died[inst.id] = trio.current_time()  # the die event, before the listing shows it
    await reconciler.reconcile_once()
    assert reconciler.settling

    driver.kill(inst.id)  # now the listing shows it exited
    await reconciler.reconcile_once()
    assert not reconciler.settling


async def test_looking_again_stops_after_settle(tmp_path):
    ctx, _, inst = await _setup(tmp_path)
    reconciler = Reconciler(ctx, resync=60.0)
    ctx.died[inst.id] = trio.current_time() - SETTLE - 1  # a die the runtime never followed up
    await reconciler.reconcile_once()
    assert not reconciler.settling and inst.id not in ctx.died
