"""What every part of the running daemon shares: the store, the drivers, the goal reader and the
wake-ups that connect the reconciler and the queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from mariposa.access.audit import AuditTrail
from mariposa.access.tokens import TokenBook
from mariposa.clock import Clock, TrioClock
from mariposa.coalesce import Coalesced
from mariposa.converge.goals import GoalReader
from mariposa.drivers.base import Driver, DriverError
from mariposa.manifest.rules import DEFAULT_BIND_ROOTS
from mariposa.metrics.own import DaemonGauges
from mariposa.packages import Package
from mariposa.registries import Credentials
from mariposa.store.db import Store
from mariposa.store.index import ProjectIndex
from mariposa.ui.sessions import Sessions
from mariposa.wakeup import Broadcast, Wakeup

if TYPE_CHECKING:
    from mariposa.health.monitor import HealthMonitor
    from mariposa.mdata.keeper import MdataKeeper
    from mariposa.metrics.history import MetricsHistory
    from mariposa.runs.scheduler import Scheduler
    from mariposa.vault import Vault
    from mariposa.vault.delivery import SecretFiles
    from mariposa.webhooks.dispatcher import Dispatcher


@attrs.define
class Context:
    store: Store
    drivers: dict[str, Driver]
    goals: GoalReader
    packages: Mapping[str, Package]
    parallelism: int = 8
    allow_privileged: bool = False  # new versions may use options that give a container the host
    cluster: str = "none"  # the daemon's cluster (config.py): "swarm" admits a hard '!=' affinity
    bind_roots: tuple[str, ...] = DEFAULT_BIND_ROOTS  # host paths new versions may bind-mount
    clock: Clock = attrs.field(factory=TrioClock)
    reconcile_wakeup: Wakeup = attrs.field(factory=Wakeup)
    queue_wakeup: Wakeup = attrs.field(factory=Wakeup)
    health_wakeup: Wakeup = attrs.field(factory=Wakeup)
    schedule_wakeup: Wakeup = attrs.field(factory=Wakeup)  # a run was asked for (mariposa/runs/)
    runtime_changed: Broadcast = attrs.field(factory=Broadcast)  # any runtime event, for log followers
    task_changes: Broadcast = attrs.field(factory=Broadcast)  # a task was queued, moved on or ended
    health_changes: Broadcast = attrs.field(factory=Broadcast)  # an instance's health status changed
    run_changes: Broadcast = attrs.field(factory=Broadcast)  # a run was queued, started or ended
    names_changed: Wakeup = attrs.field(factory=Wakeup)  # an instance came, went or changed health (mariposa/dns/)
    credentials: Credentials = attrs.field(factory=Credentials)  # registry logins (in memory unless a file)
    monitor: HealthMonitor | None = None  # for the API to read instance health from
    scheduler: Scheduler | None = None  # scheduled and event services' runs (mariposa/runs/)
    trigger_base: str | None = None  # http://HOST:PORT of the triggers' listener, once bound (mariposa/triggers/)
    webhooks: Dispatcher | None = None  # outgoing webhooks (mariposa/webhooks/): a redelivery wakes its URL's queue
    # the last hour of every instance's numbers, filled by the metrics collector (mariposa/metrics/)
    metrics: MetricsHistory | None = None
    # the daemon's own numbers for GET /metrics: reconcile durations, health checks, event lag
    gauges: DaemonGauges = attrs.field(factory=DaemonGauges)
    # Secrets (mariposa/vault/): made by the daemon (and tests) after the store, so see ``vault``.
    _vault: Vault | None = None
    _secret_files: SecretFiles | None = None
    _mdata: MdataKeeper | None = None  # live mdata files (mariposa/mdata/), made by the daemon
    # Instance id -> when the runtime said it died (trio time), until it starts again: the
    # reconciler looks again soon while the runtime's listing still shows such an instance running.
    died: dict[str, float] = attrs.field(factory=dict)
    # The projects table in memory, current by the store's generation (store/index.py)
    projects: ProjectIndex = attrs.field(init=False, default=attrs.Factory(
        lambda self: ProjectIndex(self.store), takes_self=True))
    # Every decision of authorize(), written in batches by its own task (access/audit.py)
    audit: AuditTrail = attrs.field(init=False, default=attrs.Factory(
        lambda self: AuditTrail(self.store), takes_self=True))
    # The remote listener's API tokens, in memory (access/tokens.py): loaded by its task at start
    tokens: TokenBook = attrs.field(init=False, default=attrs.Factory(
        lambda self: TokenBook(self.store), takes_self=True))
    # The dashboard's sign-in codes and sessions, in memory (ui/sessions.py); its base URL once bound
    sessions: Sessions = attrs.field(init=False, default=attrs.Factory(
        lambda self: Sessions(self.clock.now), takes_self=True))
    dashboard_base: str | None = None
    _inventory: Coalesced[list] = attrs.field(init=False, default=attrs.Factory(
        lambda self: Coalesced(self._list_instances), takes_self=True))

    @property
    def vault(self) -> Vault:
        """The secrets store; one over a key file beside nothing (made on first use) when the
        daemon was not given one (tests of the control layer)."""
        if self._vault is None:
            import tempfile

            from mariposa.vault import KeyRing, Vault

            self._vault = Vault(self.store, KeyRing(f"{tempfile.mkdtemp(prefix='mariposa-key-')}/secret.key"))
        return self._vault

    @vault.setter
    def vault(self, value: Vault) -> None:
        self._vault = value

    @property
    def secret_files(self) -> SecretFiles:
        if self._secret_files is None:
            import tempfile

            from mariposa.vault.delivery import SecretFiles

            self._secret_files = SecretFiles(tempfile.mkdtemp(prefix="mariposa-run-", dir="/dev/shm"))
        return self._secret_files

    @secret_files.setter
    def secret_files(self, value: SecretFiles) -> None:
        self._secret_files = value

    @property
    def mdata(self) -> MdataKeeper:
        """The live mdata keeper; one over a temporary directory when the daemon made none (tests
        of the control layer, where nothing runs its loop)."""
        if self._mdata is None:
            import tempfile

            from mariposa.mdata.files import MdataFiles
            from mariposa.mdata.keeper import MdataKeeper

            self._mdata = MdataKeeper(self, MdataFiles(tempfile.mkdtemp(prefix="mariposa-run-")))
        return self._mdata

    @mdata.setter
    def mdata(self, value: MdataKeeper) -> None:
        self._mdata = value

    async def discard_instance_files(self, project_name: str, instance_id: str) -> None:
        """An instance is gone: its secret and mdata files go with it (idempotent)."""
        def discard() -> None:
            self.secret_files.discard(project_name, instance_id)
            self.mdata.discard(project_name, instance_id)

        await trio.to_thread.run_sync(discard)

    def wake_reconciler(self) -> None:
        """Something changed: plan again soon (many calls collapse into one pass). The scheduler
        looks too: a goal change may add, stop or start a scheduled service."""
        self.reconcile_wakeup.set()
        self.schedule_wakeup.set()

    def wake_queue(self) -> None:
        """A task was queued or finished: the executor looks at the queue again."""
        self.queue_wakeup.set()
        self.task_changes.set()

    def wake_scheduler(self) -> None:
        """A run was asked for or asked to stop: the scheduler looks at once."""
        self.schedule_wakeup.set()

    def wake_health(self) -> None:
        """Instances came or went: the health monitor re-syncs what it watches."""
        self.health_wakeup.set()

    @property
    def owner(self) -> str:
        return self.store.owner

    def driver_for(self, compute_type: str) -> Driver:
        try:
            return self.drivers[compute_type]
        except KeyError:
            raise DriverError(f"no driver for compute_type '{compute_type}' on this host") from None

    async def inventory(self, project_id: str | None = None) -> list:
        """Every driver's instances (of one project, or all): many callers at once share one
        listing that began after each of them asked (coalesce.py)."""
        return list(await self._inventory(project_id))  # a list of its own: callers may sort it

    async def _list_instances(self, project_id: str | None) -> list:
        found = []
        for driver in self.drivers.values():
            found.extend(await driver.inventory(project_id))
        return found
