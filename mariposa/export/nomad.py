"""The nomad target: Nomad jobs in the JSON the HTTP API takes (``{"Job": {...}}``, the body of
``POST /v1/jobs``), one file per job.

Continuous services are task groups of one service job named after the project. A scheduled
service is a periodic batch job of its own (``Periodic``: cron, ``ProhibitOverlap`` from
``concurrency``, ``TimeZone``) and an event service a parameterized batch job (``Parameterized
Job``, dispatched by ``nomad job dispatch``), because Nomad sets both on the job, not the group.
Secrets are references: a template reading the Vault path ``secret/data/mariposa/PROJECT/NAME``,
never the value, unless the caller may reveal them.
"""

from __future__ import annotations

from typing import Any

from mariposa.export import affinity as aff
from mariposa.export.common import Export, memory_mib, secret_refs
from mariposa.model import LABEL_PROJECT_NAME, LABEL_SERVICE, ServiceSpec

NS = 1_000_000_000


def build(ex: Export) -> dict[str, str]:
    from mariposa.export.render import json_text

    files: dict[str, str] = {}
    groups = [_group(ex, s) for s in ex.spec.services if s.service_type == "continuous"]
    if groups:
        files[f"{ex.project}.json"] = json_text({"Job": _job(ex, ex.project, "service", groups)})
    for svc in ex.spec.services:
        if svc.service_type == "continuous":
            continue
        job = _job(ex, f"{ex.project}-{svc.name}", "batch", [_group(ex, svc)])
        if svc.service_type == "scheduled":
            job["Periodic"] = _periodic(ex, svc)
        else:
            job["ParameterizedJob"] = {"Payload": "optional", "MetaRequired": [], "MetaOptional": []}
            ex.changed(svc, "service_type", "a parameterized batch job: each 'nomad job dispatch' is a run")
        files[f"{ex.project}-{svc.name}.json"] = json_text({"Job": job})
    return files


def _job(ex: Export, job_id: str, kind: str, groups: list[dict]) -> dict[str, Any]:
    return {"ID": job_id, "Name": job_id, "Type": kind, "Datacenters": ["dc1"], "Namespace": "default",
            "Meta": {LABEL_PROJECT_NAME: ex.project}, "TaskGroups": groups}


def _periodic(ex: Export, svc: ServiceSpec) -> dict[str, Any]:
    ex.changed(svc, "service_type", "a periodic batch job")
    specs = list(svc.schedule)
    if len(specs) > 1:
        ex.unmapped(svc, "schedule", f"a Nomad job has one cron spec: only {specs[0]!r} is exported, "
                                     f"not {', '.join(map(repr, specs[1:]))}")
    else:
        ex.mapped(svc, "schedule", "Periodic.Spec")
    ex.mapped(svc, "time_zone", "Periodic.TimeZone")
    notes = {"allow": (True, "ProhibitOverlap false"), "forbid": (True, "ProhibitOverlap true"),
             "replace": (False, "ProhibitOverlap true: Nomad skips a firing during a run, it cannot replace the run"),
             "queue": (False, "ProhibitOverlap true: Nomad skips a firing during a run, it does not queue it")}
    ok, note = notes[svc.concurrency]
    (ex.mapped if ok else ex.changed)(svc, "concurrency", note)
    if ex.written(svc, "catch_up"):
        ex.unmapped(svc, "catch_up", "Nomad never runs the firings it missed")
    return {"Enabled": True, "SpecType": "cron", "Spec": specs[0] if specs else "",
            "ProhibitOverlap": svc.concurrency != "allow", "TimeZone": svc.time_zone}


def _group(ex: Export, svc: ServiceSpec) -> dict[str, Any]:
    task = _task(ex, svc)
    group: dict[str, Any] = {"Name": svc.name, "Count": 1 if svc.runs else (svc.scale if svc.scale is not None else 1),
                             "Tasks": [task], "Meta": {LABEL_SERVICE: svc.name}}
    if svc.service_type == "continuous":
        ex.mapped(svc, "service_type")
        group["Update"] = {"MaxParallel": 1, "MinHealthyTime": int(svc.min_healthy_time * NS),
                           "HealthyDeadline": int(min(svc.progress_deadline, 300) * NS),
                           "ProgressDeadline": int(max(svc.progress_deadline, 600) * NS) if svc.progress_deadline
                           else 0, "AutoRevert": True, "HealthCheck": "checks" if svc.healthchecks else "task_states"}
        if svc.progress_deadline < 600 and ex.written(svc, "progress_deadline"):
            ex.changed(svc, "progress_deadline", "Update.ProgressDeadline (Nomad's is at least 10m, the "
                                                 "HealthyDeadline takes the value)")
    attempts = svc.restart_policy.max_retries
    if svc.runs:
        group["RestartPolicy"] = {"Attempts": svc.retries, "Interval": 24 * 3600 * NS, "Delay": 15 * NS,
                                  "Mode": "fail"}
        if ex.written(svc, "restart"):
            ex.changed(svc, "restart", "a run's failures are retried per 'retries' (RestartPolicy.Attempts)")
    else:
        name = svc.restart_policy.name
        group["RestartPolicy"] = {"Attempts": attempts if attempts is not None else 2, "Interval": 30 * 60 * NS,
                                  "Delay": 15 * NS, "Mode": "delay" if name in ("always", "unless-stopped") else "fail"}
        if ex.written(svc, "restart"):
            if name == "no":
                ex.changed(svc, "restart", "Nomad restarts a failed service task at least once; RestartPolicy "
                                           "Attempts 0, Mode fail")
                group["RestartPolicy"].update(Attempts=0, Mode="fail")
            else:
                ex.changed(svc, "restart", "RestartPolicy: Nomad restarts tasks on any exit, "
                                           f"{group['RestartPolicy']['Attempts']} attempts per 30m then "
                                           f"{group['RestartPolicy']['Mode']}")
    # a check on a port the service does not publish still needs a port label: a dynamic one,
    # mapped to the container port, so Nomad can reach it
    checked = {c.target_port for c in svc.healthchecks if c.type != "command"} - {p.container for p in svc.ports}
    if svc.ports or checked:
        static = [{"Label": f"p{p.container}", "Value": p.host, "To": p.container} for p in svc.ports if p.host]
        dynamic = [{"Label": f"p{p.container}", "To": p.container} for p in svc.ports if not p.host]
        dynamic += [{"Label": f"p{port}", "To": port} for port in sorted(checked)]
        group["Networks"] = [{"Mode": "bridge", "ReservedPorts": static, "DynamicPorts": dynamic}]
    if svc.ports:
        udp = [p for p in svc.ports if p.protocol == "udp"]
        if udp:
            ex.changed(svc, "ports", "Nomad ports carry tcp and udp alike: " + ", ".join(map(str, udp)))
        else:
            ex.mapped(svc, "ports", "ReservedPorts (pinned) and DynamicPorts, bridge mode")
    constraints, affinities = _affinity(ex, svc)
    if constraints:
        group["Constraints"] = constraints
    if affinities:
        group["Affinities"] = affinities
    if svc.healthchecks:
        group["Services"] = [_service(ex, svc)]
    return group


def _service(ex: Export, svc: ServiceSpec) -> dict[str, Any]:
    checks = []
    for c in svc.healthchecks:
        check: dict[str, Any] = {"Name": c.label, "Interval": int(c.poll * NS), "Timeout": int(c.timeout * NS)}
        if c.type in ("http", "https"):
            check.update(Type="http", Protocol=c.type, Path=c.path, Method=c.method, PortLabel=f"p{c.target_port}")
        elif c.type == "tcp":
            check.update(Type="tcp", PortLabel=f"p{c.target_port}")
        else:
            check.update(Type="script", Command=(c.command or ("true",))[0], Args=list((c.command or ())[1:]),
                         TaskName=svc.name)
        checks.append(check)
    unpublished = sorted({c.target_port for c in svc.healthchecks if c.type != "command"}
                         - {p.container for p in svc.ports})
    if unpublished:
        ex.changed(svc, "healthchecks", "service checks (http, tcp, script); checked ports the service does not "
                                        f"publish ({', '.join(map(str, unpublished))}) get a dynamic port each")
    else:
        ex.mapped(svc, "healthchecks", "service checks (http, tcp, script)")
    out: dict[str, Any] = {"Name": f"{ex.project}-{svc.name}".replace("_", "-").replace(".", "-"),
                           "Provider": "nomad", "Checks": checks}
    if svc.ports:
        out["PortLabel"] = f"p{svc.ports[0].container}"
    return out


def _task(ex: Export, svc: ServiceSpec) -> dict[str, Any]:
    config: dict[str, Any] = {"image": svc.image, "init": svc.init}
    if svc.pull == "always":
        config["force_pull"] = True
    if svc.pull == "never":
        ex.unmapped(svc, "pull", "Nomad's docker driver pulls a missing image; 'never' is not expressible")
    else:
        ex.mapped(svc, "pull", "force_pull" if svc.pull == "always" else "the docker driver pulls a missing image")
    if svc.compute_type != "docker":
        ex.unmapped(svc, "compute_type", f"compute_type {svc.compute_type}: exported as a docker task")
    else:
        ex.mapped(svc, "compute_type", "Driver docker")
    if svc.entrypoint is not None:
        config["entrypoint"] = list(svc.entrypoint)
    if svc.command is not None:
        config["command"], config["args"] = svc.command[0], list(svc.command[1:])
    if svc.ports:
        config["ports"] = [f"p{p.container}" for p in svc.ports]
    optional = {"dns_servers": list(svc.dns), "dns_search_domains": list(svc.dns_search),
                "cap_add": [c.lower() for c in svc.cap_add], "cap_drop": [c.lower() for c in svc.cap_drop],
                "hostname": svc.hostname, "readonly_rootfs": svc.read_only or None,
                "privileged": svc.privileged or None, "network_mode": svc.network_mode,
                "work_dir": svc.working_dir, "sysctl": dict(svc.sysctls),
                "ulimit": {n: f"{s}:{h}" for n, s, h in svc.ulimits}, "shm_size": svc.shm_size,
                "extra_hosts": [f"{n}:{a}" for n, a in svc.extra_hosts],
                "devices": [{"host_path": d.split(":")[0], "container_path": (d.split(":") + [d])[1]}
                            for d in svc.devices],
                "labels": {**dict(svc.tags), LABEL_PROJECT_NAME: ex.project, LABEL_SERVICE: svc.name}}
    mounts = []
    for m in svc.volumes:
        mount: dict[str, Any] = {"type": m.type, "target": m.target, "readonly": m.read_only}
        if m.source:
            mount["source"] = f"{ex.project}_{m.source}" if m.type == "volume" else m.source
        if m.type == "tmpfs" and m.size:
            mount["tmpfs_options"] = {"size": m.size}
        mounts.append(mount)
    for path in svc.tmpfs:
        mounts.append({"type": "tmpfs", "target": path.split(":", 1)[0]})
    if mounts:
        optional["mounts"] = mounts
    if svc.volumes:
        ex.changed(svc, "volumes", "docker mounts in the task config (named volumes are Docker volumes "
                                   f"{ex.project}_NAME on the client, not Nomad CSI or host volumes)")
    for key, value in optional.items():
        if value:
            config[key] = value
    for option in ("tags", "labels"):
        ex.mapped(svc, option, "docker labels")
    task: dict[str, Any] = {"Name": svc.name, "Driver": "docker", "Config": config, "Meta": {}}
    if svc.user:
        task["User"] = svc.user
        ex.mapped(svc, "user")
    env = dict(svc.environment)
    templates = []
    refs = secret_refs(svc)
    for key, name in refs.items():
        env.pop(key)
        if ex.secret_values is not None and name in ex.secret_values:
            env[key] = ex.secret_values[name]
        else:
            templates.append({"EmbeddedTmpl": f'{{{{ with secret "secret/data/mariposa/{ex.project}/{name}" }}}}'
                                              f'{key}={{{{ .Data.data.value }}}}{{{{ end }}}}\n',
                              "DestPath": f"secrets/{key}.env", "Envvars": True, "ChangeMode": "restart"})
    for name in svc.secrets:
        if ex.secret_values is not None and name in ex.secret_values:
            body = ex.secret_values[name]
        else:
            body = (f'{{{{ with secret "secret/data/mariposa/{ex.project}/{name}" }}}}'
                    '{{ .Data.data.value }}{{ end }}')
        templates.append({"EmbeddedTmpl": body, "DestPath": f"secrets/{name}", "ChangeMode": "restart"})
    if svc.secrets:
        config.setdefault("mounts", []).append({"type": "bind", "source": "secrets", "target": "/run/secrets",
                                                "readonly": True})
        ex.changed(svc, "secrets", "templates rendered into /run/secrets"
                   + (" with the values" if ex.secret_values is not None else
                      f" from Vault (secret/data/mariposa/{ex.project}/NAME, key value)"))
    if templates:
        task["Templates"] = templates
    if env:
        task["Env"] = env
    if svc.environment:
        if refs:
            ex.changed(svc, "environment", "secret variables (" + ", ".join(refs) + ") come from "
                       + ("the values" if ex.secret_values is not None else "Vault templates"))
        elif any("{{" in v for _, v in svc.environment):
            ex.changed(svc, "environment", "templates are exported as written: Nomad does not render Mariposa's meta")
        else:
            ex.mapped(svc, "environment", "Env")
    resources: dict[str, Any] = {"CPU": int((svc.cpus or 0.1) * 1000), "MemoryMB": memory_mib(svc) or 128}
    task["Resources"] = resources
    if svc.package:
        ex.changed(svc, "package", f"package {svc.package}: Resources CPU {resources['CPU']} MHz, "
                                   f"MemoryMB {resources['MemoryMB']}")
    ex.changed(svc, "memory", f"Resources.MemoryMB {resources['MemoryMB']} (whole MiB)")
    if svc.stop_timeout is not None:
        task["KillTimeout"] = int(svc.stop_timeout * NS)
    if ex.written(svc, "stop"):
        if svc.preserve_stopped != "on-failure":
            ex.changed(svc, "stop", "KillTimeout; preservestopped has no counterpart")
        else:
            ex.mapped(svc, "stop", "KillTimeout")
    if svc.stop_signal:
        task["KillSignal"] = svc.stop_signal
    return task


def _affinity(ex: Export, svc: ServiceSpec) -> tuple[list[dict], list[dict]]:
    if not svc.affinity:
        return [], []
    constraints: list[dict] = []
    affinities: list[dict] = []
    notes, lost, changed = [], False, False
    for rule in aff.rules_of(svc, ex.project, ex.spec.services):
        if rule.kind == aff.NODE:
            target = _node_target(rule.key)
            if target is None:
                notes.append(f"{rule.text}: Nomad has no node attribute for {rule.key}")
                lost = True
                continue
            op = "!=" if rule.negated else "="
            if rule.hard:
                constraints.append({"LTarget": target, "RTarget": rule.value, "Operand": op})
                notes.append(f"{rule.text}: a constraint")
            else:
                affinities.append({"LTarget": target, "RTarget": rule.value, "Operand": op, "Weight": 50})
                notes.append(f"{rule.text}: an affinity of weight 50")
        elif rule.kind == aff.OWN and rule.negated:
            if rule.hard:
                constraints.append({"Operand": "distinct_hosts", "RTarget": "true"})
                notes.append(f"{rule.text}: distinct_hosts (one instance per node)")
            else:
                constraints.append({"Operand": "distinct_hosts", "RTarget": "true"})
                notes.append(f"{rule.text}: soft, made hard: distinct_hosts")
                changed = True
        else:
            notes.append(f"{rule.text}: Nomad places a group without looking at other jobs' allocations")
            lost = True
    text = "; ".join(notes)
    (ex.unmapped if lost else ex.changed if changed else ex.mapped)(svc, "affinity", text)
    return constraints, affinities


def _node_target(key: str) -> str | None:
    if key.startswith("node.labels."):
        return "${meta." + key.removeprefix("node.labels.") + "}"
    return {"node.hostname": "${attr.unique.hostname}", "node.id": "${node.unique.id}",
            "node.platform.os": "${attr.kernel.name}", "node.platform.arch": "${attr.cpu.arch}"}.get(key)
