"""Every field of a compose service, and what it becomes in a Mariposa manifest.

The table (``SERVICE_FIELDS``) is the importer's whole vocabulary: each compose key maps to a rule
(engine.py) that says whether the option is the same in the manifest, becomes another one with a
change, or has no meaning here and why. Options the manifest spells as compose does (user,
cap_add, volumes ...) are ``Same``; the rest say what happens to them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from mariposa.compose.engine import Converter, Custom, Dropped, Group, Noted, Rule, Same, Service, plain
from mariposa.compose.values import ANY_ADDRESS, Port, health_test, parse_duration, port_text, seconds_text
from mariposa.manifest.report import _At

ONE_HOST = "has no meaning on one host"
CPU = "CPU shares come from the service's package (package: small|medium|large|xlarge)"
NO_TERMINAL = "instances run without a terminal; read their output with service logs"


# ---- environment and files ---------------------------------------------------------------------


def environment(conv: Converter, svc: Service, at: _At) -> None:
    """A mapping or a list of KEY=VALUE; a KEY without a value takes the caller's, as compose."""
    out: dict[str, str] = {}
    taken: list[str] = []
    unset: list[str] = []
    if isinstance(at.value, Mapping):
        items = [(str(k), e.value) for k, e in at.entries()]
    elif isinstance(at.value, list):
        items = []
        for item in at.items():
            if not isinstance(item.value, str):
                conv.problem(item, "expected KEY=VALUE")
                continue
            key, sep, value = item.value.partition("=")
            items.append((key.strip(), value if sep else None))
    else:
        conv.problem(at, "expected a mapping or a list of KEY=VALUE")
        return
    for key, value in items:
        if value is None:
            if key in conv.env:
                out[key] = conv.env[key]
                taken.append(key)
            else:
                unset.append(key)
        elif isinstance(value, (Mapping, list)):
            conv.problem(at, f"environment {key}: expected a string, got a collection")
        else:
            out[key] = "true" if value is True else "false" if value is False else str(value)
    svc.set("environment", out, at)
    notes = []
    if isinstance(at.value, list):
        notes.append("list of KEY=VALUE -> a mapping")
    if taken:
        notes.append(f"{', '.join(taken)} taken from your environment at import, as compose takes it")
    if unset:
        notes.append(f"{', '.join(unset)} not set in your environment: left unset, as compose leaves it")
    if taken or unset:
        conv.changed(at, "; ".join(notes))
    else:
        conv.mapped(at, "; ".join(notes))


def host_path(conv: Converter, path: str) -> tuple[str, str]:
    """(the path the manifest holds, what was done to it): ``~`` is the caller's home, and a
    relative path stays relative to the manifest beside the compose file, or becomes absolute
    when the manifest is written elsewhere (--out)."""
    note = ""
    if path == "~" or path.startswith("~/"):
        home = conv.home or os.path.expanduser("~")
        path, note = home + path[1:], f"~ -> {home} (yours, not the daemon's)"
    if not path.startswith("/") and conv.absolute_paths:
        absolute = os.path.normpath(os.path.join(conv.compose_dir, path))
        note, path = f"{path} -> {absolute} (relative to the compose file)", absolute
    return path, note


def env_file(conv: Converter, svc: Service, at: _At) -> None:
    entries = at.value if isinstance(at.value, list) else [at.value]
    out: list[Any] = []
    notes: list[str] = []
    lost: list[str] = []
    for entry in entries:
        if isinstance(entry, Mapping):
            extra = sorted(set(map(str, entry)) - {"path", "required"})
            if extra:
                lost.append(f"{', '.join(extra)} of {entry.get('path')!r}")
            path, note = host_path(conv, str(entry.get("path", "")))
            kept = {"path": path, **({"required": bool(entry["required"])} if "required" in entry else {})}
            out.append(kept)
        elif isinstance(entry, str):
            path, note = host_path(conv, entry)
            out.append(path)
        else:
            conv.problem(at, "expected a path or a list of paths")
            return
        if note:
            notes.append(note)
    svc.set("env_file", out, at)
    if lost:
        conv.unmapped(at, f"{'; '.join(lost)}: files are read as KEY=VALUE lines, with compose's quoting")
    elif notes:
        conv.changed(at, "; ".join(notes))
    else:
        conv.mapped(at, "read beside the compose file when the version is made; values are stored with it")


# ---- ports ----------------------------------------------------------------------------------------


def ports(conv: Converter, svc: Service, at: _At) -> None:
    if not isinstance(at.value, list):
        conv.problem(at, "expected a list of ports")
        return
    out: list[Any] = []
    changes: list[str] = []
    lost: list[str] = []
    for item in at.items():
        shown = item.value if not isinstance(item.value, Mapping) else plain(item.value)
        try:
            port = Port.parse(item.value)
            pairs = port.pairs()
        except ValueError as exc:
            conv.problem(item, str(exc))
            continue
        if port.ip not in ANY_ADDRESS:
            lost.append(f"{shown!r}: Mariposa publishes on every address of the host, wider than {port.ip}; "
                        "left out (add it by hand to publish it everywhere)")
            continue
        if port.protocol not in ("tcp", "udp"):
            lost.append(f"{shown!r}: only tcp and udp are published")
            continue
        if isinstance(item.value, Mapping):
            extra = sorted(set(map(str, item.value)) - {"target", "published", "host_ip", "protocol", "mode"})
            if extra:
                lost.append(f"{', '.join(extra)} of {shown!r}: a port has no name or application protocol here")
            if item.value.get("mode") == "ingress":
                changes.append("mode: ingress -> published on this host (no routing mesh)")
        spelled = [port_text(h, c, port.protocol) for h, c in pairs]
        for text in spelled:
            conv.origins[f"services.{svc.name}.ports[{len(out)}]"] = item.pos
            out.append(text)
        if len(pairs) > 1:
            changes.append(f"range {shown!r} -> {', '.join(map(str, spelled))}")
        elif port.host and pairs[0][0] is None:
            changes.append(f"{shown!r}: a host port range for one port -> an ephemeral host port")
        elif isinstance(item.value, Mapping) or port.ip or str(spelled[0]) != str(item.value):
            changes.append(f"{shown!r} -> {spelled[0]!r}")
    svc.set("ports", out, at)
    if lost:
        conv.unmapped(at, "; ".join(lost + changes))
    elif changes:
        conv.changed(at, "; ".join(changes))
    else:
        conv.mapped(at, "no host port: an ephemeral one each, so any scale works" if all(
            isinstance(p, int) or ":" not in str(p) for p in out) else "")


# ---- volumes ----------------------------------------------------------------------------------------

_MODES_KEPT = {"ro", "rw"}
_MODES_MOOT = {"cached", "delegated", "consistent"}


def volumes(conv: Converter, svc: Service, at: _At) -> None:
    if not isinstance(at.value, list):
        conv.problem(at, "expected a list of volumes")
        return
    out: list[Any] = []
    changes: list[str] = []
    lost: list[str] = []
    for item in at.items():
        mount: str | dict | None
        if isinstance(item.value, Mapping):
            mount = _long_volume(conv, item, changes, lost)
        elif isinstance(item.value, str):
            mount = _short_volume(conv, item, changes, lost)
        else:
            conv.problem(item, "expected SOURCE:TARGET[:MODE] or a mapping")
            continue
        if mount is not None:
            conv.origins[f"services.{svc.name}.volumes[{len(out)}]"] = item.pos
            out.append(mount)
    svc.set("volumes", out, at)
    if lost:
        conv.unmapped(at, "; ".join(lost + changes))
    elif changes:
        conv.changed(at, "; ".join(changes))
    else:
        conv.mapped(at)


def _short_volume(conv: Converter, item: _At, changes: list[str], lost: list[str]) -> str | None:
    text = item.value
    parts = text.split(":")
    if len(parts) == 1:
        lost.append(f"{text!r}: an anonymous volume (its data would go with the instance); "
                    f"name it (data:{text}) to keep it")
        return None
    if len(parts) > 3:
        conv.problem(item, f"{text!r} must be SOURCE:TARGET or SOURCE:TARGET:MODE")
        return None
    source, target, modes = parts[0], parts[1], parts[2].split(",") if len(parts) > 2 else []
    kept = [m for m in modes if m in _MODES_KEPT]
    moot = [m for m in modes if m in _MODES_MOOT]
    other = [m for m in modes if m not in _MODES_KEPT | _MODES_MOOT]
    if other:
        lost.append(f"{text!r}: mode {','.join(other)} (SELinux relabelling, nocopy) is not applied")
    if moot:
        changes.append(f"{text!r}: {','.join(moot)} has no effect on Linux, as in compose")
    if source.startswith((".", "/", "~")):
        source, note = host_path(conv, source)
        if note:
            changes.append(note)
    spelled = ":".join([source, target, *kept[-1:]])
    return spelled


def _long_volume(conv: Converter, item: _At, changes: list[str], lost: list[str]) -> dict | None:
    value = plain(item.value)
    kind = value.get("type", "volume")
    shown = f"{kind} {value.get('target')}"
    if kind not in ("volume", "bind", "tmpfs"):
        lost.append(f"{shown}: type {kind} is not a mount Mariposa makes")
        return None
    out: dict[str, Any] = {"type": kind}
    if "source" in value:
        source = value["source"]
        if kind == "bind" and isinstance(source, str):
            source, note = host_path(conv, source)
            if note:
                changes.append(note)
        out["source"] = source
    elif kind == "volume":
        lost.append(f"{shown}: an anonymous volume (its data would go with the instance); give it a source")
        return None
    out["target"] = value.get("target")
    if value.get("read_only"):
        out["read_only"] = True
    tmpfs = value.get("tmpfs")
    if kind == "tmpfs" and isinstance(tmpfs, Mapping) and "size" in tmpfs:
        out["size"] = tmpfs["size"]
    for key in sorted(set(value) - {"type", "source", "target", "read_only", "tmpfs", "consistency"}):
        sub = value[key]
        if key == "bind" and isinstance(sub, Mapping) and set(sub) <= {"create_host_path"}:
            changes.append(f"{shown}: bind.create_host_path: the host path must exist")
        else:
            lost.append(f"{shown}: {key} {sub!r} is not applied")
    if isinstance(tmpfs, Mapping) and set(tmpfs) - {"size"}:
        lost.append(f"{shown}: tmpfs {', '.join(sorted(set(tmpfs) - {'size'}))} is not applied")
    if "consistency" in value:
        changes.append(f"{shown}: consistency has no effect on Linux, as in compose")
    return out


# ---- supervision ----------------------------------------------------------------------------------------


def healthcheck(conv: Converter, svc: Service, at: _At) -> None:
    if not isinstance(at.value, Mapping):
        conv.problem(at, "expected a mapping of health check options")
        return
    check: dict[str, Any] = {"type": "command"}
    disabled = False
    durations = {"interval": "poll", "timeout": "timeout", "start_period": "grace"}
    for key, entry in at.entries():
        if key == "test":
            try:
                argv, note = health_test(entry.value)
            except ValueError as exc:
                conv.problem(entry, str(exc))
                continue
            if argv is None:
                disabled = True
            else:
                check["command"] = argv
            conv.changed(entry, note)
        elif key == "disable":
            disabled = disabled or bool(entry.value)
            if entry.value:
                conv.changed(entry, "no health check, as without one")
            else:
                conv.mapped(entry)
        elif key in durations:
            try:
                seconds = parse_duration(entry.value)
            except ValueError as exc:
                conv.problem(entry, str(exc))
                continue
            check[durations[key]] = seconds_text(seconds)
            conv.changed(entry, f"{key} {entry.value} -> {durations[key]}: {seconds_text(seconds)} (seconds)")
        elif key == "retries":
            check["retries"] = plain(entry.value)
            conv.mapped(entry)
        elif key == "start_interval":
            conv.unmapped(entry, "checks in the start period run at the interval (poll)")
        else:
            conv.unmapped(entry, f"{key!r} is not a health check option the importer knows")
    if disabled:
        return
    if "command" not in check:
        conv.changed(at, "no test: the image's own HEALTHCHECK is not run; Mariposa checks only what "
                         "the manifest lists")
        return
    for key, default in (("poll", 30), ("timeout", 30)):
        if key not in check:
            check[key] = default  # Docker's defaults, which compose's checks run with
    ordered = {k: check[k] for k in ("type", "command", "poll", "timeout", "retries", "grace") if k in check}
    svc.set("healthchecks", [ordered], at)


def restart(conv: Converter, svc: Service, at: _At) -> None:
    value = "no" if at.value is False else str(at.value)
    svc.set("restart", value, at)
    if value == "unless-stopped":
        conv.mapped(at, "Mariposa restarts it until you stop the service, as compose does")
    else:
        conv.mapped(at)


_CONDITIONS = {"none": "no", "on-failure": "on-failure", "any": "always"}


def restart_policy(conv: Converter, svc: Service, at: _At) -> None:
    """deploy.restart_policy (swarm's) as a restart policy: condition any (its default) is
    always, on-failure with max_attempts is on-failure:N."""
    if not isinstance(at.value, Mapping):
        conv.problem(at, "expected a mapping of restart_policy options")
        return
    condition = str(at.value.get("condition", "any"))
    policy = _CONDITIONS.get(condition)
    if policy is None:
        conv.problem(at, f"unknown restart_policy condition {condition!r} (none, on-failure, any)")
        return
    for key, entry in at.entries():
        if key == "condition":
            conv.changed(entry, f"condition {condition} -> restart: {policy}")
        elif key == "max_attempts" and policy == "on-failure" and isinstance(entry.value, int):
            policy = f"on-failure:{entry.value}"
            conv.changed(entry, f"-> restart: {policy}")
        elif key == "max_attempts":
            conv.unmapped(entry, f"restart: {policy} has no count (only on-failure:N does)")
        elif key in ("delay", "window"):
            conv.unmapped(entry, "restarts are spaced by Mariposa's back-off (0.1 s doubling to 60 s), as Docker's")
        else:
            conv.unmapped(entry, f"{key!r} is not a restart_policy option the importer knows")
    svc.set("restart", policy, at)


def stop_grace_period(conv: Converter, svc: Service, at: _At) -> None:
    try:
        seconds = parse_duration(at.value)
    except ValueError as exc:
        conv.problem(at, str(exc))
        return
    whole = int(-(-seconds // 1))  # stop.timeout is whole seconds; round up, never kill sooner
    svc.set("stop", {"timeout": whole}, at)
    rounded = "" if whole == seconds else " (rounded up to whole seconds)"
    conv.changed(at, f"{at.value} -> stop: {{timeout: {whole}}}{rounded}")


def replicas(conv: Converter, svc: Service, at: _At) -> None:
    svc.set("scale", plain(at.value), at)
    conv.changed(at, f"deploy.replicas -> scale: {plain(at.value)}")


def deploy_mode(conv: Converter, svc: Service, at: _At) -> None:
    if at.value == "global":
        svc.out.setdefault("scale", 1)
        conv.changed(at, "global: one instance per host, and this is one host: scale 1")
    else:
        conv.mapped(at)


def monitor(conv: Converter, svc: Service, at: _At) -> None:
    try:
        seconds = parse_duration(at.value)
    except ValueError as exc:
        conv.problem(at, str(exc))
        return
    svc.set("min_healthy_time", seconds_text(seconds), at)
    conv.changed(at, f"{at.value} -> min_healthy_time: {seconds_text(seconds)} (a new instance must stay up this long)")


def update_order(conv: Converter, svc: Service, at: _At) -> None:
    if at.value == "start-first":
        conv.mapped(at, "a rollout starts each new instance before it stops an old one")
    else:
        conv.unmapped(at, "a rollout always starts the new instance before it stops an old one (start-first)")


# ---- networking and start order ----------------------------------------------------------------------


def network_mode(conv: Converter, svc: Service, at: _At) -> None:
    if at.value in ("host", "bridge"):
        svc.set("network_mode", at.value, at)
        conv.mapped(at, "needs allow_privileged = true" if at.value == "host" else "")
    else:
        conv.unmapped(at, f"network_mode {at.value!r}: only host and bridge (the project's network)")


def networks(conv: Converter, svc: Service, at: _At) -> None:
    """`networks: [a, b]` or `{a: {aliases: ...}}`; external networks renamed to their runtime name."""
    names: list[str] = []
    lost: list[str] = []
    if isinstance(at.value, list):
        names = [str(n) for n in at.value]
    elif isinstance(at.value, Mapping):
        for name, entry in at.entries():
            names.append(str(name))
            options = entry.value
            if isinstance(options, Mapping) and options:
                lost.append(f"{name}: {', '.join(map(str, options))} (aliases, addresses and priorities are "
                            "not set: an instance answers to its service's name)")
    else:
        conv.problem(at, "expected a list or a mapping of networks")
        return
    declared = conv.manifest_networks or {}
    renames = conv.network_names
    out = [renames.get(n, n) for n in names]
    svc.set("networks", out, at)
    changes = [f"{n} -> {renames[n]} (the external network's name)" for n in names if n in renames]
    if isinstance(at.value, Mapping):
        changes.insert(0, "a mapping -> a list of names")
    missing = [n for n in names if n != "default" and n not in declared and n not in renames]
    if missing:
        conv.problem(at, f"network {missing[0]!r} is not declared in the top-level networks:")
    if lost:
        conv.unmapped(at, "; ".join(lost + changes))
    elif changes:
        conv.changed(at, "; ".join(changes))
    else:
        conv.mapped(at)


def depends_on(conv: Converter, svc: Service, at: _At) -> None:
    if isinstance(at.value, list):
        names = [conv.renamed.get(str(n), str(n)) for n in at.value]
        svc.set("depends_on", names, at)
        conv.mapped(at, "renamed services follow" if names != [str(n) for n in at.value] else "")
        return
    if not isinstance(at.value, Mapping):
        conv.problem(at, "expected a list or a mapping of services")
        return
    out: dict[str, Any] = {}
    lost: list[str] = []
    for name, entry in at.entries():
        target = conv.renamed.get(str(name), str(name))
        options = plain(entry.value) or {}
        condition = options.get("condition", "service_started") if isinstance(options, Mapping) else None
        if condition == "service_completed_successfully":
            lost.append(f"{name}: service_completed_successfully (services run continuously here; "
                        "one that must finish first is not a service) -> service_started")
            condition = "service_started"
        elif condition not in ("service_started", "service_healthy"):
            conv.problem(entry, f"unknown condition {condition!r} (service_started, service_healthy, "
                                "service_completed_successfully)")
            continue
        for key in sorted(set(options) - {"condition"}):
            if key == "required" and options[key] is True or key == "restart" and options[key] is False:
                continue
            lost.append(f"{name}: {key}: {options[key]!r} is not applied")
        out[target] = {"condition": condition}
    svc.set("depends_on", out, at)
    if lost:
        conv.unmapped(at, "; ".join(lost))
    else:
        conv.mapped(at)


def pull_policy(conv: Converter, svc: Service, at: _At) -> None:
    policy = {"missing": "missing", "always": "always", "never": "never", "if_not_present": "missing"}.get(
        str(at.value))
    if policy is None:
        reason = "build: there is no builder; the image must exist or be pulled" if at.value == "build" else (
            f"unknown pull_policy {at.value!r}")
        conv.unmapped(at, reason)
        return
    svc.set("pull", policy, at)
    if policy != at.value:
        conv.changed(at, f"pull_policy: {at.value} -> pull: {policy}")
    else:
        conv.changed(at, f"pull_policy -> pull: {policy}")


def links(conv: Converter, svc: Service, at: _At) -> None:
    if at.value is not None and not isinstance(at.value, list):
        conv.problem(at, "links must be a list of SERVICE or SERVICE:ALIAS")
        return
    aliased = [str(v) for v in (at.value or []) if ":" in str(v)]
    if aliased:
        conv.unmapped(at, f"{', '.join(aliased)}: an alias is not set; services reach each other by service name")
    else:
        conv.changed(at, "nothing to write: every service answers to its name on the project's network")


def extra_hosts(conv: Converter, svc: Service, at: _At) -> None:
    """Kept in the spelling given, except ``host-gateway`` (Docker's name for the host's address
    on the default bridge), which is not an address Mariposa resolves."""
    value = plain(at.value)
    gateway: list[str] = []
    if isinstance(value, Mapping):
        gateway = [k for k, v in value.items() if v == "host-gateway"]
        value = {k: v for k, v in value.items() if k not in gateway}
    elif isinstance(value, list):
        gateway = [str(v) for v in value if str(v).endswith("host-gateway")]
        value = [v for v in value if str(v) not in gateway]
    svc.set("extra_hosts", value, at)
    if gateway:
        conv.unmapped(at, f"{', '.join(gateway)}: host-gateway is not resolved; give the host's address "
                          "on the project's network")
    else:
        conv.mapped(at)


def dns_list(conv: Converter, svc: Service, at: _At) -> None:
    key = at.field.rsplit(".", 1)[-1]
    if isinstance(at.value, str):
        svc.set(key, [at.value], at)
        conv.mapped(at, "one address -> a list of one")
    else:
        svc.set(key, plain(at.value), at)
        conv.mapped(at)


def command(conv: Converter, svc: Service, at: _At) -> None:
    key = at.field.rsplit(".", 1)[-1]
    svc.set(key, plain(at.value), at)
    conv.mapped(at, "split like a shell" if isinstance(at.value, str) else "")


def labels(conv: Converter, svc: Service, at: _At) -> None:
    value = plain(at.value)
    if isinstance(value, Mapping):
        value = {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    svc.set("labels", value, at)
    conv.mapped(at, "Docker labels on every instance")


def memory(conv: Converter, svc: Service, at: _At) -> None:
    svc.set("memory", plain(at.value), at)
    conv.changed(at, f"{at.field.split('.', 2)[-1]} -> memory: {plain(at.value)}")


_DEPLOY: dict[str, Rule] = {
    "mode": Custom(deploy_mode),
    "replicas": Custom(replicas),
    "labels": Dropped("labels of the swarm service, not of its containers: put them in labels:"),
    "placement": Dropped(f"{ONE_HOST}: every instance runs here"),
    "endpoint_mode": Dropped("each service answers to its name on the project's network (one address per instance)"),
    "resources": Group({
        "limits": Group({
            "memory": Custom(memory),
            "cpus": Dropped(CPU),
            "pids": Dropped("a pids limit is not set"),
            "devices": Dropped("devices are not reserved; use devices:"),
        }),
        "reservations": Dropped(f"reservations guide a scheduler among hosts: {ONE_HOST}"),
    }),
    "restart_policy": Custom(restart_policy),
    "update_config": Group({
        "parallelism": Dropped("give --rolling N to project update instead"),
        "monitor": Custom(monitor),
        "order": Custom(update_order),
        "delay": Dropped("a rollout goes on as soon as each new instance is up for min_healthy_time"),
        "failure_action": Dropped("a failed rollout stops, keeps the old instances serving, and freezes the service"),
        "max_failure_ratio": Dropped("a rollout stops at its first failed instance"),
    }),
    "rollback_config": Dropped("a failed rollout stops and keeps the old instances; project revert puts a "
                               "version back"),
}

SERVICE_FIELDS: dict[str, Rule] = {
    "image": Same(),
    "build": Dropped("has no meaning without a builder: build the image (docker compose build) and give image:"),
    "command": Custom(command),
    "entrypoint": Custom(command),
    "environment": Custom(environment),
    "env_file": Custom(env_file),
    "ports": Custom(ports),
    "expose": Noted("nothing to write: every port of an instance is reachable on the project's network"),
    "labels": Custom(labels),
    "dns": Custom(dns_list),
    "dns_search": Custom(dns_list),
    "dns_opt": Dropped("resolver options are not set"),
    "extra_hosts": Custom(extra_hosts),
    "hostname": Same(),
    "domainname": Dropped("a domain name is not set (use hostname:)"),
    "user": Same(),
    "working_dir": Same(),
    "cap_add": Same(),
    "cap_drop": Same(),
    "devices": Same(),
    "read_only": Same(),
    "tmpfs": Same(),
    "shm_size": Same(),
    "sysctls": Same(),
    "ulimits": Same(),
    "stop_signal": Same(),
    "init": Same(),
    "privileged": Same(),
    "network_mode": Custom(network_mode),
    "networks": Custom(networks),
    "depends_on": Custom(depends_on),
    "pull_policy": Custom(pull_policy),
    "restart": Custom(restart),
    "deploy": Group(_DEPLOY),
    "scale": Same(),
    "healthcheck": Custom(healthcheck),
    "stop_grace_period": Custom(stop_grace_period),
    "volumes": Custom(volumes),
    "mem_limit": Custom(memory),
    "mem_reservation": Dropped(f"a reservation guides a scheduler among hosts: {ONE_HOST}"),
    "memswap_limit": Dropped("swap is not limited apart from memory"),
    "mem_swappiness": Dropped("swappiness is not set"),
    "oom_kill_disable": Dropped("the OOM killer is not disabled", harmless=(False,)),
    "oom_score_adj": Dropped("the OOM score is not adjusted"),
    "pids_limit": Dropped("a pids limit is not set"),
    "cpus": Dropped(CPU),
    "cpu_shares": Dropped(CPU),
    "cpu_quota": Dropped(CPU),
    "cpu_period": Dropped(CPU),
    "cpuset": Dropped(CPU),
    "cpu_count": Dropped(CPU),
    "cpu_percent": Dropped(CPU),
    "cpu_rt_runtime": Dropped(CPU),
    "cpu_rt_period": Dropped(CPU),
    "blkio_config": Dropped("block I/O weights and limits are not set"),
    "container_name": Dropped("Mariposa names instances (SERVICE-ID) so a service can scale; "
                              "reach it by its service name"),
    "links": Custom(links),
    "external_links": Dropped("reach services of other projects on a shared network (networks:) by "
                              "SERVICE.PROJECT"),
    "logging": Dropped("output goes to the runtime's json-file log; read it with service logs"),
    "secrets": Dropped("secrets come with Mariposa's secrets support; until then mount the file with volumes: "
                       "(./secret.txt:/run/secrets/NAME:ro)"),
    "configs": Dropped("mount the file with volumes: (./app.conf:/app.conf:ro)"),
    "volumes_from": Dropped("give the volumes themselves (a named volume can be shared by services)"),
    "volume_driver": Dropped("named volumes use the runtime's local driver"),
    "profiles": Dropped("every service of a project runs; a profile does not hold one back"),
    "extends": Dropped("write the extended service's options in (the importer reads one file)"),
    "platform": Dropped("the image runs as the host's platform"),
    "runtime": Dropped("the runtime's default OCI runtime is used"),
    "isolation": Dropped(ONE_HOST + " running Linux"),
    "pid": Dropped("the instance has its own PID namespace"),
    "ipc": Dropped("the instance has its own IPC namespace"),
    "uts": Dropped("the instance has its own UTS namespace"),
    "userns_mode": Dropped("the runtime's user namespace setting is used"),
    "cgroup": Dropped("the runtime's cgroup namespace setting is used"),
    "cgroup_parent": Dropped("instances are in the runtime's default cgroup"),
    "security_opt": Dropped("security options (seccomp, AppArmor, no-new-privileges) are the runtime's defaults"),
    "group_add": Dropped("supplementary groups are not added (give user: NAME:GROUP)"),
    "gpus": Dropped("GPUs are not passed to instances"),
    "stdin_open": Dropped(NO_TERMINAL, harmless=(False,)),
    "tty": Dropped(NO_TERMINAL, harmless=(False,)),
    "attach": Dropped("output is kept in the runtime's log, read with service logs", harmless=(True,)),
    "mac_address": Dropped("instances get addresses from the project's network"),
    "storage_opt": Dropped("storage driver options are not set"),
    "device_cgroup_rules": Dropped("device cgroup rules are not set (use devices:)"),
    "credential_spec": Dropped("a Windows option: " + ONE_HOST + " running Linux"),
    "annotations": Dropped("OCI annotations are not set (labels: are)"),
    "develop": Dropped("compose watch's development settings"),
    "post_start": Dropped("lifecycle hooks are not run"),
    "pre_stop": Dropped("lifecycle hooks are not run"),
    "label_file": Dropped("give the labels in labels:"),
    "use_api_socket": Dropped("the runtime's API socket is not given to instances"),
    "provider": Dropped("provider services are not run"),
    "driver_opts": Dropped("network driver options are not set"),
}

TOP_LEVEL_FIELDS = ("version", "name", "services", "volumes", "networks", "secrets", "configs", "include")

_NAME_BAD = re.compile(r"[^a-z0-9-]+")


def service_name(name: str) -> str:
    """A compose service name as a manifest's (a DNS label): lowercase, '_' and '.' as '-'."""
    return _NAME_BAD.sub("-", name.lower()).strip("-")[:63].strip("-")
