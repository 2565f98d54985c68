"""A Mariposa ``ServiceSpec`` as the Engine API's Swarm ``ServiceSpec`` (``POST /services/create``).

Pure: no I/O, so every field's fate is checked by unit tests (and a hypothesis property: each
field a service sets is mapped, left to Mariposa, or refused). Nothing is dropped silently: every
``ServiceSpec`` field is in exactly one of three tables below,

* ``MAPPED``: it becomes part of the Swarm spec (the JSON path it goes to);
* ``MARIPOSA``: the daemon does it itself, as locally (its own health probes, its rollouts'
  deadlines, version-time pulls, runs of scheduled services...), so the Swarm needs nothing;
* ``CHECKED``: it is mapped only for some values, and refused (a ``Problem``) for the others.

and a test pins that the three tables cover ``ServiceSpec`` exactly.

Choices that follow the Docker driver (drivers/docker.py): ``Init`` is on unless ``init: false``
(busybox httpd as PID 1 ignores SIGTERM, and each stop would wait the whole grace),
``StopGracePeriod`` is ``stop_timeout``, and containers carry no ``io.mariposa.owner`` label, so
the local Docker driver, which lists containers by that label, never takes a task's container
for one of its own instances (the service carries the labels).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from mariposa.model import (
    LABEL_IMAGE,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_PROJECT_NAME,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    ServiceSpec,
    volume_name,
)
from mariposa.swarm.placement import Placement, Problem

NS = 1_000_000_000
SECRETS_TARGET = "/run/secrets"  # as the Docker driver delivers them
MDATA_TARGET = "/run/mariposa/mdata"
# The digest of the mdata values a Swarm service's configs hold (``mdata_digest``): on the
# service and on each task's container, so a task's labels say which values it reads.
LABEL_MDATA = "io.mariposa.mdata"
SWARM_NAME_MAX = 64  # the Swarm's limit on a config's (and secret's) name

MAPPED = {
    "name": "Name, Labels, Networks[].Aliases",
    "image": "Labels",  # the image as written; Image is image_id, the version's pin
    "image_id": "TaskTemplate.ContainerSpec.Image",
    "memory": "TaskTemplate.Resources.Limits.MemoryBytes",
    "cpus": "TaskTemplate.Resources.Limits.NanoCPUs",
    "tags": "Labels, TaskTemplate.ContainerSpec.Labels",
    "affinity": "TaskTemplate.Placement (mariposa/swarm/placement.py)",
    "ports": "EndpointSpec.Ports",
    "endpoint_mode": "EndpointSpec.Mode",
    "dns": "TaskTemplate.ContainerSpec.DNSConfig.Nameservers",
    "dns_search": "TaskTemplate.ContainerSpec.DNSConfig.Search",
    "environment": "TaskTemplate.ContainerSpec.Env",
    "command": "TaskTemplate.ContainerSpec.Args",
    "restart": "TaskTemplate.RestartPolicy",
    "stop_timeout": "TaskTemplate.ContainerSpec.StopGracePeriod",
    "scale": "Mode.Replicated.Replicas",
    "min_healthy_time": "UpdateConfig.Monitor, RollbackConfig.Monitor",
    "user": "TaskTemplate.ContainerSpec.User",
    "working_dir": "TaskTemplate.ContainerSpec.Dir",
    "cap_add": "TaskTemplate.ContainerSpec.CapabilityAdd",
    "cap_drop": "TaskTemplate.ContainerSpec.CapabilityDrop",
    "extra_hosts": "TaskTemplate.ContainerSpec.Hosts",
    "hostname": "TaskTemplate.ContainerSpec.Hostname",
    "read_only": "TaskTemplate.ContainerSpec.ReadOnly",
    "shm_size": "TaskTemplate.ContainerSpec.Mounts (a tmpfs on /dev/shm: Swarm has no ShmSize)",
    "sysctls": "TaskTemplate.ContainerSpec.Sysctls",
    "ulimits": "TaskTemplate.ContainerSpec.Ulimits",
    "stop_signal": "TaskTemplate.ContainerSpec.StopSignal",
    "init": "TaskTemplate.ContainerSpec.Init",
    "volumes": "TaskTemplate.ContainerSpec.Mounts",
    "secrets": "TaskTemplate.ContainerSpec.Secrets",
    "networks": "TaskTemplate.Networks",
    "mdata": "TaskTemplate.ContainerSpec.Configs",
    "meta_digest": "Labels (through the spec hash)",
}
MARIPOSA = {
    "package": "sizes: memory and cpus carry them",
    "healthchecks": "Mariposa's own probes, to the tasks' addresses",
    "preserve_stopped": "Mariposa's; Swarm keeps its own task history (TaskHistoryRetentionLimit)",
    "progress_deadline": "Mariposa's rollout deadline",
    "pull": "when the version is made; tasks run the pinned image",
    "depends_on": "Mariposa gates a service's first instances",
    "meta_keys": "the version's, read when it is made",
    "on_meta_change": "Mariposa's rollouts",
    "secret_env": "templates rendered by Mariposa into Env",
    "triggers": "Mariposa's trigger URLs",
    "metric_triggers": "Mariposa's autoscaler",
    "autoscale": "Mariposa's autoscaler",
    "webhooks": "Mariposa's webhooks",
    # scheduled and event services are refused at service_type; their options are the scheduler's
    "schedule": "runs", "time_zone": "runs", "concurrency": "runs", "catch_up": "runs", "catch_up_limit": "runs",
    "starting_deadline": "runs", "timeout": "runs", "retries": "runs", "history_succeeded": "runs",
    "history_failed": "runs", "queue_limit": "runs", "on_meta": "runs",
}
CHECKED = {
    "service_type": "continuous only: runs of scheduled and event services are Mariposa's scheduler's",
    "compute_type": "docker only: LXC and VM services stay on the local host",
    "entrypoint": "TaskTemplate.ContainerSpec.Command; an empty entrypoint without a command is refused",
    "tmpfs": "TaskTemplate.ContainerSpec.Mounts; only the size= and mode= options",
    "mdata_signal": "refused: a new value is a new Swarm config and a rolling update (configs are immutable), "
                    "so there is nothing to signal in place",
    "devices": "refused: a Swarm service cannot be given host devices",
    "privileged": "refused: a Swarm service cannot be privileged",
    "network_mode": "refused: host networking is a node's, not a service's",
    "accel": "VM only", "boot_timeout": "VM only", "machine": "VM only", "disk": "VM only", "kernel": "VM only",
    "initrd": "VM only", "cmdline": "VM only",
}
_RESTART = {"no": "none", "on-failure": "on-failure", "always": "any", "unless-stopped": "any"}


@attrs.frozen
class SwarmService:
    """The spec to send, what refused it (empty: it can be sent) and what to tell the user."""

    body: dict[str, Any]
    problems: tuple[Problem, ...] = ()
    messages: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def service_name(project_name: str, project_id: str, service: str) -> str:
    """The Swarm service's name: readable, one owner's projects apart by id (labels say whose)."""
    return f"mariposa-{project_name}-{service}-{project_id[:8]}"


def overlay_name(project_name: str, project_id: str) -> str:
    """The project's attachable overlay network, the Swarm's twin of its bridge."""
    return f"mariposa-{project_name}-{project_id[:8]}-overlay"


def mdata_digest(values: Mapping[str, str]) -> str:
    """One digest of all of a service's rendered mdata files: the service's label, compared with
    the values of now to know whether a meta change needs new configs and a rolling update."""
    if not values:
        return ""
    return hashlib.sha256(json.dumps(sorted(values.items())).encode()).hexdigest()[:16]


def config_name(project_name: str, project_id: str, key: str, value: str) -> str:
    """The Swarm config for one mdata file: named by its content's digest, since a Swarm config
    is immutable (a new value is a new config). At most the Swarm's 64 characters: the readable
    part is cut, never the digest."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    readable = f"mariposa-{project_name}-{project_id[:8]}-mdata-{key}"[:SWARM_NAME_MAX - 13].rstrip("-_.")
    return f"{readable}-{digest}"


def stale_configs(configs: Sequence[Mapping[str, Any]], services: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of a project's ``configs`` that none of its Swarm ``services`` names, in its spec or
    its previous one (kept for a rollback): what a finished rolling update leaves to remove."""
    used: set[str] = set()
    for s in services:
        for spec in (s.get("Spec"), s.get("PreviousSpec")):
            container = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
            used.update(ref.get("ConfigID") for ref in container.get("Configs") or ())
    return [c["ID"] for c in configs if c["ID"] not in used]


def labels(owner: str, project_id: str, project_name: str, version_id: str, spec: ServiceSpec) -> dict[str, str]:
    out = dict(spec.tags)
    out.update({LABEL_OWNER: owner, LABEL_PROJECT: project_id, LABEL_PROJECT_NAME: project_name,
                LABEL_SERVICE: spec.name, LABEL_VERSION: version_id, LABEL_SPEC_HASH: spec.spec_hash,
                LABEL_IMAGE: spec.image})
    return out


def swarm_service(
    owner: str, project_id: str, project_name: str, version_id: str, spec: ServiceSpec, scale: int,
    rolling: int = 1, placement: Placement | None = None, *, name: str | None = None,
    secrets: Mapping[str, tuple[str, str]] | None = None, configs: Mapping[str, tuple[str, str]] | None = None,
    mdata: str = "",
) -> SwarmService:
    """The Swarm service for ``spec`` at ``scale`` replicas, rolled ``rolling`` tasks at a time.

    ``placement`` is ``placement.place``'s answer for the spec's affinity (None: no rules);
    ``secrets`` / ``configs`` map a secret name / mdata key to the Swarm object made for it,
    (id, name): a missing one is a problem, as is anything Swarm cannot express. ``mdata``: the
    ``mdata_digest`` of the values those configs hold (a label of the service and its tasks)."""
    problems: list[Problem] = []
    messages: list[str] = []

    def refuse(field: str, reason: str) -> None:
        problems.append(Problem(field, reason))

    if spec.service_type != "continuous":
        refuse("service_type", f"{spec.service_type} services run on this host: {CHECKED['service_type']}")
    if spec.compute_type != "docker":
        refuse("compute_type", f"compute_type {spec.compute_type}: {CHECKED['compute_type']}")
    if spec.devices:
        refuse("devices", "a Swarm service cannot be given host devices")
    if spec.mdata_signal:
        refuse("mdata_signal", "a changed mdata file reaches Swarm tasks by a rolling update (a new config), "
                               "never in place with a signal")
    if spec.privileged:
        refuse("privileged", "a Swarm service cannot run privileged")
    if spec.network_mode == "host":
        refuse("network_mode", "network_mode: host is not a Swarm service's: Swarm attaches tasks to overlay "
                               "networks")
    for vm_field in ("accel", "boot_timeout", "machine", "disk", "kernel", "initrd", "cmdline"):
        if getattr(spec, vm_field) is not None:
            refuse(vm_field, "a VM option: VM services stay on the local host")

    service_labels = labels(owner, project_id, project_name, version_id, spec)
    if mdata:
        service_labels[LABEL_MDATA] = mdata
    container: dict[str, Any] = {
        "Image": spec.image_id or spec.image,
        # no owner label: see the module docstring
        # the spec hash too: a task's own labels say which version it runs (a canary and its
        # service's older tasks side by side), with no lookup of the service
        "Labels": {**dict(spec.tags), LABEL_PROJECT: project_id, LABEL_SERVICE: spec.name,
                   LABEL_VERSION: version_id, LABEL_SPEC_HASH: spec.spec_hash,
                   **({LABEL_MDATA: mdata} if mdata else {})},
        "Env": [f"{k}={v}" for k, v in spec.environment],
        "Init": spec.init,
    }
    if spec.entrypoint is not None:
        if spec.entrypoint:
            container["Command"] = list(spec.entrypoint)
        elif spec.command:
            container["Command"] = list(spec.command)  # no entrypoint: the command is the program
        else:
            refuse("entrypoint", "an empty entrypoint (drop the image's) needs a command on Swarm: its spec has no "
                                 "way to drop the image's entrypoint and keep the image's command")
    if spec.command is not None and not (spec.entrypoint == () and spec.command):
        container["Args"] = list(spec.command)
    for key, value in (("User", spec.user), ("Dir", spec.working_dir), ("Hostname", spec.hostname),
                       ("StopSignal", spec.stop_signal)):
        if value is not None:
            container[key] = value
    if spec.stop_timeout is not None:
        container["StopGracePeriod"] = int(spec.stop_timeout) * NS
    if spec.read_only:
        container["ReadOnly"] = True
    if spec.cap_add:
        container["CapabilityAdd"] = [c if c == "ALL" else f"CAP_{c}" for c in spec.cap_add]
    if spec.cap_drop:
        container["CapabilityDrop"] = [c if c == "ALL" else f"CAP_{c}" for c in spec.cap_drop]
    if spec.sysctls:
        container["Sysctls"] = dict(spec.sysctls)
    if spec.ulimits:
        container["Ulimits"] = [{"Name": n, "Soft": soft, "Hard": hard} for n, soft, hard in spec.ulimits]
    if spec.extra_hosts:
        container["Hosts"] = [f"{address} {host}" for host, address in spec.extra_hosts]
    if spec.dns or spec.dns_search:
        container["DNSConfig"] = {k: list(v) for k, v in (("Nameservers", spec.dns), ("Search", spec.dns_search))
                                  if v}
    mounts = [_mount(m, project_name) for m in spec.volumes]
    for entry in spec.tmpfs:
        mount = _tmpfs(entry)
        if isinstance(mount, str):
            refuse("tmpfs", mount)
        else:
            mounts.append(mount)
    if spec.shm_size:
        mounts.append({"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": int(spec.shm_size)}})
        messages.append("shm_size: a tmpfs mounted on /dev/shm (Swarm services have no ShmSize)")
    if mounts:
        container["Mounts"] = mounts
    refs = []
    for secret in spec.secrets:
        made = (secrets or {}).get(secret)
        if made is None:
            refuse("secrets", f"secret {secret!r} has no Swarm secret yet: make it before the service")
            continue
        refs.append({"SecretID": made[0], "SecretName": made[1],
                     "File": {"Name": secret, "UID": "0", "GID": "0", "Mode": 0o444}})
    if refs:
        container["Secrets"] = refs
    config_refs = []
    for key, _template in spec.mdata:
        made = (configs or {}).get(key)
        if made is None:
            refuse("mdata", f"mdata key {key!r} has no Swarm config yet: make it before the service")
            continue
        config_refs.append({"ConfigID": made[0], "ConfigName": made[1],
                            "File": {"Name": f"{MDATA_TARGET}/{key}", "UID": "0", "GID": "0", "Mode": 0o444}})
    if config_refs:
        container["Configs"] = config_refs

    template: dict[str, Any] = {"ContainerSpec": container, "RestartPolicy": _restart(spec.restart)}
    limits: dict[str, int] = {}
    if spec.memory:
        limits["MemoryBytes"] = int(spec.memory)
    if spec.cpus:
        limits["NanoCPUs"] = int(spec.cpus * NS)
    if limits:
        template["Resources"] = {"Limits": limits}
    if placement is None:
        if spec.affinity:
            refuse("affinity", "not evaluated against the Swarm's nodes (placement.place): refused rather than "
                               "dropped")
        placement = Placement()
    problems += placement.problems
    messages += placement.messages
    if placement.swarm():
        template["Placement"] = placement.swarm()
    template["Networks"] = [{"Target": overlay_name(project_name, project_id), "Aliases": [spec.name]}]
    template["Networks"] += [{"Target": ref.runtime(project_name)} for ref in spec.networks]

    order = placement.order
    if order == "start-first" and spec.has_pinned_host_ports:
        order = "stop-first"  # the old task holds the node's port until it stops
        messages.append("a fixed host port: each task stops before its replacement starts on that node")
    update = {"Parallelism": max(1, rolling), "Delay": 0, "FailureAction": "pause",
              "Monitor": int(spec.min_healthy_time * NS), "MaxFailureRatio": 0, "Order": order}
    ports = []
    for p in spec.ports:
        host_mode = p.host is not None or spec.endpoint_mode == "dnsrr"
        port: dict[str, Any] = {"Protocol": p.protocol, "TargetPort": p.container,
                                "PublishMode": "host" if host_mode else "ingress"}
        if p.host is not None:
            port["PublishedPort"] = p.host
        ports.append(port)
    if spec.endpoint_mode == "dnsrr" and any(p.host is None for p in spec.ports):
        messages.append("endpoint_mode dnsrr: ports are published in host mode, on the node of each task "
                        "(Swarm's ingress needs a VIP)")
    body: dict[str, Any] = {
        "Name": name or service_name(project_name, project_id, spec.name),
        "Labels": service_labels,
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": scale}},
        "UpdateConfig": update,
        "RollbackConfig": dict(update),
        "EndpointSpec": {"Mode": spec.endpoint_mode, **({"Ports": ports} if ports else {})},
    }
    return SwarmService(body, tuple(problems), tuple(messages))


def _restart(restart: str) -> dict[str, Any]:
    name, _, count = restart.partition(":")
    policy: dict[str, Any] = {"Condition": _RESTART.get(name, "any")}
    if count:
        policy["MaxAttempts"] = int(count)
    return policy


def _mount(m, project_name: str) -> dict[str, Any]:
    if m.type == "tmpfs":
        return {"Type": "tmpfs", "Target": m.target, "ReadOnly": m.read_only,
                **({"TmpfsOptions": {"SizeBytes": m.size}} if m.size else {})}
    out: dict[str, Any] = {"Type": m.type, "Target": m.target, "ReadOnly": m.read_only,
                           "Source": volume_name(project_name, m.source) if m.type == "volume" else m.source}
    if m.type == "volume" and m.labels:
        out["VolumeOptions"] = {"Labels": dict(m.labels)}
    return out


def _tmpfs(entry: str) -> dict[str, Any] | str:
    """``PATH[:OPTIONS]`` as a tmpfs mount, or why not: Swarm's TmpfsOptions has a size and a mode."""
    path, _, options = entry.partition(":")
    tmpfs: dict[str, Any] = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size" and value:
            from mariposa.manifest.units import parse_size

            try:
                tmpfs["SizeBytes"] = parse_size(value)
            except ValueError:
                return f"tmpfs {entry}: size {value!r} is not a size"
        elif key == "mode" and value:
            try:
                tmpfs["Mode"] = int(value, 8)
            except ValueError:
                return f"tmpfs {entry}: mode {value!r} is not an octal mode"
        else:
            return f"tmpfs {entry}: option {option!r} has no Swarm equivalent (size= and mode= do)"
    return {"Type": "tmpfs", "Target": path, **({"TmpfsOptions": tmpfs} if tmpfs else {})}
