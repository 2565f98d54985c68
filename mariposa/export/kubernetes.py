"""The kubernetes target: one multi-document YAML of Deployments, Services, CronJobs, Jobs,
Secrets, ConfigMaps and PersistentVolumeClaims.

A continuous service is a Deployment (its published ports a Service of the same name, so the
service name resolves as on Mariposa's project network); a scheduled service a CronJob per
schedule; an event service a suspended Job (unsuspend it, or copy it, to run once). A named
volume is a PersistentVolumeClaim. Secrets are Secret objects without data, referenced by
``secretKeyRef`` and volumes: ``kubectl create secret`` fills them; only a caller allowed
``secret:reveal`` gets them with ``stringData``. Affinity rules on nodes become node affinity;
rules on services' instances become pod (anti-)affinity on the ``mariposa/service`` label, which
Kubernetes can express and Swarm cannot.
"""

from __future__ import annotations

import re
from typing import Any

from mariposa.export import affinity as aff
from mariposa.export.common import Export, secret_names, secret_refs
from mariposa.model import ServiceSpec

SERVICE_LABEL = "mariposa/service"
PROJECT_LABEL = "mariposa/project"
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
HOSTNAME = "kubernetes.io/hostname"


def dns_name(text: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out[:63].strip("-") or "x"


def build(ex: Export) -> dict[str, str]:
    from mariposa.export.render import yaml_documents

    docs: list[dict] = []
    for name in secret_names(ex.spec):
        secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret",
                                  "metadata": {"name": _secret_name(name), "labels": _labels(ex)},
                                  "type": "Opaque"}
        if ex.secret_values is not None and name in ex.secret_values:
            secret["stringData"] = {"value": ex.secret_values[name]}
        else:
            secret["metadata"]["annotations"] = {
                "mariposa/secret": f"{name}: fill with kubectl create secret generic {_secret_name(name)} "
                                   "--from-literal=value=..."}
        docs.append(secret)
    claims: set[str] = set()
    for svc in ex.spec.services:
        for m in svc.volumes:
            if m.type == "volume" and m.source and m.source not in claims:
                claims.add(m.source)
                docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "metadata": {"name": dns_name(m.source), "labels": _labels(ex)},
                             "spec": {"accessModes": ["ReadWriteOnce"],
                                      "resources": {"requests": {"storage": "1Gi"}}}})
    for svc in ex.spec.services:
        docs.extend(_service(ex, svc))
    docs.extend(ex.extra)
    return {f"{ex.project}.k8s.yaml": yaml_documents(docs)}


def _secret_name(name: str) -> str:
    return dns_name(f"secret-{name}")


def _labels(ex: Export, svc: ServiceSpec | None = None) -> dict[str, str]:
    out = {PROJECT_LABEL: dns_name(ex.project)}
    if svc is not None:
        out[SERVICE_LABEL] = svc.name
    return out


def _service(ex: Export, svc: ServiceSpec) -> list[dict]:
    docs: list[dict] = []
    pod, container = _pod(ex, svc)
    labels = _labels(ex, svc)
    meta = {"labels": dict(labels)}
    tags = [(k, v) for k, v in svc.tags]
    good = {k: v for k, v in tags if LABEL_KEY.fullmatch(k) and LABEL_VALUE.fullmatch(v) and len(v) <= 63}
    other = {k: v for k, v in tags if k not in good}
    pod_meta: dict[str, Any] = {"labels": {**good, **labels}}
    if other:
        pod_meta["annotations"] = other
    for option in ("tags", "labels"):
        if other:
            ex.changed(svc, option, "pod labels; tags that are not valid label keys or values became annotations: "
                       + ", ".join(other))
        else:
            ex.mapped(svc, option, "pod labels")
    template = {"metadata": pod_meta, "spec": pod}
    if svc.service_type == "continuous":
        ex.mapped(svc, "service_type", "a Deployment")
        spec: dict[str, Any] = {"replicas": svc.scale if svc.scale is not None else 1,
                                "selector": {"matchLabels": labels}, "template": template,
                                "minReadySeconds": int(svc.min_healthy_time),
                                "progressDeadlineSeconds": max(int(svc.progress_deadline),
                                                               int(svc.min_healthy_time) + 1),
                                "strategy": {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}
        if any(r.kind == aff.OWN and r.hard and r.negated for r in aff.rules_of(svc, ex.project, ex.spec.services)):
            # k8s#116891: a surge pod has nowhere to go under one-per-node, and the rollout deadlocks
            spec["strategy"]["rollingUpdate"] = {"maxUnavailable": 1, "maxSurge": 0}
        pod["restartPolicy"] = "Always"
        _restart_note(ex, svc)
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": svc.name, **meta}, "spec": spec})
        if svc.ports:
            docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc.name, **meta},
                         "spec": {"selector": labels,
                                  **({"clusterIP": "None"} if svc.endpoint_mode == "dnsrr" else {}),
                                  "ports": [
                             {"name": f"{p.protocol}-{p.container}", "port": p.container, "targetPort": p.container,
                              "protocol": p.protocol.upper()} for p in svc.ports]}})
    else:
        pod["restartPolicy"] = "Never"
        if ex.written(svc, "restart"):
            ex.changed(svc, "restart", "a run's pod is not restarted (restartPolicy Never); 'retries' is backoffLimit")
        job = {"backoffLimit": svc.retries, "template": template}
        if svc.timeout:
            job["activeDeadlineSeconds"] = int(svc.timeout)
        if svc.service_type == "event":
            job["suspend"] = True
            ex.changed(svc, "service_type", "a suspended Job: unsuspend it (or a copy) to run once")
            docs.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": svc.name, **meta},
                         "spec": job})
        else:
            ex.mapped(svc, "service_type", "a CronJob")
            docs.extend(_cronjobs(ex, svc, job, meta))
    return docs


def _cronjobs(ex: Export, svc: ServiceSpec, job: dict, meta: dict) -> list[dict]:
    policy = {"allow": "Allow", "forbid": "Forbid", "replace": "Replace", "queue": "Forbid"}[svc.concurrency]
    if svc.concurrency == "queue":
        ex.changed(svc, "concurrency", "concurrencyPolicy Forbid: a firing during a run is skipped, not queued")
    else:
        ex.mapped(svc, "concurrency", f"concurrencyPolicy {policy}")
    ex.mapped(svc, "time_zone", "timeZone")
    if svc.catch_up == "latest":
        ex.mapped(svc, "catch_up", "a CronJob runs the latest missed firing (within startingDeadlineSeconds)")
    else:
        ex.changed(svc, "catch_up", f"catch_up {svc.catch_up}: a CronJob runs only the latest missed firing")
    specs = list(svc.schedule)
    if len(specs) > 1:
        ex.changed(svc, "schedule", f"one CronJob per schedule ({len(specs)}): concurrency holds within each only")
    else:
        ex.mapped(svc, "schedule")
    out = []
    for i, cron in enumerate(specs or [""]):
        spec: dict[str, Any] = {"schedule": cron, "timeZone": svc.time_zone, "concurrencyPolicy": policy,
                                "successfulJobsHistoryLimit": svc.history_succeeded,
                                "failedJobsHistoryLimit": svc.history_failed,
                                "jobTemplate": {"spec": job}}
        if svc.starting_deadline:
            spec["startingDeadlineSeconds"] = int(svc.starting_deadline)
        name = svc.name if len(specs) <= 1 else dns_name(f"{svc.name}-{i}")
        out.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, **meta}, "spec": spec})
    return out


def _restart_note(ex: Export, svc: ServiceSpec) -> None:
    if not ex.written(svc, "restart"):
        return
    if svc.restart_policy.name in ("always", "unless-stopped"):
        ex.mapped(svc, "restart", "restartPolicy Always")
    else:
        ex.changed(svc, "restart", f"{svc.restart}: a Deployment's pods always restart (restartPolicy Always), "
                                   "with back-off")


def _probe(c: Any) -> dict[str, Any]:
    probe: dict[str, Any] = {"periodSeconds": max(1, int(c.poll)), "timeoutSeconds": max(1, int(c.timeout)),
                             "failureThreshold": c.failures_to_unhealthy}
    if c.grace:
        probe["initialDelaySeconds"] = int(c.grace)
    if c.type in ("http", "https"):
        probe["httpGet"] = {"path": c.path, "port": c.target_port, "scheme": c.type.upper()}
    elif c.type == "tcp":
        probe["tcpSocket"] = {"port": c.target_port}
    else:
        probe["exec"] = {"command": list(c.command or ())}
    return probe


def _pod(ex: Export, svc: ServiceSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    c: dict[str, Any] = {"name": svc.name, "image": svc.image,
                         "imagePullPolicy": {"missing": "IfNotPresent", "always": "Always", "never": "Never"}[svc.pull]}
    ex.mapped(svc, "pull", "imagePullPolicy")
    if svc.compute_type != "docker":
        ex.unmapped(svc, "compute_type", f"compute_type {svc.compute_type}: exported as a container")
    else:
        ex.mapped(svc, "compute_type")
    pod: dict[str, Any] = {"containers": [c]}
    volumes: list[dict] = []
    mounts: list[dict] = []
    # Kubernetes expands $(VAR) in command and args: a literal one is $$(VAR)
    if svc.entrypoint is not None:
        c["command"] = [a.replace("$(", "$$(") for a in svc.entrypoint]
    if svc.command is not None:
        c["args"] = [a.replace("$(", "$$(") for a in svc.command]
    env: list[dict] = []
    refs = secret_refs(svc)
    for key, value in svc.environment:
        if key in refs:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": _secret_name(refs[key]), "key": "value"}}})
        else:
            env.append({"name": key, "value": value.replace("$(", "$$(")})
    if env:
        c["env"] = env
    if svc.environment:
        if any("{{" in v for k, v in svc.environment if k not in refs):
            ex.changed(svc, "environment", "templates are exported as written: Kubernetes does not render "
                                           "Mariposa's meta")
        else:
            ex.mapped(svc, "environment", "env (secrets by secretKeyRef)" if refs else "env")
    if svc.ports:
        c["ports"] = [{"containerPort": p.container, "protocol": p.protocol.upper(),
                       **({"hostPort": p.host} if p.host else {})} for p in svc.ports]
        if svc.service_type == "continuous":
            ex.changed(svc, "ports", "containerPorts and a Service of the service's name; a pinned host port is a "
                                     "hostPort; unpinned ports are reached through the Service, not an ephemeral "
                                     "host port per instance")
        else:
            ex.mapped(svc, "ports", "containerPorts")
    if svc.healthchecks:
        first = svc.healthchecks[0]
        c["readinessProbe"] = _probe(first)
        c["livenessProbe"] = _probe(first)
        if len(svc.healthchecks) > 1:
            ex.unmapped(svc, "healthchecks", "a container has one readiness and one liveness probe: only "
                        f"{first.label} is exported, not " + ", ".join(h.label for h in svc.healthchecks[1:]))
        else:
            ex.mapped(svc, "healthchecks", "readinessProbe and livenessProbe")
    limits: dict[str, str] = {}
    if svc.memory:
        limits["memory"] = f"{svc.memory // (1024 * 1024)}Mi"
    if svc.cpus:
        limits["cpu"] = f"{int(svc.cpus * 1000)}m"
    if limits:
        c["resources"] = {"limits": limits, "requests": dict(limits)}
        if svc.package:
            ex.changed(svc, "package", f"package {svc.package} became limits and requests: "
                                       + ", ".join(f"{k} {v}" for k, v in limits.items()))
        ex.mapped(svc, "memory", "resources.limits.memory")
    security: dict[str, Any] = {}
    if svc.user:
        uid, _, gid = svc.user.partition(":")
        if uid.isdigit() and (not gid or gid.isdigit()):
            security["runAsUser"] = int(uid)
            if gid:
                security["runAsGroup"] = int(gid)
            ex.mapped(svc, "user", "securityContext.runAsUser")
        else:
            ex.unmapped(svc, "user", f"user {svc.user!r}: Kubernetes takes numeric ids only")
    if svc.cap_add or svc.cap_drop:
        security["capabilities"] = {k: [x.removeprefix("CAP_") for x in v] for k, v in
                                    (("add", svc.cap_add), ("drop", svc.cap_drop)) if v}
    if svc.read_only:
        security["readOnlyRootFilesystem"] = True
    if svc.privileged:
        security["privileged"] = True
    if security:
        c["securityContext"] = security
    if svc.working_dir:
        c["workingDir"] = svc.working_dir
    if svc.hostname:
        pod["hostname"] = svc.hostname
    if svc.dns or svc.dns_search:
        pod["dnsConfig"] = {k: v for k, v in (("nameservers", list(svc.dns)), ("searches", list(svc.dns_search))) if v}
    if svc.extra_hosts:
        by_ip: dict[str, list[str]] = {}
        for name, ip in svc.extra_hosts:
            by_ip.setdefault(ip, []).append(name)
        pod["hostAliases"] = [{"ip": ip, "hostnames": names} for ip, names in by_ip.items()]
    if svc.sysctls:
        pod["securityContext"] = {"sysctls": [{"name": k, "value": v} for k, v in svc.sysctls]}
    if svc.network_mode == "host":
        pod["hostNetwork"] = True
        ex.changed(svc, "network_mode", "hostNetwork: true")
    elif svc.network_mode is not None:
        ex.unmapped(svc, "network_mode", f"network_mode {svc.network_mode}: pods join the cluster network")
    if svc.stop_timeout is not None:
        pod["terminationGracePeriodSeconds"] = int(svc.stop_timeout)
    if ex.written(svc, "stop"):
        if svc.preserve_stopped != "on-failure":
            ex.changed(svc, "stop", "terminationGracePeriodSeconds; preservestopped has no counterpart")
        else:
            ex.mapped(svc, "stop", "terminationGracePeriodSeconds")
    notes = []
    for i, m in enumerate(svc.volumes):
        name = f"v{i}"
        if m.type == "volume":
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": dns_name(m.source or name)}})
        elif m.type == "bind":
            volumes.append({"name": name, "hostPath": {"path": m.source}})
            notes.append(f"bind {m.source}: a hostPath volume on whichever node runs the pod")
        else:
            volumes.append({"name": name, "emptyDir": {"medium": "Memory",
                                                       **({"sizeLimit": str(m.size)} if m.size else {})}})
        mounts.append({"name": name, "mountPath": m.target, "readOnly": m.read_only})
    if svc.volumes:
        (ex.changed if notes else ex.mapped)(svc, "volumes", "; ".join(notes) or "PersistentVolumeClaims")
    for i, path in enumerate(svc.tmpfs):
        volumes.append({"name": f"tmpfs{i}", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": f"tmpfs{i}", "mountPath": path.split(":", 1)[0]})
    if svc.shm_size:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(svc.shm_size)}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    if svc.mdata:
        cm = dns_name(f"{ex.project}-{svc.name}-mdata")
        volumes.append({"name": "mdata", "configMap": {"name": cm}})
        mounts.append({"name": "mdata", "mountPath": "/run/mariposa/mdata", "readOnly": True})
        ex.extra.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "labels": _labels(ex, svc)},
                         "data": dict(svc.mdata)})
    for name in svc.secrets:
        vol = dns_name(f"secret-{name}")
        volumes.append({"name": vol, "secret": {"secretName": _secret_name(name),
                                                "items": [{"key": "value", "path": name}]}})
        mounts.append({"name": vol, "mountPath": f"/run/secrets/{name}", "subPath": name, "readOnly": True})
    if svc.secrets:
        ex.mapped(svc, "secrets", "Secret volumes at /run/secrets" +
                  ("" if ex.secret_values is not None else ": the Secrets are written without data"))
    if volumes:
        pod["volumes"] = volumes
        c["volumeMounts"] = mounts
    affinity = _affinity(ex, svc)
    if affinity:
        pod["affinity"] = affinity
    return pod, c


def _affinity(ex: Export, svc: ServiceSpec) -> dict[str, Any]:
    if not svc.affinity:
        return {}
    required: list[dict] = []
    preferred: list[dict] = []
    pod_rules: dict[str, dict[str, list]] = {}
    notes, lost = [], False
    for rule in aff.rules_of(svc, ex.project, ex.spec.services):
        if rule.kind == aff.NODE:
            key = HOSTNAME if rule.key == "node.hostname" else (
                rule.key.removeprefix("node.labels.") if rule.key.startswith("node.labels.") else None)
            if key is None or not rule.plain_value:
                notes.append(f"{rule.text}: no node label to match" if key is None
                             else f"{rule.text}: a node selector matches exact values only")
                lost = True
                continue
            expr = {"key": key, "operator": "NotIn" if rule.negated else "In", "values": [rule.value]}
            if rule.hard:
                required.append(expr)
                notes.append(f"{rule.text}: required node affinity")
            else:
                preferred.append({"weight": 50, "preference": {"matchExpressions": [expr]}})
                notes.append(f"{rule.text}: preferred node affinity")
            continue
        if rule.kind == aff.OWN:
            selector = {SERVICE_LABEL: svc.name}
        elif rule.key == "service" and rule.plain_value:
            selector = {SERVICE_LABEL: rule.value}
        elif rule.key not in ("container", "instance") and rule.plain_value and LABEL_KEY.fullmatch(rule.key):
            selector = {rule.key: rule.value}
        else:
            notes.append(f"{rule.text}: a label selector cannot match instance names or patterns")
            lost = True
            continue
        kind = "podAntiAffinity" if rule.negated else "podAffinity"
        term = {"labelSelector": {"matchLabels": selector}, "topologyKey": HOSTNAME}
        bucket = pod_rules.setdefault(kind, {})
        if rule.hard:
            bucket.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(term)
        else:
            bucket.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
                {"weight": 50, "podAffinityTerm": term})
        what = "one per node" if rule.kind == aff.OWN and rule.negated else "on the pods' labels"
        notes.append(f"{rule.text}: {'required' if rule.hard else 'preferred'} {kind} ({what})")
    out: dict[str, Any] = {}
    node: dict[str, Any] = {}
    if required:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [{"matchExpressions": required}]}
    if preferred:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    if node:
        out["nodeAffinity"] = node
    out.update(pod_rules)
    text = "; ".join(notes)
    (ex.unmapped if lost else ex.mapped)(svc, "affinity", text)
    return out
