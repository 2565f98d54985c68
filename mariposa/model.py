"""The values the rest of Mariposa passes around.

Specs (what the user asked for) are frozen attrs classes so they can be hashed, compared and
shared between trio tasks without copies. ``Instance`` is what a driver reports about something
that exists on a runtime; it is also frozen, because an inventory is a snapshot, not a handle.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from typing import Literal

import attrs

ServiceType = Literal["continuous", "scheduled", "event"]
DesiredState = Literal["running", "stopped", "absent"]

# Labels every instance carries, so actual state can be rebuilt from the runtime alone.
LABEL_OWNER = "io.mariposa.owner"
LABEL_PROJECT = "io.mariposa.project"
LABEL_PROJECT_NAME = "io.mariposa.project-name"
LABEL_SERVICE = "io.mariposa.service"
LABEL_INSTANCE = "io.mariposa.instance"
LABEL_SPEC_HASH = "io.mariposa.spec-hash"
LABEL_VERSION = "io.mariposa.version"
LABEL_CREATED = "io.mariposa.created"
LABEL_VOLUME = "io.mariposa.volume"  # a named volume's name in its project (volumes belong to project names)
LABEL_NETWORK = "io.mariposa.network"  # a network a project made for others to join: its name in the project
LABEL_RUN = "io.mariposa.run"  # a run's instance (scheduled and event services): the run's id
LABEL_IMAGE = "io.mariposa.image"  # the image as the manifest names it (instances run its pinned id)


@attrs.frozen
class PortSpec:
    """A container port, optionally pinned to a host port.

    Without a host port the runtime picks a free one, so any number of instances can publish the
    same container port (the single-host stand-in for Triton giving each instance its own IP).
    """

    container: int
    host: int | None = None
    protocol: str = "tcp"

    def __str__(self) -> str:
        base = f"{self.container}/{self.protocol}"
        return f"{self.host}:{base}" if self.host is not None else base


@attrs.frozen
class HealthCheck:
    """One health check of a service (``healthchecks`` in the manifest).

    An instance is unhealthy after ``retries`` consecutive failures (at least one); failures
    within ``grace`` seconds of the instance starting do not count.
    """

    type: str  # http | https | tcp | command
    port: int | None = None
    path: str = "/"
    method: str = "GET"
    status: tuple[int, int] = (200, 399)  # accepted status codes, inclusive
    body: str | None = None  # a substring the response body must contain
    tls_verify: bool = True
    command: tuple[str, ...] | None = None
    user: str | None = None
    poll: float = 10.0
    unhealthy_poll: float | None = None
    timeout: float = 5.0
    retries: int = 3
    grace: float = 0.0

    @property
    def target_port(self) -> int:
        return self.port or (443 if self.type == "https" else 80)

    @property
    def failures_to_unhealthy(self) -> int:
        return max(1, self.retries)

    @property
    def label(self) -> str:
        if self.type in ("http", "https"):
            return f"{self.type} :{self.target_port}{self.path}"
        if self.type == "tcp":
            return f"tcp :{self.target_port}"
        return "command " + " ".join(self.command or ())


@attrs.frozen
class RestartPolicy:
    """Docker's restart policies, enforced by Mariposa itself for every driver."""

    name: str  # no | on-failure | always | unless-stopped
    max_retries: int | None = None  # on-failure:N

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        name, _, count = text.partition(":")
        return cls(name, int(count) if count else None)

    def allows(self, exit_code: int | None, restarts: int) -> bool:
        """Whether an instance that exited with ``exit_code`` after ``restarts`` restarts by us
        should be started again."""
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name == "on-failure":
            failed = exit_code is None or exit_code != 0
            return failed and (self.max_retries is None or restarts < self.max_retries)
        return False

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries is not None else self.name


# Options that govern how Mariposa supervises instances (or, ``pull``, how a version fetches its
# image), not what an instance is: changing them never replaces instances.
SUPERVISION_FIELDS = frozenset({
    "depends_on",
    "scale", "healthchecks", "restart", "preserve_stopped", "stop_timeout", "min_healthy_time", "progress_deadline",
    "pull", "on_meta_change", "mdata_signal",
    # scheduled and event services: when and how runs happen, never what an instance is
    "schedule", "time_zone", "concurrency", "catch_up", "catch_up_limit", "starting_deadline", "timeout", "retries",
    "history_succeeded", "history_failed", "queue_limit", "on_meta",
    "endpoint_mode",  # how a Swarm service is reached, never what an instance is (no effect locally)
    "triggers",  # public trigger URLs (mariposa/triggers/): what a POST does, never what an instance is
    # autoscale and webhooks (mariposa/metrics/, mariposa/webhooks/): what the daemon does about an
    # instance's numbers and events, never what an instance is
    "metric_triggers", "autoscale", "webhooks",
})
PULL_POLICIES = ("missing", "always", "never")


TRIGGER_ACTIONS = ("run", "start", "stop", "scale")


@attrs.frozen
class TriggerSpec:
    """One entry of a service's ``triggers``: a public URL that runs, starts, stops or scales it
    (mariposa/triggers/). ``scale`` is "N", "+N" or "-N", for the scale action only."""

    name: str
    action: str
    scale: str | None = None


METRIC_TRIGGER_ACTIONS = ("increment", "decrement")  # the spec's incr/decr are read as these
METRIC_OPERATORS = (">", ">=", "<", "<=")
WEBHOOK_EVENTS = ("start", "stop", "health", "down", "rollout_failed", "autoscale", "run_failed")


@attrs.frozen
class MetricTriggerSpec:
    """One entry of a service's ``triggers`` that has a ``metric``: a threshold that scales the
    service (mariposa/metrics/autoscale.py), as opposed to a public trigger URL (``TriggerSpec``).

    ``metric`` is "cpu" or "memory" of this service's instances, or "service.NAME.cpu|memory" of
    another service of the project. ``value`` is a percentage: of one core for cpu (of the cpus
    limit when ``of_limit``), of the memory limit for memory; ``value_bytes`` an absolute memory
    threshold instead (``value: 512M``). The condition must hold over ``time`` seconds."""

    name: str
    metric: str
    operator: str
    value: float | None = None  # percent
    value_bytes: int | None = None  # memory only
    of_limit: bool = False
    time: float = 60.0
    action: str = "increment"
    instances: int = 1


@attrs.frozen
class AutoscaleSpec:
    """``autoscale``: whether metric triggers scale the service (``enable: true``), only announce
    what they would do (``notify``, the spec's default) or do nothing, and the range they keep to."""

    enable: str = "notify"  # notify | true | false
    min: int = 1
    max: int | None = None
    retrigger_delay: float = 60.0


@attrs.frozen
class WebhookSpec:
    """One outgoing webhook (mariposa/webhooks/): the events of a service POSTed to ``url``,
    signed with the project secret ``secret_from`` when given. A project-level ``webhooks:``
    entry is copied into every service's, with ``scope`` "project": the events of no service (and
    of a service the current version no longer has) go to those."""

    url: str
    events: tuple[str, ...] = WEBHOOK_EVENTS
    secret_from: str | None = None
    scope: str = "service"  # service | project (the manifest's top-level `webhooks:`)


@attrs.frozen
class InstanceStats:
    """One reading of an instance's counters, as its runtime keeps them (``Driver.stats``).

    Counters are cumulative (CPU time, bytes) so the collector turns two readings into rates
    and a missed reading loses resolution, never a total. None: the runtime cannot tell."""

    when: float  # epoch seconds of the reading
    cpu_ns: int  # CPU time used since the instance started, all cores, nanoseconds
    memory: int  # bytes in use now
    memory_limit: int | None = None  # bytes; None without a limit
    cpu_limit: float | None = None  # cores; None without a limit
    net_rx: int = 0  # bytes received since start
    net_tx: int = 0
    block_read: int = 0  # bytes read from block devices since start
    block_write: int = 0


@attrs.frozen
class MountSpec:
    """One entry of a service's `volumes` (manifest/volumes.py)."""

    type: str  # volume | bind | tmpfs
    source: str | None  # the project's volume name, or an absolute host path; None for tmpfs
    target: str
    read_only: bool = False
    size: int | None = None  # tmpfs: bytes
    labels: tuple[tuple[str, str], ...] = ()  # volume: the top-level declaration's labels


def volume_name(project_name: str, volume: str) -> str:
    """The runtime's name for a project's named volume: readable, and found again by a project
    added later under the same name. Labels, not the name, say whose it is."""
    return f"mariposa_{project_name}_{volume}"


@attrs.frozen
class NetworkRef:
    """One network a service joins besides its project's own (manifest/networks.py): one of the
    project's making (``external`` false: the runtime's name is ``shared_network_name``), or an
    existing one the project only joins, by its runtime name."""

    name: str  # the manifest's name for it
    external: bool = False
    runtime_name: str | None = None  # external: the network's name on the runtime

    def runtime(self, project_name: str) -> str:
        return self.runtime_name or shared_network_name(project_name, self.name)


def shared_network_name(project_name: str, network: str) -> str:
    """The runtime's name for a network a project makes (``networks: {NAME: {}}``): compose's
    PROJECT_NETWORK, so another project (or a compose file) joins it as external by that name."""
    return f"{project_name}_{network}"


DEPENDENCY_CONDITIONS = ("service_started", "service_healthy")


@attrs.frozen
class VolumeInfo:
    """A project's named volume as the runtime reports it."""

    name: str  # the project's name for it
    runtime_name: str
    labels: tuple[tuple[str, str], ...] = ()
    size: int | None = None  # bytes, when the runtime tells
    used_by: tuple[str, ...] = ()  # instance names that mount it (running or not)


@attrs.frozen
class ServiceSpec:
    """One service of a project manifest, validated and normalised.

    ``scale`` is deliberately not part of ``spec_hash``: changing it scales the service and never
    replaces instances.
    """

    name: str
    image: str
    service_type: ServiceType = "continuous"
    compute_type: str = "docker"
    package: str | None = None
    memory: int | None = None  # bytes
    cpus: float | None = None
    tags: tuple[tuple[str, str], ...] = ()
    affinity: tuple[str, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    restart: str = "always"
    stop_timeout: int | None = None
    preserve_stopped: str = "on-failure"  # on-failure | no | always
    healthchecks: tuple[HealthCheck, ...] = ()
    scale: int | None = None
    # Rollouts: a new instance counts as up once it stayed up (healthy, with checks) this long;
    # a rollout that makes no progress for progress_deadline seconds fails.
    min_healthy_time: float = 10.0
    progress_deadline: float = 600.0
    # docker compose's container options (manifest/container.py)
    user: str | None = None
    working_dir: str | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # HOST:CONTAINER:PERMISSIONS
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, address)
    hostname: str | None = None
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()  # PATH or PATH:OPTIONS
    shm_size: int | None = None  # bytes
    sysctls: tuple[tuple[str, str], ...] = ()
    ulimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard)
    stop_signal: str | None = None
    init: bool = True
    accel: str | None = None  # a VM's accelerator: auto | kvm | tcg (None: the daemon's qemu_accel)
    boot_timeout: float | None = None  # a VM's seconds to readiness (None: 60 under TCG, 20 under KVM)
    machine: str | None = None  # a VM's QEMU machine: microvm | q35 (None: microvm, q35 for a firmware boot)
    disk: int | None = None  # a VM's root disk size, bytes (None: its image's)
    kernel: str | None = None  # a disk-image VM's kernel, initrd and command line (None: its bootloader)
    initrd: str | None = None
    cmdline: str | None = None
    network_mode: str | None = None  # None: the project's network; "host"
    # How a Swarm service is reached (mariposa/swarm/): "vip", one virtual address balanced by IPVS,
    # or "dnsrr", the service name resolving to every task (needs no IPVS). No effect locally.
    endpoint_mode: str = "vip"
    privileged: bool = False
    volumes: tuple[MountSpec, ...] = ()
    secrets: tuple[str, ...] = ()  # the project's secrets delivered as /run/secrets/NAME (mariposa/vault/)
    # When a version is made: pull the image when the host lacks it (missing), every time
    # (always), or never (a missing image refuses the version). See control/pulls.py.
    pull: str = "missing"
    networks: tuple[NetworkRef, ...] = ()  # joined besides the project's own network
    # Start order (converge/depends.py): (service, condition) pairs; supervision only (a change
    # never replaces instances), and it gates only a service's first instances.
    depends_on: tuple[tuple[str, str], ...] = ()
    # Not written by users: the content id the version resolved ``image`` to when it was made,
    # so a tag moved later never changes what this version runs.
    image_id: str | None = None
    # Meta (manifest/interpolate.py): the keys environment, command, entrypoint and tags use, and
    # (set from the version, never written) a digest of their values when the version was made, so
    # a meta change is a new spec of exactly the services it changes. ``on_meta_change: none``
    # leaves the digest out: new values reach instances made later (a reprovision) only.
    meta_keys: tuple[str, ...] = ()
    meta_digest: str | None = None
    on_meta_change: str = "rolling"
    secret_env: bool = False  # environment may name {{ .secret.NAME }} (visible to docker inspect)
    # Live metadata (mariposa/mdata/): (key, template) pairs written as files that running
    # instances read, re-rendered when the meta they use changes, and the signal that tells the
    # process. Neither replaces instances when it changes (only having mdata at all does: that is
    # a mount), see ``instance_fields``.
    mdata: tuple[tuple[str, str], ...] = ()
    mdata_signal: str | None = None
    # Scheduled and event services (manifest/scheduling.py, mariposa/runs/): each firing or
    # trigger is a run, one instance that runs to its end.
    schedule: tuple[str, ...] = ()
    time_zone: str = "UTC"
    concurrency: str = "forbid"  # allow | forbid | replace | queue
    catch_up: str = "latest"  # none | latest | all
    catch_up_limit: int = 10
    starting_deadline: float | None = None  # seconds
    timeout: float | None = None  # seconds
    retries: int = 0
    history_succeeded: int = 10
    history_failed: int = 10
    queue_limit: int = 100
    on_meta: tuple[str, ...] = ()  # event services: the meta keys whose change queues a run (runs/on_meta.py)
    triggers: tuple[TriggerSpec, ...] = ()  # public trigger URLs (mariposa/triggers/)
    metric_triggers: tuple[MetricTriggerSpec, ...] = ()  # `triggers` entries with a `metric` (autoscale)
    autoscale: AutoscaleSpec | None = None
    webhooks: tuple[WebhookSpec, ...] = ()  # the service's and the project's (mariposa/webhooks/)

    @property
    def runs(self) -> bool:
        """Whether the service runs to completion (scheduled, event) rather than stays up."""
        return self.service_type != "continuous"

    def instance_fields(self) -> dict:
        """Everything that shapes a new instance; a change here means replacing instances.
        Options left at their default are left out, so adding an option to Mariposa never
        changes the hash of (and so never replaces) instances that do not use it."""
        fields = attrs.asdict(
            self, recurse=True, filter=lambda a, v: a.name not in SUPERVISION_FIELDS and v != a.default
        )
        if "mdata" in fields:
            fields["mdata"] = True  # the values are live: only the mount is part of the instance
        return fields

    @property
    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy.parse(self.restart)

    @functools.cached_property
    def spec_hash(self) -> str:
        """Once per spec (it is frozen): the planner compares it with every instance's, and at
        10,000 instances recomputing it was 0.4 s of each reconcile pass on the event loop."""
        blob = json.dumps(self.instance_fields(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def has_pinned_host_ports(self) -> bool:
        return any(p.host is not None for p in self.ports)

    @property
    def has_exclusive_volumes(self) -> bool:
        """A VM's named volume is a disk, which one VM at a time attaches (QEMU locks it): its
        replacements go old-first, as with a pinned host port."""
        return self.compute_type == "kvm" and any(m.type == "volume" for m in self.volumes)


@attrs.frozen
class ProjectSpec:
    services: tuple[ServiceSpec, ...]
    # by name: ``service`` is asked once per service on every sync of every watcher (the health
    # monitor's, on each instance change), so a scan made 1,000 services quadratic
    _by_name: dict[str, ServiceSpec] = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        by_name: dict[str, ServiceSpec] = {}
        for svc in self.services:
            by_name.setdefault(svc.name, svc)
        object.__setattr__(self, "_by_name", by_name)

    def service(self, name: str) -> ServiceSpec | None:
        return self._by_name.get(name)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)


@attrs.frozen
class PublishedPort:
    container: int
    protocol: str
    host_ip: str
    host_port: int

    def __str__(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}->{self.container}/{self.protocol}"


class InstanceState(enum.StrEnum):
    """An instance's state in one vocabulary for every runtime; each driver maps its runtime's own
    states into it (``drivers/base.py``), so nothing above the drivers knows a runtime's strings.
    A ``StrEnum``, so JSON output shows the plain value."""

    CREATING = "creating"  # made, never started
    RUNNING = "running"
    PAUSED = "paused"  # frozen by the runtime: unreachable, counts as neither up nor down
    STOPPING = "stopping"
    EXITED = "exited"  # stopped, crashed or killed; ``exit_code`` says how when known
    REMOVING = "removing"
    UNKNOWN = "unknown"  # the runtime said something no mapping knows


@attrs.frozen
class Instance:
    """One compute instance as the runtime reports it."""

    id: str  # Mariposa's instance id (hex), stable across daemon restarts
    runtime_id: str  # the runtime's own id (Docker container id)
    name: str
    project_id: str
    service: str
    spec_hash: str
    version_id: str
    state: InstanceState = attrs.field(converter=InstanceState)
    created: float  # epoch seconds, sub-second precision
    image: str = ""
    exit_code: int | None = None
    address: str | None = None
    ports: tuple[PublishedPort, ...] = ()
    compute_type: str = attrs.field(kw_only=True)  # stamped by the driver that reports it
    project_name: str = ""
    # What the daemon remembers (store/instances.py), merged in before planning:
    retired: bool = False  # taken out of service; kept stopped only for inspection
    removing: bool = False  # its removal began (it may be stopped already) and is to be finished
    health: str | None = None  # starting | healthy | unhealthy; None without checks
    restarts: int = 0
    ready_at: float = 0.0  # when the restart policy's back-off allows the next start
    started_at: float = 0.0  # when Mariposa last started it (0: long ago, as far as we know)
    health_since: float = 0.0
    run_id: str | None = None  # a run's instance (scheduled and event services): the run's id

    @property
    def running(self) -> bool:
        return self.state == InstanceState.RUNNING

    @property
    def transitioning(self) -> bool:
        return self.state in (InstanceState.REMOVING, InstanceState.STOPPING, InstanceState.PAUSED)

    def to_json(self) -> dict:
        data = attrs.asdict(self, recurse=True)
        data["ports"] = [str(p) for p in self.ports]
        return data


@attrs.frozen
class CreateRequest:
    """What a driver needs to make one instance; labels are the driver's job to apply."""

    instance_id: str
    owner: str
    project_id: str
    project_name: str
    version_id: str
    spec: ServiceSpec  # with its templates rendered (converge/render.py)
    created: float  # epoch seconds by the daemon's clock: the caller reads it (labels carry it)
    # The host directory of the instance's secret files (vault/delivery.py), mounted read-only at
    # /run/secrets; the values themselves never pass through a driver.
    secrets_dir: str | None = None
    # The host directory of its live mdata files (mdata/files.py), mounted read-only at
    # /run/mariposa/mdata; None for a service without mdata.
    mdata_dir: str | None = None
    # The goal's spec hash, when ``spec`` is its rendered copy: an instance is compared with the
    # goal as written, so a rendered value never makes it look out of date.
    goal_hash: str | None = None
    # The run this instance is (scheduled and event services, mariposa/runs/): labelled, so the
    # reconciler knows it is the scheduler's, and a restarted daemon finds it again.
    run_id: str | None = None

    @property
    def name(self) -> str:
        return f"{self.project_name}-{self.spec.name}-{self.instance_id[:8]}"

    def labels(self) -> dict[str, str]:
        labels = {k: v for k, v in self.spec.tags}
        labels.update(
            {
                LABEL_OWNER: self.owner,
                LABEL_PROJECT: self.project_id,
                LABEL_PROJECT_NAME: self.project_name,
                LABEL_SERVICE: self.spec.name,
                LABEL_INSTANCE: self.instance_id,
                LABEL_SPEC_HASH: self.goal_hash or self.spec.spec_hash,
                LABEL_VERSION: self.version_id,
                LABEL_CREATED: f"{self.created:.6f}",
                LABEL_IMAGE: self.spec.image,
            }
        )
        if self.run_id:
            labels[LABEL_RUN] = self.run_id
        return labels


@attrs.frozen
class ServiceGoal:
    """What the reconciler wants for one service right now."""

    project_id: str
    project_name: str
    version_id: str
    spec: ServiceSpec
    scale: int
    desired: DesiredState = "running"
    keep_stale: bool = False  # after a canary: instances of older versions stay until reprovisioned
    # the replacement back-off: failed instances replaced in a row, and when the last one was
    replacements: int = 0
    last_replacement_at: float | None = None


@attrs.frozen
class Rollout:
    """What a converge task remembers from round to round, for the planner to judge a rollout
    by: the instances it made, and when a round last did something."""

    created: frozenset[str] = frozenset()
    last_progress: float = 0.0


# ---- plan steps -------------------------------------------------------------------------------


@attrs.frozen
class Create:
    service: str
    reason: str = ""


@attrs.frozen
class Start:
    instance: Instance
    reason: str = ""


@attrs.frozen
class Stop:
    instance: Instance
    reason: str = ""


@attrs.frozen
class Remove:
    """Take an instance out of service: stop it, then delete it, or keep it stopped (retired)
    when ``stop.preservestopped`` says so. ``failed`` instances count as failures for that
    rule; ``purge`` deletes whatever the rule says (service or project removed)."""

    instance: Instance
    reason: str = ""
    failed: bool = False
    purge: bool = False


@attrs.frozen
class Wait:
    """Nothing to do until ``until`` (a back-off); the task says why meanwhile."""

    until: float
    reason: str = ""


@attrs.frozen
class GiveUp:
    """The restart policy will not start this instance again: the service goes down."""

    instance: Instance
    reason: str = ""


@attrs.frozen
class FailRollout:
    """The rollout stops: its ``failed`` new instances are taken out, the old ones keep
    serving, the service is frozen with ``reason`` and the task fails."""

    reason: str
    failed: tuple[Instance, ...] = ()


@attrs.frozen
class NoteReplacement:
    """Another failed instance is being replaced: the service's replacement streak is now
    ``count`` long, as of ``at`` (the back-off of its next replacement counts from there)."""

    count: int
    at: float


Step = Create | Start | Stop | Remove | Wait | GiveUp | FailRollout | NoteReplacement


@attrs.frozen
class Plan:
    steps: tuple[Step, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.steps)

    def count(self, kind: type) -> int:
        return sum(1 for s in self.steps if isinstance(s, kind))

    def summary(self) -> str:
        parts = []
        for kind, word in ((Create, "create"), (Start, "start"), (Stop, "stop"), (Remove, "remove"),
                           (GiveUp, "give up on"), (FailRollout, "fail rollout")):
            n = self.count(kind)
            if n:
                parts.append(f"{word} {n}")
        waits = [s for s in self.steps if isinstance(s, Wait)]
        if waits:
            parts.append(f"wait: {waits[0].reason}")
        return ", ".join(parts) or "nothing to do"

    @property
    def only_waiting(self) -> bool:
        return bool(self.steps) and all(isinstance(s, Wait) for s in self.steps)

