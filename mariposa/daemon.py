"""The daemon: one trio nursery holding the API server, the task executor, the reconciler and
one event watcher per driver. Nothing else owns a task.

Stopping the daemon (SIGTERM, SIGINT) cancels that nursery and leaves instances running; the
next start adopts them by label and resumes any task that was interrupted.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

import attrs
import structlog
import trio

from mariposa.api.http import bind_unix_socket, serve
from mariposa.api.routes import build_router
from mariposa.context import Context
from mariposa.converge.goals import GoalReader
from mariposa.converge.reconciler import Reconciler
from mariposa.drivers.base import Driver, DriverError
from mariposa.health.monitor import HealthMonitor
from mariposa.packages import DEFAULT_PACKAGES
from mariposa.queue.executor import Executor
from mariposa.store.db import Store

log = structlog.get_logger()

DEFAULT_STATE_DIR = "/var/lib/mariposa"
DEFAULT_SOCKET = "/run/mariposa/mariposa.sock"


@attrs.frozen
class DaemonConfig:
    state_dir: str = DEFAULT_STATE_DIR
    socket: str = DEFAULT_SOCKET
    docker_host: str | None = None
    resync: float = 10.0
    parallelism: int = 8


class StateDirLocked(Exception):
    pass


def lock_state_dir(state_dir: Path):
    """Two daemons must never share a store (or steal each other's socket)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = open(state_dir / "lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateDirLocked(f"another mariposa daemon is using {state_dir}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


async def watch_driver_events(ctx: Context, driver: Driver) -> None:
    """Runtime events only wake the reconciler; if the stream breaks we re-subscribe, and the
    periodic resync covers whatever happened meanwhile."""
    while True:
        try:
            async for _event in driver.events():
                ctx.reconcile.set()
                ctx.health.set()
        except (DriverError, OSError) as exc:
            log.warning("runtime event stream lost; re-subscribing", driver=driver.compute_type, error=str(exc))
        except Exception as exc:  # httpx transport errors and the like
            log.warning("runtime event stream lost; re-subscribing", driver=driver.compute_type, error=repr(exc))
        await trio.sleep(1.0)


def default_drivers(owner: str, config: DaemonConfig) -> dict[str, Driver]:
    from mariposa.drivers.docker import DockerDriver

    return {"docker": DockerDriver(owner, config.docker_host)}


async def run_daemon(config: DaemonConfig, drivers: dict[str, Driver] | None = None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    state_dir = Path(config.state_dir)
    lock = lock_state_dir(state_dir)
    store = await trio.to_thread.run_sync(Store, state_dir / "mariposa.db")
    drivers = drivers or default_drivers(store.owner, config)
    ctx = Context(store=store, drivers=drivers, goals=GoalReader(store, DEFAULT_PACKAGES), packages=DEFAULT_PACKAGES,
                  parallelism=config.parallelism)
    for driver in drivers.values():
        try:
            await driver.ping()
        except DriverError as exc:
            log.warning("runtime not available yet; will retry", driver=driver.compute_type, error=str(exc))
    executor = Executor(ctx)
    reconciler = Reconciler(ctx, resync=config.resync)
    ctx.monitor = HealthMonitor(ctx)
    sock = bind_unix_socket(config.socket)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, nursery.cancel_scope)
            await nursery.start(executor.run)
            await nursery.start(reconciler.run)
            await nursery.start(ctx.monitor.run)
            for driver in drivers.values():
                nursery.start_soon(watch_driver_events, ctx, driver)
            await nursery.start(serve, build_router(ctx, executor), sock)
            log.info("mariposa daemon ready", state_dir=str(state_dir), socket=config.socket, owner=store.owner)
            task_status.started(ctx)
    finally:
        with trio.CancelScope(shield=True):
            for driver in drivers.values():
                await driver.aclose()
        store.close()
        try:
            os.unlink(config.socket)
        except FileNotFoundError:
            pass
        lock.close()
        log.info("mariposa daemon stopped; instances keep running")


async def _stop_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal received, shutting down", signal=signal.Signals(signum).name)
            scope.cancel()
            return
