"""What every target shares: the option table for options whose fate never depends on their
value, the export's context, and small helpers (secret references, tag labels).

An option whose fate depends on its value (``restart: no`` versus ``always``, a second health
check, a ``node.`` affinity rule versus one on services) is judged by its target's module, which
records its own entry; the table covers the rest, so a new option with no rule anywhere shows up
as ``NO_RULE`` in the report and fails the export tests rather than vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from mariposa.export.report import CHANGED, MAPPED, UNMAPPED, Report
from mariposa.model import ProjectSpec, ServiceSpec

TARGETS = ("compose", "swarm-stack", "nomad", "kubernetes")
ALL = "*"
COMPOSE_LIKE = ("compose", "swarm-stack")

SECRET_REF = re.compile(r"\{\{\s*\.secret\.([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*\}\}")
TEMPLATE = re.compile(r"\{\{.*?\}\}")

MARIPOSA_ONLY = "is the Mariposa daemon's own supervision; the target has no counterpart"
VM = "a virtual machine's option; the targets run containers"
LIVE_MDATA = "live metadata files are re-rendered by the Mariposa daemon on a meta change"

# option -> target (or ALL) -> (status, note)
_TABLE: dict[str, dict[str, tuple[str, str]]] = {
    "image": {ALL: (MAPPED, "")},
    "env_file": {ALL: (CHANGED, "its variables are written into the environment")},
    "entrypoint": {ALL: (MAPPED, "")},
    "command": {ALL: (MAPPED, "")},
    "dns": {ALL: (MAPPED, ""), "kubernetes": (CHANGED, "pod dnsConfig nameservers, added to the cluster's DNS")},
    "dns_search": {ALL: (MAPPED, ""), "kubernetes": (CHANGED, "pod dnsConfig searches, added to the cluster's")},
    "mdata": {ALL: (UNMAPPED, LIVE_MDATA),
              "kubernetes": (CHANGED, "a ConfigMap mounted at /run/mariposa/mdata, with the templates as written: "
                                      "not re-rendered on a meta change")},
    "mdata_signal": {ALL: (UNMAPPED, LIVE_MDATA)},
    "containerpilot": {ALL: (UNMAPPED, "not supported by Mariposa either")},
    "triggers": {ALL: (UNMAPPED, "public trigger URLs and metric triggers are the Mariposa daemon's")},
    "autoscale": {ALL: (UNMAPPED, "autoscaling on metric triggers " + MARIPOSA_ONLY)},
    "webhooks": {ALL: (UNMAPPED, "outgoing webhooks are sent by the Mariposa daemon")},
    "catch_up_limit": {ALL: (UNMAPPED, "the target's scheduler decides how many missed firings it runs")},
    "starting_deadline": {ALL: (UNMAPPED, "the target's scheduler has no start deadline"),
                          "kubernetes": (MAPPED, "startingDeadlineSeconds")},
    "timeout": {ALL: (UNMAPPED, "the target has no run timeout"),
                "kubernetes": (MAPPED, "activeDeadlineSeconds")},
    "retries": {ALL: (UNMAPPED, "runs are not retried by the target"),
                "nomad": (CHANGED, "the task group's restart attempts (in place, not a new run)"),
                "kubernetes": (MAPPED, "backoffLimit")},
    "history": {ALL: (UNMAPPED, "run history is the Mariposa daemon's"),
                "kubernetes": (MAPPED, "successfulJobsHistoryLimit / failedJobsHistoryLimit")},
    "queue_limit": {ALL: (UNMAPPED, "the target queues no runs")},
    "on": {ALL: (UNMAPPED, "runs on a meta change are started by the Mariposa daemon")},
    "scale": {ALL: (MAPPED, ""), "nomad": (MAPPED, "Count")},
    "min_healthy_time": {ALL: (UNMAPPED, "compose has no rollout"),
                         "swarm-stack": (MAPPED, "update_config.monitor"),
                         "nomad": (MAPPED, "Update.MinHealthyTime"),
                         "kubernetes": (MAPPED, "minReadySeconds")},
    "progress_deadline": {ALL: (UNMAPPED, "compose has no rollout"),
                          "swarm-stack": (UNMAPPED, "Swarm's update_config has no progress deadline"),
                          "nomad": (MAPPED, "Update.ProgressDeadline"),
                          "kubernetes": (MAPPED, "progressDeadlineSeconds")},
    "on_meta_change": {ALL: (UNMAPPED, "meta (and its rollouts) is the Mariposa daemon's")},
    "working_dir": {ALL: (MAPPED, "")},
    "user": {ALL: (MAPPED, "")},
    "network_mode": {ALL: (MAPPED, "")},
    "cap_add": {ALL: (MAPPED, "")},
    "cap_drop": {ALL: (MAPPED, "")},
    "devices": {ALL: (MAPPED, ""), "swarm-stack": (UNMAPPED, "Swarm services cannot map devices"),
                "kubernetes": (UNMAPPED, "a pod gets devices through a device plugin, not a path")},
    "extra_hosts": {ALL: (MAPPED, ""), "kubernetes": (MAPPED, "hostAliases")},
    "hostname": {ALL: (MAPPED, "")},
    "read_only": {ALL: (MAPPED, "")},
    "tmpfs": {ALL: (MAPPED, ""), "kubernetes": (CHANGED, "an emptyDir volume in memory, of no size limit")},
    "shm_size": {ALL: (MAPPED, ""), "swarm-stack": (UNMAPPED, "Swarm services have no shm_size"),
                 "kubernetes": (CHANGED, "an emptyDir in memory at /dev/shm, sized")},
    "sysctls": {ALL: (MAPPED, "")},
    "ulimits": {ALL: (MAPPED, ""), "swarm-stack": (UNMAPPED, "Docker 20.10's Swarm services have no ulimits"),
                "kubernetes": (UNMAPPED, "a pod has no ulimits")},
    "stop_signal": {ALL: (MAPPED, ""), "kubernetes": (UNMAPPED, "a pod is stopped with the image's STOPSIGNAL")},
    "init": {ALL: (MAPPED, ""), "kubernetes": (UNMAPPED, "a pod has no init option: use an image with one")},
    "privileged": {ALL: (MAPPED, ""), "swarm-stack": (UNMAPPED, "Swarm services cannot be privileged")},
    "networks": {ALL: (MAPPED, ""), "swarm-stack": (CHANGED, "attachable overlay networks"),
                 "nomad": (UNMAPPED, "a Nomad task group has one network (bridge or host)"),
                 "kubernetes": (UNMAPPED, "pods share one flat network; use NetworkPolicies to separate")},
    "depends_on": {ALL: (UNMAPPED, "the target starts services in no order"), "compose": (MAPPED, "")},
    "secret_env": {ALL: (MAPPED, "")},
    # how a Swarm service is reached (mariposa/swarm/)
    "endpoint_mode": {ALL: (UNMAPPED, "compose publishes each container; there is no service address to choose"),
                      "swarm-stack": (MAPPED, "deploy.endpoint_mode"),
                      "nomad": (UNMAPPED, "Nomad services are found through their provider, not a virtual IP"),
                      "kubernetes": (MAPPED, "vip: a ClusterIP Service; dnsrr: a headless Service (clusterIP None)")},
    "accel": {ALL: (UNMAPPED, VM)},
    "boot_timeout": {ALL: (UNMAPPED, VM)},
    "machine": {ALL: (UNMAPPED, VM)},
    "disk": {ALL: (UNMAPPED, VM)},
    "kernel": {ALL: (UNMAPPED, VM)},
    "initrd": {ALL: (UNMAPPED, VM)},
    "cmdline": {ALL: (UNMAPPED, VM)},
}

# Top-level sections
_TOP: dict[str, dict[str, tuple[str, str]]] = {
    "services": {ALL: (MAPPED, "")},
    "volumes": {ALL: (MAPPED, ""), "nomad": (CHANGED, "Docker volumes named in each task's mounts"),
                "kubernetes": (CHANGED, "PersistentVolumeClaims")},
    "networks": {ALL: (MAPPED, ""), "swarm-stack": (CHANGED, "attachable overlay networks"),
                 "nomad": (UNMAPPED, "a Nomad task group has one network (bridge or host)"),
                 "kubernetes": (UNMAPPED, "pods share one flat network")},
    "webhooks": {ALL: (UNMAPPED, "outgoing webhooks are sent by the Mariposa daemon")},
}


def table_rule(table: dict[str, dict[str, tuple[str, str]]], option: str, target: str) -> tuple[str, str] | None:
    rules = table.get(option)
    if rules is None:
        return None
    return rules.get(target) or rules.get(ALL)


def option_rule(option: str, target: str) -> tuple[str, str] | None:
    return table_rule(_TABLE, option, target)


@attrs.define
class Export:
    """One export in the making: the input, the report, and the secret values when allowed."""

    target: str
    project: str
    spec: ProjectSpec
    report: Report
    secret_values: Mapping[str, str] | None = None
    extra: list = attrs.field(factory=list)  # documents a service adds beside its own (a ConfigMap)

    def svc_path(self, svc: ServiceSpec, option: str | None = None) -> str:
        return f"services.{svc.name}" + (f".{option}" if option else "")

    def mapped(self, svc: ServiceSpec, option: str, note: str = "") -> None:
        self.report.mapped(self.svc_path(svc, option), note)

    def changed(self, svc: ServiceSpec, option: str, note: str) -> None:
        self.report.changed(self.svc_path(svc, option), note)

    def unmapped(self, svc: ServiceSpec, option: str, why: str) -> None:
        self.report.unmapped(self.svc_path(svc, option), why)

    def written(self, svc: ServiceSpec, option: str) -> bool:
        return self.svc_path(svc, option) in self.report.fields

    def fill_from_table(self) -> None:
        """Entries for every written field no target code judged: the table's, where it has one."""
        for path in self.report.fields:
            if self.report.has(path):
                continue
            parts = path.split(".")
            if parts[0] == "services" and len(parts) == 3:
                rule = option_rule(parts[2], self.target)
            elif parts[0] == "services" and len(parts) == 2:
                rule = (MAPPED, "")
            elif len(parts) >= 1:
                rule = table_rule(_TOP, parts[0], self.target)
            else:
                rule = None
            if rule is not None:
                status, note = rule
                self.report.add(path, status, note)


def note_templates(ex: Export) -> None:
    """Meta templates ({{ .meta.KEY }}) in command, entrypoint and tags are exported as written:
    no target renders Mariposa's meta. (Environment's are judged by each target, with secrets.)"""
    for svc in ex.spec.services:
        values = {"command": svc.command or (), "entrypoint": svc.entrypoint or (),
                  "tags": [v for _, v in svc.tags], "labels": [v for _, v in svc.tags]}
        for option, texts in values.items():
            if ex.written(svc, option) and any(TEMPLATE.search(t) for t in texts):
                ex.changed(svc, option, "templates are exported as written ({{ ... }}): the target does not render "
                                        "Mariposa's meta")


def secret_refs(svc: ServiceSpec) -> dict[str, str]:
    """Environment variables whose whole value is one secret (name -> secret name)."""
    out = {}
    for key, value in svc.environment:
        m = SECRET_REF.fullmatch(value.strip())
        if m:
            out[key] = m[1]
    return out


def secret_names(spec: ProjectSpec) -> list[str]:
    """Every secret the project's services use, as files or in their environment."""
    names: set[str] = set()
    for svc in spec.services:
        names.update(svc.secrets)
        names.update(m for _, v in svc.environment for m in SECRET_REF.findall(v))
    return sorted(names)


def memory_mib(svc: ServiceSpec) -> int | None:
    return None if svc.memory is None else max(1, svc.memory // (1024 * 1024))


def duration(seconds: float) -> str:
    """Compose's duration syntax (``1m30s``, ``2.5s``)."""
    whole = int(seconds)
    if whole == seconds and whole % 60 == 0 and whole:
        return f"{whole // 60}m"
    return f"{int(seconds) if whole == seconds else seconds}s"
