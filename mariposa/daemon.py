"""The daemon: one trio nursery holding the API server, the task executor, the reconciler and
one event watcher per driver. Nothing else owns a task.

Stopping the daemon (SIGTERM, SIGINT) cancels that nursery and leaves instances running; the
next start adopts them by label and resumes any task that was interrupted.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
from pathlib import Path

import attrs
import structlog
import trio

from mariposa import config as configuration
from mariposa import logs, systemd
from mariposa.api import remote
from mariposa.api.http import bind_unix_socket, serve
from mariposa.api.routes import build_router
from mariposa.clock import Clock, TrioClock
from mariposa.config import DaemonConfig
from mariposa.context import Context
from mariposa.control import AccessPolicy, Control
from mariposa.converge.goals import GoalReader
from mariposa.converge.reconciler import Reconciler
from mariposa.dns.keeper import NameKeeper
from mariposa.drivers.base import Driver, DriverError
from mariposa.errors import StateDirLocked, StoreUnavailable
from mariposa.health.monitor import HealthMonitor
from mariposa.mdata.files import MdataFiles
from mariposa.mdata.keeper import MdataKeeper
from mariposa.metrics import listener as metrics_listener
from mariposa.metrics.autoscaler import Autoscaler
from mariposa.metrics.collector import Collector
from mariposa.metrics.history import MetricsHistory
from mariposa.queue.executor import Executor
from mariposa.registries import FILE_NAME, Credentials
from mariposa.runs.scheduler import Scheduler
from mariposa.store.access import load_state
from mariposa.store.db import Store
from mariposa.triggers import listener as trigger_listener
from mariposa.triggers.app import TriggerApp
from mariposa.vault import KeyRing, Vault
from mariposa.vault.delivery import SecretFiles
from mariposa.vm.dhcp import DhcpServer
from mariposa.watch import ManifestDirectory
from mariposa.webhooks.dispatcher import Dispatcher

log = structlog.get_logger()

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
    """Runtime events only wake the reconciler; if the stream breaks we re-subscribe from the
    last event's cursor, so what happened meanwhile still wakes it (and the periodic resync
    covers whatever the runtime itself no longer keeps).

    A runtime that went away (an Engine restarted) keeps nothing of what happened before it
    came back: its containers stopped with it and their events are gone. So once it answers
    again, the reconciler and the health monitor are woken at once, to look at the whole of it,
    instead of waiting for the next resync. The loss is logged once, and the return."""
    cursor: str | None = None
    lost_at: float | None = None
    while True:
        try:
            if lost_at is not None:
                await driver.ping()
                log.info("runtime answers again; re-subscribing from the cursor", driver=driver.compute_type,
                         away_s=round(trio.current_time() - lost_at, 1))
                lost_at = None
                ctx.wake_reconciler()
                ctx.wake_health()
            async for event in driver.events(since=cursor):
                cursor = event.cursor or cursor
                ctx.gauges.note_event(ctx.clock.now(), event.time)
                log.debug("runtime event", action=event.action, instance=(event.instance_id or "")[:12])
                if event.instance_id and event.action == "die":
                    ctx.died[event.instance_id] = trio.current_time()
                elif event.instance_id and event.action == "start":
                    ctx.died.pop(event.instance_id, None)
                ctx.wake_reconciler()
                ctx.wake_health()
                ctx.runtime_changed.set()
                ctx.names_changed.set()
        except Exception as exc:  # DriverError, OSError, httpx transport errors and the like
            if lost_at is None:
                lost_at = trio.current_time()
                error = str(exc) if isinstance(exc, DriverError | OSError) else repr(exc)
                log.warning("runtime event stream lost; re-subscribing", driver=driver.compute_type, error=error)
        await trio.sleep(1.0)


def default_drivers(owner: str, config: DaemonConfig) -> dict[str, Driver]:
    """One driver per compute type the host can run: Docker always (its absence is a runtime to
    wait for), LXC (``infrastructure``) where the lxc tools are installed and QEMU (``kvm``) where
    qemu-system-x86_64 is, so a Docker-only host never lists instances through a runtime it does
    not have. All three share the project bridges (mariposa/bridges.py)."""
    import shutil

    from mariposa.bridges import Bridges
    from mariposa.drivers.docker import DockerDriver

    bridges = Bridges(Path(config.state_dir) / "networks")  # one project network across runtimes
    drivers: dict[str, Driver] = {"docker": DockerDriver(owner, config.docker_host, bridges)}
    if config.cluster == "swarm":  # Docker services are the Swarm's; runs' containers stay local
        from mariposa.swarm.driver import SwarmDriver

        drivers["docker"] = SwarmDriver(owner, DockerDriver(owner, config.docker_host, bridges), config.docker_host)
    if shutil.which("lxc-start"):
        from mariposa.drivers.lxc import LxcDriver

        lxc = LxcDriver(owner, config.lxc_path or str(Path(config.state_dir) / "lxc"), config.docker_host,
                        bridges=bridges)
        drivers[lxc.compute_type] = lxc
    if shutil.which("qemu-system-x86_64"):
        from mariposa.drivers.qemu import QemuDriver

        qemu = QemuDriver(owner, config.qemu_path or str(Path(config.state_dir) / "qemu"), config.docker_host,
                          bridges=bridges, kernel_dir=config.kernel_dir, accel=config.qemu_accel,
                          run_dir=Path(config.run_dir) / "qemu")
        drivers[qemu.compute_type] = qemu
    return drivers


class Daemon:
    """The running daemon's parts, so signals (SIGHUP) and shutdown can reach them."""

    def __init__(self, config: DaemonConfig, ctx: Context, reconciler: Reconciler, config_path: str | None,
                 overrides: dict | None, collector: Collector | None = None):
        self.config = config
        self.ctx = ctx
        self.reconciler = reconciler
        self.collector = collector
        self.config_path = config_path
        self.overrides = overrides or {}
        self.directory: ManifestDirectory | None = None

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration, apply what can change live, rescan the directory.
        A bad file is refused and the running configuration kept."""
        systemd.notify("RELOADING=1")
        try:
            new = await trio.to_thread.run_sync(configuration.load, self.config_path, self.overrides)
        except configuration.ConfigError as exc:
            log.error("configuration not reloaded; keeping the running one", error=exc.message)
            systemd.notify("READY=1")
            return
        for key in ("state_dir", "socket", "manifest_dir", "docker_host", "lxc_path", "qemu_path", "kernel_dir",
                    "secret_key_file", "run_dir", "triggers_listen", "metrics_listen", "listen", "tls_cert",
                    "tls_key", "cluster"):
            if getattr(new, key) != getattr(self.config, key):
                log.warning("this setting changes only on restart", setting=key, running=getattr(self.config, key),
                            configured=getattr(new, key))
        logs.configure(new.log_format, new.log_level)
        self.ctx.sessions.idle = new.ui_idle_timeout
        self.reconciler.resync = new.resync
        self.ctx.parallelism = new.parallelism
        self.ctx.packages = new.packages
        self.ctx.goals.packages = new.packages
        self.ctx.allow_privileged = new.allow_privileged
        self.ctx.bind_roots = new.bind_roots
        if self.collector is not None:
            self.collector.set_interval(new.metrics_interval)
        if self.directory is not None:
            self.directory.rescan = new.rescan
            self.directory.delete_removed = new.delete_removed_projects
            self.directory.request_rescan()
        self.config = attrs.evolve(new, state_dir=self.config.state_dir, socket=self.config.socket,
                                   manifest_dir=self.config.manifest_dir, docker_host=self.config.docker_host,
                                   secret_key_file=self.config.secret_key_file, run_dir=self.config.run_dir,
                                   triggers_listen=self.config.triggers_listen,
                                   metrics_listen=self.config.metrics_listen, listen=self.config.listen,
                                   tls_cert=self.config.tls_cert, tls_key=self.config.tls_key,
                                   cluster=self.config.cluster)  # checked at start only
        self.ctx.wake_reconciler()
        log.info("configuration reloaded", source=new.source or "defaults")
        systemd.notify("READY=1")

    async def signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
            async for signum in received:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                log.info("signal received, shutting down", signal=signal.Signals(signum).name)
                systemd.notify("STOPPING=1")
                scope.cancel()
                return

    async def status(self) -> None:
        """STATUS= for `systemctl status`: one line that says how things are."""
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        while True:
            try:
                systemd.notify("STATUS=" + await summary(self.ctx))
            except StoreUnavailable as exc:
                systemd.notify(f"STATUS=store unavailable: {exc.message}")
            await trio.sleep(5)


async def summary(ctx: Context) -> str:
    snap = await ctx.goals.snapshot()
    try:
        instances = await ctx.inventory()
        running = sum(1 for i in instances if i.running and not (snap.records.get(i.id) or {}).get("retired"))
        live = f"{running} instances running"
    except DriverError:
        live = "runtime unavailable"
    active = sum(1 for t in snap.open_tasks if t.state == "active")
    return f"{len(snap.projects)} projects, {live}, {active} tasks active, {len(snap.open_tasks) - active} queued"


async def stop_all_instances(ctx: Context) -> None:
    """--stop-instances-on-exit: stop (not remove) everything; the next start restarts them."""
    snap = await ctx.goals.snapshot()
    for driver in ctx.drivers.values():
        instances = [i for i in await driver.inventory() if i.running]
        log.info("stopping instances on exit", count=len(instances), driver=driver.compute_type)
        async with trio.open_nursery() as nursery:
            for inst in instances:
                project = next((p for p in snap.projects if p.id == inst.project_id), None)
                spec = None
                if project:
                    assert project.current_version is not None  # set in the transaction that adds the project
                    cached = ctx.goals.cached_spec(project.current_version)  # None: unreadable version
                    spec = cached.service(inst.service) if cached else None
                nursery.start_soon(driver.stop, inst, spec.stop_timeout if spec else None)


async def run_daemon(
    config: DaemonConfig, drivers: dict[str, Driver] | None = None, config_path: str | None = None,
    overrides: dict | None = None, *, clock: Clock | None = None, task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """``clock`` is the one clock of every time-dependent decision (default: this trio run's,
    anchored to the wall clock); the store stamps its times with it too."""
    state_dir = Path(config.state_dir)
    if config.cluster == "swarm":  # refused before anything is bound or locked
        from mariposa.swarm import SwarmError, require_manager

        try:
            log.info("cluster: swarm", engine=await require_manager(config.docker_host))
        except SwarmError as exc:
            raise configuration.ConfigError(str(exc)) from None
    lock = lock_state_dir(state_dir)
    _raise_file_limit()
    clock = clock or TrioClock()
    store = await trio.to_thread.run_sync(Store, state_dir / "mariposa.db", clock)
    drivers = drivers or default_drivers(store.owner, config)
    ctx = Context(store=store, drivers=drivers, goals=GoalReader(store, config.packages), packages=config.packages,
                  parallelism=config.parallelism, allow_privileged=config.allow_privileged, cluster=config.cluster,
                  bind_roots=config.bind_roots, clock=clock)
    ctx.vault = Vault(store, KeyRing.configured(config.secret_key_file))
    ctx.credentials = Credentials(ctx.vault, state_dir / FILE_NAME)
    migrated = await ctx.credentials.load()
    if migrated:
        log.info("registry logins moved into the encrypted store", count=migrated, removed=str(state_dir / FILE_NAME))
    ctx.secret_files = SecretFiles(config.run_dir)
    ctx.mdata = MdataKeeper(ctx, MdataFiles(config.run_dir))
    for driver in drivers.values():
        try:
            await driver.ping()
        except DriverError as exc:
            log.warning("runtime not available yet; will retry", driver=driver.compute_type, error=str(exc))
    await _sweep_instance_files(ctx)
    executor = Executor(ctx)
    reconciler = Reconciler(ctx, resync=config.resync)
    ctx.monitor = HealthMonitor(ctx)
    ctx.metrics = MetricsHistory(config.metrics_interval)
    collector = Collector(ctx, config.metrics_interval)
    daemon = Daemon(config, ctx, reconciler, config_path, overrides, collector)
    policy = AccessPolicy(config.socket_gid(), state=await store.call(load_state))
    control = Control(ctx, policy, executor)
    sock = bind_unix_socket(config.socket, config.socket_mode, config.socket_gid())
    triggers = scrapes = remote_listener = None
    try:
        if config.listen:  # bound before anything starts, as the other listeners
            from mariposa.api import tls

            remote_listener, remote_base = await remote.bind(config.listen)
            if config.tls_cert and config.tls_key:
                cert, key = tls.paths(config.state_dir, config.tls_cert, config.tls_key)
            else:
                host = remote.listen_host(config.listen)
                cert, key = await trio.to_thread.run_sync(tls.ensure_self_signed, config.state_dir, host)
            try:
                context = tls.server_context(cert, key)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise configuration.ConfigError(f"tls_cert/tls_key: cannot load {cert} and {key}: {exc}") from None
            log.info("remote listener bound", url=remote_base, certificate=str(cert),
                     fingerprint=tls.fingerprint(cert))
        if config.triggers_listen:  # bound before anything starts: a port taken is a refusal to start
            triggers, ctx.trigger_base = await trigger_listener.bind(config.triggers_listen)
        if config.metrics_listen:
            scrapes, metrics_base = await metrics_listener.bind(config.metrics_listen)
            log.info("metrics listener bound", url=metrics_base + "/metrics")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.signals, nursery.cancel_scope)
            await nursery.start(ctx.audit.run)
            await nursery.start(ctx.tokens.run)
            await nursery.start(executor.run)
            await nursery.start(reconciler.run)
            await nursery.start(ctx.monitor.run)
            await nursery.start(ctx.mdata.run)
            await nursery.start(collector.run)
            ctx.scheduler = Scheduler(ctx)
            await nursery.start(ctx.scheduler.run)
            ctx.webhooks = Dispatcher(ctx)
            await nursery.start(ctx.webhooks.run)
            # metric triggers: judged after each collector round (mariposa/metrics/autoscaler.py)
            await nursery.start(Autoscaler(ctx, config.metrics_interval).run)
            for driver in drivers.values():
                nursery.start_soon(watch_driver_events, ctx, driver)
            if config.cluster == "swarm":  # node failures and the reschedules they cause, as events
                from mariposa.swarm import moves
                from mariposa.swarm.driver import SwarmDriver

                swarm_driver = drivers.get("docker")
                if isinstance(swarm_driver, SwarmDriver):
                    nursery.start_soon(moves.watch, ctx, swarm_driver)
            bridges = next((b for d in drivers.values() if (b := getattr(d, "bridges", None)) is not None), None)
            if bridges is not None:  # runtimes on bridges of Mariposa's: their names are ours to answer
                await nursery.start(NameKeeper(ctx, bridges).run)
            qemu = next((d for d in drivers.values() if hasattr(d, "leases")), None)
            if qemu is not None:  # VMs that boot their own OS take their addresses by DHCP
                await nursery.start(DhcpServer(qemu.leases).run)
            if config.manifest_dir:
                daemon.directory = ManifestDirectory(ctx, control, config.manifest_dir, config.rescan,
                                                     config.delete_removed_projects)
                await nursery.start(daemon.directory.run)
            router = build_router(control)  # one API, on the socket and on the remote listener
            await nursery.start(serve, router, sock, policy.admits)
            if triggers is not None:
                await nursery.start(trigger_listener.serve, TriggerApp(control), triggers)
            if scrapes is not None:
                await nursery.start(metrics_listener.serve, control, scrapes)
            if remote_listener is not None:
                from mariposa.ui import app as dashboard
                from mariposa.ui.front import Front

                auth = remote.Authenticator(ctx.tokens, lambda: policy.state.users, clock.now)
                ctx.sessions.idle = config.ui_idle_timeout
                ctx.dashboard_base = remote_base
                front = Front(router, dashboard.build(control, ctx.sessions, auth))
                await nursery.start(remote.serve, front, remote_listener, context, auth)
            nursery.start_soon(systemd.watchdog)
            nursery.start_soon(daemon.status)
            systemd.notify("READY=1\nSTATUS=" + await summary(ctx))
            log.info("mariposa daemon ready", state_dir=str(state_dir), socket=config.socket, owner=store.owner,
                     manifest_dir=config.manifest_dir, config=config.source, triggers=ctx.trigger_base)
            task_status.started(ctx)
    finally:
        with trio.CancelScope(shield=True):
            if config.stop_instances_on_exit:
                with trio.move_on_after(120):
                    await stop_all_instances(ctx)
            for driver in drivers.values():
                await driver.aclose()
        store.close()
        try:
            os.unlink(config.socket)
        except FileNotFoundError:
            pass
        lock.close()
        log.info("mariposa daemon stopped" + ("" if config.stop_instances_on_exit else "; instances keep running"))


async def _sweep_instance_files(ctx: Context) -> None:
    """The secret and mdata files of instances that went while the daemon was down (or crashed
    between removing one and its files) go too; with the runtime unavailable they wait for the
    next start."""
    try:
        live = {i.id for i in await ctx.inventory()}
    except DriverError:
        return
    gone = await trio.to_thread.run_sync(ctx.secret_files.sweep, live)
    gone += await trio.to_thread.run_sync(ctx.mdata.files.sweep, live)
    if gone:
        log.info("files of gone instances removed", count=gone)


def _raise_file_limit() -> None:
    """Thousands of health probes and runtime connections need more than the default 1,024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))
