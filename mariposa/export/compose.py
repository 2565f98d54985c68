"""The compose and swarm-stack targets: one compose file, for ``docker compose up`` on one host
or ``docker stack deploy`` on a Swarm.

Both are the compose format; they differ where the engines do. A stack's ``deploy:`` carries the
rollout (``update_config`` from ``min_healthy_time`` and a rolling parallelism, failure action
``pause`` as Mariposa stops a failed rollout), the restart policy, placement from ``affinity`` and
the endpoint mode; its networks are attachable overlays; its ports say their mode. Compose keeps
the container options Swarm lacks (devices, privileged, shm_size, ulimits, depends_on).
Healthchecks run inside the container, so an http or tcp check becomes a command that needs a
tool in the image (wget, nc): the report says so.
"""

from __future__ import annotations

from typing import Any

from mariposa.export import affinity as aff
from mariposa.export.common import COMPOSE_LIKE, SECRET_REF, Export, duration, secret_names, secret_refs
from mariposa.model import LABEL_PROJECT_NAME, LABEL_SERVICE, HealthCheck, ServiceSpec

__all__ = ["COMPOSE_LIKE", "build"]


def build(ex: Export) -> dict[str, str]:
    stack = ex.target == "swarm-stack"
    doc: dict[str, Any] = {"version": "3.8"} if stack else {}
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    networks: dict[str, Any] = {}
    files: dict[str, str] = {}
    default_net = "default"
    for svc in ex.spec.services:
        services[svc.name] = _service(ex, svc, stack, volumes, networks)
    if stack:
        networks[default_net] = {"driver": "overlay", "attachable": True}
    names = secret_names(ex.spec)
    if names:
        secrets: dict[str, Any] = {}
        for name in names:
            if ex.secret_values is not None and name in ex.secret_values:
                files[f"secrets/{name}"] = ex.secret_values[name]
                secrets[name] = {"file": f"./secrets/{name}"}
            else:
                secrets[name] = {"external": True, "name": f"{ex.project}_{name}"}
        doc["secrets"] = secrets
    doc["services"] = services
    if volumes:
        doc["volumes"] = volumes
    if networks:
        doc["networks"] = networks
    from mariposa.export.render import yaml_text

    name = "stack.yaml" if stack else "compose.yaml"
    return {name: yaml_text(doc), **files}


def _service(ex: Export, svc: ServiceSpec, stack: bool, volumes: dict, networks: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"image": svc.image}
    labels = {k: v for k, v in svc.tags}
    labels.update({LABEL_PROJECT_NAME: ex.project, LABEL_SERVICE: svc.name})
    deploy: dict[str, Any] = {}
    if svc.service_type != "continuous":
        why = ("compose and Swarm have no scheduler: this is a service that runs once at start, not on a schedule"
               if svc.service_type == "scheduled" else
               "compose and Swarm have no event-run services: this service runs once at start")
        ex.unmapped(svc, "service_type", why)
        for option in ("schedule", "time_zone", "concurrency", "catch_up"):
            ex.unmapped(svc, option, "compose and Swarm have no scheduler")
        deploy["restart_policy"] = {"condition": "none"} if stack else None
        if not stack:
            out["restart"] = "no"
    else:
        ex.mapped(svc, "service_type")
    if svc.compute_type != "docker":
        ex.unmapped(svc, "compute_type", f"compute_type {svc.compute_type}: compose and Swarm run Docker containers "
                                         "only (exported as a container of the same image)")
    else:
        ex.mapped(svc, "compute_type")
    if svc.pull != "missing" or ex.written(svc, "pull"):
        if stack:
            ex.unmapped(svc, "pull", "docker stack deploy resolves images by its --resolve-image flag, not the file")
        else:
            out["pull_policy"] = "if_not_present" if svc.pull == "missing" else svc.pull
            ex.mapped(svc, "pull", "pull_policy")
    if svc.entrypoint is not None:
        out["entrypoint"] = list(svc.entrypoint)
    if svc.command is not None:
        out["command"] = list(svc.command)
    _environment(ex, svc, out)
    # limits
    limits: dict[str, Any] = {}
    if svc.memory:
        limits["memory"] = f"{svc.memory // (1024 * 1024)}M"
    if svc.cpus:
        limits["cpus"] = f"{svc.cpus:g}"
    if limits:
        deploy["resources"] = {"limits": limits}
        if svc.package:
            ex.changed(svc, "package", f"package {svc.package} became its limits: "
                                       + ", ".join(f"{k} {v}" for k, v in limits.items()))
        ex.mapped(svc, "memory", "deploy.resources.limits.memory")
    for option in ("tags", "labels"):
        ex.mapped(svc, option, "labels (also stamped with the project and service)")
    out["labels"] = labels
    _ports(ex, svc, stack, out)
    _health(ex, svc, out)
    _restart(ex, svc, stack, out, deploy)
    _stop(ex, svc, out)
    if svc.scale is not None and svc.service_type == "continuous":
        deploy["replicas"] = svc.scale
        ex.mapped(svc, "scale", "deploy.replicas")
    if stack:
        update: dict[str, Any] = {"parallelism": 1, "monitor": duration(svc.min_healthy_time),
                                  "failure_action": "pause", "order": "stop-first"}
        deploy["update_config"] = update
        deploy["endpoint_mode"] = svc.endpoint_mode
        _placement(ex, svc, deploy)
        deploy["labels"] = {LABEL_PROJECT_NAME: ex.project, LABEL_SERVICE: svc.name}
    else:
        if svc.affinity:
            ex.unmapped(svc, "affinity", "compose runs every service on one host: there is no placement")
    if deploy and any(v is not None for v in deploy.values()):
        out["deploy"] = {k: v for k, v in deploy.items() if v is not None}
    simple: dict[str, Any] = {"dns": list(svc.dns), "dns_search": list(svc.dns_search), "user": svc.user,
              "working_dir": svc.working_dir, "cap_add": list(svc.cap_add), "cap_drop": list(svc.cap_drop),
              "hostname": svc.hostname, "stop_signal": svc.stop_signal, "sysctls": dict(svc.sysctls)}
    if not stack:  # what Swarm services lack (the table reports them not mapped for a stack)
        simple.update({"devices": list(svc.devices), "shm_size": svc.shm_size,
                       "ulimits": {n: {"soft": s, "hard": h} for n, s, h in svc.ulimits},
                       "privileged": svc.privileged or None, "network_mode": svc.network_mode})
    for key, value in simple.items():
        if value:
            out[key] = value
    if svc.network_mode is not None:
        if stack:
            ex.unmapped(svc, "network_mode", "a Swarm service joins networks, not the host's")
        else:
            ex.mapped(svc, "network_mode")
    if svc.extra_hosts:
        out["extra_hosts"] = [f"{n}:{a}" for n, a in svc.extra_hosts]
    if svc.read_only:
        out["read_only"] = True
    out["init"] = svc.init
    if svc.tmpfs and not stack:
        out["tmpfs"] = list(svc.tmpfs)
    _volumes(ex, svc, stack, out, volumes)
    if svc.networks:
        nets = ["default"] + [n.name for n in svc.networks]
        out["networks"] = nets
        for n in svc.networks:
            networks[n.name] = ({"external": True, "name": n.runtime(ex.project)} if n.external else
                                ({"driver": "overlay", "attachable": True} if stack else {}))
    if svc.depends_on and not stack:
        out["depends_on"] = {name: {"condition": cond} for name, cond in svc.depends_on}
    if svc.secrets:
        out["secrets"] = list(svc.secrets)
        ex.mapped(svc, "secrets", "secrets given as files" if ex.secret_values is not None
                  else "external secrets, by reference: create them before deploying")
    refs = out.pop("__refs__", {})
    out = _escaped(out)
    if refs:
        out["environment"].update(refs)
    return out


def _escaped(value: Any) -> Any:
    """Compose interpolates ``$VAR`` in every string of the file: a literal '$' is '$$'."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    return value


def _environment(ex: Export, svc: ServiceSpec, out: dict) -> None:
    if not svc.environment:
        return
    env = dict(svc.environment)
    refs = secret_refs(svc)
    notes = []
    for key, name in refs.items():
        if ex.secret_values is not None and name in ex.secret_values:
            env[key] = ex.secret_values[name]
        else:
            env[key] = f"${{{key}}}"
            notes.append(f"{key} (secret {name}) becomes ${{{key}}}, to be set where compose runs")
    if any(SECRET_REF.search(v) for k, v in env.items() if k not in refs) or any(
            "{{" in v for k, v in env.items() if k not in refs):
        notes.append("templates are exported as written ({{ ... }}): compose does not render Mariposa's meta")
    out["environment"] = env
    out["__refs__"] = {k: env[k] for k in refs if env[k] == f"${{{k}}}"}  # left unescaped: compose fills them
    if notes:
        ex.changed(svc, "environment", "; ".join(notes))
    else:
        ex.mapped(svc, "environment")


def _ports(ex: Export, svc: ServiceSpec, stack: bool, out: dict) -> None:
    if not svc.ports:
        return
    if not stack:
        out["ports"] = [f"{p.host}:{p.container}/{p.protocol}" if p.host is not None else f"{p.container}/{p.protocol}"
                        for p in svc.ports]
        unpinned = [p for p in svc.ports if p.host is None]
        if unpinned and (svc.scale or 1) > 1:
            ex.mapped(svc, "ports", "unpinned ports get an ephemeral host port per container, as in Mariposa")
        else:
            ex.mapped(svc, "ports")
        return
    dnsrr = svc.endpoint_mode == "dnsrr"
    ports, notes = [], []
    for p in svc.ports:
        entry: dict[str, Any] = {"target": p.container, "protocol": p.protocol}
        if p.host is not None:
            entry.update(published=p.host, mode="host")
        elif dnsrr:
            entry["mode"] = "host"
            notes.append(f"{p}: host mode (dnsrr services cannot use the ingress mesh), a host port per node")
        else:
            entry["mode"] = "ingress"
            notes.append(f"{p}: one ingress port for all tasks, not an ephemeral port per instance")
        ports.append(entry)
    out["ports"] = ports
    if notes:
        ex.changed(svc, "ports", "; ".join(notes))
    else:
        ex.mapped(svc, "ports", "published in host mode")


def health_test(check: HealthCheck) -> tuple[list[str], str]:
    """A container healthcheck's test for one of Mariposa's checks, and what changed."""
    if check.type == "command":
        return ["CMD", *(check.command or ())], ""
    if check.type in ("http", "https"):
        url = f"{check.type}://127.0.0.1:{check.target_port}{check.path}"
        return (["CMD-SHELL", f"wget -q -O /dev/null {url} || exit 1"],
                f"{check.label} became a wget command run in the container (the image needs wget; "
                "status ranges and body matches are not checked)")
    # `nc -z` where nc has it (netcat-openbsd), else a connection with nothing to send (busybox's nc)
    port = check.target_port
    return (["CMD-SHELL", f"nc -z 127.0.0.1 {port} 2>/dev/null || nc -w 1 127.0.0.1 {port} </dev/null || exit 1"],
            f"{check.label} became an nc command run in the container (the image needs nc)")


def _health(ex: Export, svc: ServiceSpec, out: dict) -> None:
    if not svc.healthchecks:
        return
    first = svc.healthchecks[0]
    test, note = health_test(first)
    hc: dict[str, Any] = {"test": test, "interval": duration(first.poll), "timeout": duration(first.timeout),
                          "retries": first.failures_to_unhealthy}
    if first.grace:
        hc["start_period"] = duration(first.grace)
    out["healthcheck"] = hc
    notes = [note] if note else []
    if len(svc.healthchecks) > 1:
        notes.append("a container has one healthcheck: the others ("
                     + ", ".join(c.label for c in svc.healthchecks[1:]) + ") are not exported")
        ex.unmapped(svc, "healthchecks", "; ".join(notes))
    elif notes:
        ex.changed(svc, "healthchecks", "; ".join(notes))
    else:
        ex.mapped(svc, "healthchecks")


def _restart(ex: Export, svc: ServiceSpec, stack: bool, out: dict, deploy: dict) -> None:
    if svc.service_type != "continuous":
        if ex.written(svc, "restart"):
            ex.changed(svc, "restart", "a run is not restarted")
        return
    policy = svc.restart_policy
    if stack:
        condition = {"always": "any", "unless-stopped": "any", "no": "none", "on-failure": "on-failure"}[policy.name]
        rp: dict[str, Any] = {"condition": condition}
        if policy.max_retries is not None:
            rp["max_attempts"] = policy.max_retries
        deploy["restart_policy"] = rp
        if ex.written(svc, "restart"):
            ex.mapped(svc, "restart", "deploy.restart_policy") if policy.name != "unless-stopped" else ex.changed(
                svc, "restart", "unless-stopped became condition any")
    else:
        out["restart"] = str(policy)
        if ex.written(svc, "restart"):
            ex.mapped(svc, "restart")


def _stop(ex: Export, svc: ServiceSpec, out: dict) -> None:
    if svc.stop_timeout is not None:
        out["stop_grace_period"] = duration(svc.stop_timeout)
    if ex.written(svc, "stop"):
        if svc.preserve_stopped != "on-failure":
            ex.changed(svc, "stop", "timeout became stop_grace_period; preservestopped (keeping stopped "
                                    "instances) has no counterpart")
        else:
            ex.mapped(svc, "stop", "stop_grace_period")


def _placement(ex: Export, svc: ServiceSpec, deploy: dict) -> None:
    if not svc.affinity:
        return
    constraints: list[str] = []
    preferences: list[dict] = []
    notes: list[str] = []
    lost = False
    changed = False
    for rule in aff.rules_of(svc, ex.project, ex.spec.services):
        if rule.kind == aff.NODE:
            if rule.hard:
                constraints.append(aff.swarm_constraint(rule))
                notes.append(f"{rule.text}: placement constraint")
            elif rule.key.startswith("node.labels."):
                preferences.append({"spread": rule.key})
                notes.append(f"{rule.text}: placement preference spread over {rule.key} (Swarm spreads over a "
                             "label's values; it cannot prefer one value)")
                changed = True
            else:
                notes.append(f"{rule.text}: a soft rule on {rule.key} has no Swarm preference")
                lost = True
        elif rule.kind == aff.OWN:
            if rule.negated and rule.hard:
                deploy.setdefault("placement", {})["max_replicas_per_node"] = 1
                notes.append(f"{rule.text}: hard anti-affinity between the service's own instances became "
                             "max_replicas_per_node: 1 (one per node)")
                changed = True
            elif rule.negated:
                notes.append(f"{rule.text}: Swarm spreads a service's tasks over nodes by default (soft)")
                changed = True
            else:
                notes.append(f"{rule.text}: Swarm cannot keep a service's tasks together on one node")
                lost = True
        else:
            own = " (and it matches the service's own instances)" if rule.also_own else ""
            notes.append(f"{rule.text}: a rule between services' instances is not representable in a static "
                         f"stack file: Swarm places tasks without looking at other services{own}")
            lost = True
    if constraints:
        deploy.setdefault("placement", {})["constraints"] = constraints
    if preferences:
        deploy.setdefault("placement", {})["preferences"] = preferences
    text = "; ".join(notes)
    if lost:
        ex.unmapped(svc, "affinity", text)
    elif changed:
        ex.changed(svc, "affinity", text)
    else:
        ex.mapped(svc, "affinity", text)


def _volumes(ex: Export, svc: ServiceSpec, stack: bool, out: dict, volumes: dict) -> None:
    mounts: list[Any] = []
    notes: list[str] = []
    for m in svc.volumes:
        if m.type == "volume":
            volumes[m.source] = {"labels": dict(m.labels)} if m.labels else {}
            mounts.append({"type": "volume", "source": m.source, "target": m.target, "read_only": m.read_only})
        elif m.type == "bind":
            mounts.append({"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only})
            if stack:
                notes.append(f"bind {m.source}: the path must exist on every node a task may run on")
        else:
            entry: dict[str, Any] = {"type": "tmpfs", "target": m.target}
            if m.size:
                entry["tmpfs"] = {"size": m.size}
            mounts.append(entry)
    if stack:
        for path in svc.tmpfs:
            mounts.append({"type": "tmpfs", "target": path.split(":", 1)[0]})
        if svc.tmpfs:
            ex.changed(svc, "tmpfs", "tmpfs mounts (their mount options are not kept)")
    if mounts:
        out["volumes"] = mounts
    if svc.volumes:
        if notes:
            ex.changed(svc, "volumes", "; ".join(notes))
        else:
            ex.mapped(svc, "volumes")
