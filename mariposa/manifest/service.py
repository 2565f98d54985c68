"""The options of one service that shape its instances, and the table that maps every
option name to its check."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from mariposa.manifest import interpolate
from mariposa.manifest.container import _ContainerChecks
from mariposa.manifest.env_files import parse as env_file_lines
from mariposa.manifest.networks import _NetworkChecks
from mariposa.manifest.report import (
    AFFINITY_OPS,
    AFFINITY_RE,
    COMPUTE_TYPES,
    DOCKER_ONLY,
    DOMAIN_LABEL_RE,
    ENV_KEY_RE,
    MAX_MEMORY,
    MAX_SCALE,
    MIN_MEMORY,
    PORT_RE,
    RESERVED_TAG_PREFIX,
    SERVICE_TYPES,
    _At,
    _closest,
    _did_you_mean,
    _is_int,
)
from mariposa.manifest.scheduling import _SchedulingChecks
from mariposa.manifest.shapes import _shown
from mariposa.manifest.supervision import _SupervisionChecks
from mariposa.manifest.triggers import _TriggerChecks
from mariposa.manifest.units import format_size
from mariposa.manifest.vm import _VmChecks
from mariposa.manifest.volumes import _VolumeChecks
from mariposa.manifest.webhooks import _WebhookChecks
from mariposa.model import PULL_POLICIES, PortSpec
from mariposa.packages import package_names, resolve_package

# An instance's own template variables (converge/render.py), which a Swarm config (one for every
# task of a service) cannot carry.
SWARM_INSTANCE_VARIABLE_RE = re.compile(r"\{\{[^}]*\.(placement\.instance|cns\.inst)\b")
# A live mdata key is a file name in /run/mariposa/mdata/ (never hidden, never a path).
MDATA_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


class _ServiceChecks(_ContainerChecks, _VolumeChecks, _NetworkChecks, _SupervisionChecks, _SchedulingChecks,
                     _VmChecks, _TriggerChecks, _WebhookChecks):
    """Checks the options of one service; ``run`` gives ``ServiceSpec`` fields or ``None``."""

    def run(self) -> dict[str, Any] | None:
        handlers = _OPTIONS
        for key, at in self.at.entries():
            if key is True:  # `on:` under `%YAML 1.1`, which reads a bare on as true: meant as the option
                key, at = "on", attrs.evolve(at, field=f"{self.at.field}.on")
            handler = handlers.get(key) if isinstance(key, str) else None
            if handler is None:
                self.unknown_option(key, at)
                continue
            self.seen[key] = at
            if at.value is None and key != "image":
                continue  # an empty optional option means the default
            handler(self, at)
            if key not in _TEMPLATED:
                self.no_templates(at)
        self.cross_checks()
        if self.meta_keys:
            self.fields["meta_keys"] = tuple(sorted(self.meta_keys))
        if self.secret_refs and not self.fields.get("secret_env"):
            for at in self.secret_refs:
                self.problem(at, "{{ .secret.NAME }} in environment needs 'secret_env: true' on the service: "
                             "environment values are visible to anyone who can inspect the container")
        return None if self.failed else self.fields

    def no_templates(self, at: _At) -> None:
        """A template anywhere but where the spec allows one is refused where it is written
        (``healthchecks`` allow one in ``path`` and ``command`` only)."""
        value = at.value
        if isinstance(value, str):
            if "{{" in value:
                self.problem(at, f"templates ({{{{ ... }}}}) are only allowed in {interpolate.WHERE_ALLOWED}")
        elif isinstance(value, Mapping):
            for key, entry in at.entries():
                if not (at.field.startswith(f"{self.at.field}.healthchecks[") and key in ("path", "command")):
                    self.no_templates(entry)
        elif isinstance(value, list):
            for item in at.items():
                self.no_templates(item)

    def unknown_option(self, key: Any, at: _At) -> None:
        familiar = _FAMILIAR_NAMES.get(key) if isinstance(key, str) else None
        guess = familiar or _closest(key, _OPTIONS)
        if guess:
            self.suggested.add(guess)
        hint = f"; did you mean {guess!r}?" if guess else ""
        self.problem(at, f"unknown option {key!r}{hint}", on_key=True)

    def cross_checks(self) -> None:
        if "labels" in self.seen and "tags" in self.seen:
            later = max(self.seen["labels"], self.seen["tags"], key=lambda a: a.key_pos)
            self.problem(later, "give either 'tags' or its alias 'labels', not both", on_key=True)
        compute = self.fields.get("compute_type", "docker")
        if "image" not in self.seen and "image" not in self.suggested and compute != "manta":
            self.problem(self.at, "'image' is required", on_key=True)
        if self.chosen_package is not None:
            self.fields.setdefault("memory", self.chosen_package.memory)  # explicit memory wins
            self.fields["cpus"] = self.chosen_package.cpus
            if self.chosen_package.disk is not None and compute == "kvm":
                self.fields.setdefault("disk", self.chosen_package.disk)  # explicit disk wins
        scale = self.fields.get("scale")
        if scale is not None and scale > 1:
            for port, at in self.port_ats:
                if port.host is not None:
                    message = f"host port {port.host} can only be bound by one instance"
                    self.problem(at, f"{message}, but scale is {scale}")
        self.container_cross_checks()
        if compute == "infrastructure":
            self.lx_cross_checks()
        self.vm_cross_checks(compute)
        self.network_cross_checks()
        if self.env_from_files:
            # an env file's text is literal: its '{{' is no template (rendering gives it back as is)
            literal = {k: v.replace("{{", "{{{{") for k, v in self.env_from_files.items()}
            merged = {**literal, **dict(self.fields.get("environment", ()))}
            self.fields["environment"] = tuple(merged.items())
        self.scheduling_cross_checks()
        self.trigger_cross_checks()
        if self.rules.cluster == "swarm" and compute == "docker" \
                and self.fields.get("service_type", "continuous") == "continuous":
            self.swarm_mdata_cross_checks()

    def swarm_mdata_cross_checks(self) -> None:
        """A cluster service's mdata files are Swarm configs (swarm/converge.py): one per file
        for the whole service, and a changed one reaches the tasks by a rolling update. So there
        is no process to signal in place, and no file per instance: refused here, by name."""
        if "mdata_signal" in self.seen:
            self.problem(self.seen["mdata_signal"], "mdata_signal cannot be honoured on the Swarm (cluster = "
                         "\"swarm\"): a changed mdata file is a new Swarm config, which reaches the tasks by a "
                         "rolling update (new tasks read it when they start), never in place with a signal",
                         on_key=True)
        for key, text in self.fields.get("mdata", ()):
            if SWARM_INSTANCE_VARIABLE_RE.search(text):
                self.problem(self.seen["mdata"], f"mdata key {key!r} names an instance's variable; on the Swarm "
                             "(cluster = \"swarm\") a file is one config for all of the service's tasks, so "
                             "it can name the project's, the service's and meta, not an instance's")

    def lx_cross_checks(self) -> None:
        """An LXC system container has no image entrypoint to replace and no Engine to publish
        ports or set these container options: each is refused by name (drivers/lxc.py), never
        silently ignored."""
        written = self.seen["compute_type"].value
        for key in DOCKER_ONLY:
            if key in self.seen:
                self.problem(self.seen[key], f"{key!r} is a Docker option, not supported with compute_type "
                                             f"{written!r} (an LXC system container)", on_key=True)

    # -- shared shapes ----------------------------------------------------------------------------

    def service_type(self, at: _At) -> None:
        value = self.choice(at, SERVICE_TYPES, "service_type")
        if value is None:
            return
        self.fields["service_type"] = value

    def compute_type(self, at: _At) -> None:
        value = self.choice(at, COMPUTE_TYPES, "compute_type")
        if value is None:
            return
        self.fields["compute_type"] = COMPUTE_TYPES[value]
        if COMPUTE_TYPES[value] not in ("docker", "infrastructure", "kvm"):
            self.problem(at, f"compute_type {value!r} is not supported yet (docker; infrastructure, lx or "
                             "smartmachine on LXC; kvm, vm or hvm on QEMU)")

    def image(self, at: _At) -> None:
        value = self.string(at)
        if value is None:
            return
        if any(c.isspace() for c in value):
            self.problem(at, f"image {value!r} must not contain whitespace")
            return
        self.fields["image"] = value

    def pull(self, at: _At) -> None:
        """When a version is made, whether the image is pulled: compose's ``pull_policy`` words."""
        value = at.value
        if value is False:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        if not isinstance(value, str):
            self.wrong_type(at, f"one of {', '.join(PULL_POLICIES)}")
            return
        if value not in PULL_POLICIES:
            self.problem(at, f"unknown pull policy {value!r}{_did_you_mean(value, PULL_POLICIES)}"
                             f" (expected one of {', '.join(PULL_POLICIES)})")
            return
        self.fields["pull"] = value

    def package(self, at: _At) -> None:
        value = self.string(at)
        if value is None:
            return
        package = resolve_package(value, self.packages)
        if package is None:
            names = package_names(self.packages)
            hint = _did_you_mean(value, names) or f" (known packages: {', '.join(names)})"
            self.problem(at, f"unknown package {value!r}{hint}")
            return
        self.fields["package"] = value
        self.chosen_package = package

    def memory(self, at: _At) -> None:
        size = self.size(at)
        if size is None:
            return
        if size < MIN_MEMORY:
            hint = f" (did you mean {at.value}m?)" if _is_int(at.value) else ""
            minimum = format_size(MIN_MEMORY)
            self.problem(at, f"memory must be at least {minimum}, got {size} bytes{hint}")
            return
        if size > MAX_MEMORY:
            shown = _shown(size) + (" bytes" if size < 10**18 else "")
            self.problem(at, f"memory must be at most {format_size(MAX_MEMORY)}, got {shown}")
            return
        self.fields["memory"] = size

    def tags(self, at: _At) -> None:
        pairs = self.pairs(at, "tag", bare_ok=True)
        if pairs is None:
            return
        tags: dict[str, str] = {}
        for key, value, where in pairs:
            if not key:
                self.problem(where, "tag names must not be empty", on_key=True)
            elif key.lower().startswith(RESERVED_TAG_PREFIX):
                reserved = f"names starting with {RESERVED_TAG_PREFIX!r} are reserved for Mariposa"
                self.problem(where, f"tag {key!r}: {reserved}", on_key=True)
            elif key in tags:
                self.problem(where, f"tag {key!r} is given twice", on_key=True)
            elif self.template(where, value):
                tags[key] = value
        self.fields["tags"] = tuple(tags.items())

    def affinity(self, at: _At) -> None:
        rules = self.strings(at)
        if rules is None:
            return
        out = []
        for text, where in rules:
            match = AFFINITY_RE.match(text.strip())
            if not match or not match["key"].strip() or not match["value"].strip():
                ops = ", ".join(AFFINITY_OPS)
                self.problem(
                    where,
                    f"invalid affinity rule {text!r}; expected <key><op><value>, op one of {ops}",
                )
            elif match["op"] == "!=" and self.rules.cluster == "none":
                self.problem(
                    where,
                    f"affinity rule {text!r} (hard anti-affinity) cannot be honoured on a single"
                    " host; use '!=~' for a soft rule (or run the daemon with cluster = \"swarm\")",
                )
            else:
                out.append(f"{match['key'].strip()}{match['op']}{match['value'].strip()}")
        self.fields["affinity"] = tuple(out)

    def ports(self, at: _At) -> None:
        items = self.list_of(at, "ports (8080, \"8000:80\", \"53/udp\")")
        if items is None:
            return
        ports: list[tuple[PortSpec, _At]] = []
        for item in items:
            port = self.port(item)
            if port is None:
                continue
            if any(p == port for p, _ in ports):
                self.problem(item, f"port {port} is given twice")
            elif port.host is not None and (port.host, port.protocol) in {
                (p.host, p.protocol) for p, _ in ports
            }:
                self.problem(item, f"host port {port.host}/{port.protocol} is bound twice")
            else:
                ports.append((port, item))
        self.fields["ports"] = tuple(p for p, _ in ports)
        self.port_ats = ports

    def port(self, at: _At) -> PortSpec | None:
        if _is_int(at.value):
            container, host, protocol = int(at.value), None, "tcp"
        elif isinstance(at.value, str):
            match = PORT_RE.fullmatch(at.value.strip())
            if not match:
                self.problem(
                    at,
                    f"invalid port {at.value!r}; expected CONTAINER or HOST:CONTAINER,"
                    " optionally with /tcp or /udp",
                )
                return None
            container = int(match["container"])
            host = int(match["host"]) if match["host"] is not None else None
            protocol = (match["protocol"] or "tcp").lower()
            if protocol not in ("tcp", "udp"):
                self.problem(
                    at,
                    f"invalid protocol {match['protocol']!r} in port {at.value!r};"
                    " expected tcp or udp",
                )
                return None
        else:
            self.wrong_type(at, "a port number or a string such as \"8000:80/tcp\"")
            return None
        for number in (container, host):
            if number is not None and not 1 <= number <= 65535:
                self.problem(at, f"port {_shown(number)} is out of range 1-65535")
                return None
        return PortSpec(container=container, host=host, protocol=protocol)

    def dns(self, at: _At) -> None:
        servers = self.strings(at)
        if servers is None:
            return
        out = []
        for text, where in servers:
            try:
                out.append(str(ipaddress.ip_address(text.strip())))
            except ValueError:
                self.problem(where, f"{text!r} is not an IP address")
        self.fields["dns"] = tuple(out)

    def dns_search(self, at: _At) -> None:
        domains = self.strings(at)
        if domains is None:
            return
        out = []
        for text, where in domains:
            name = text.strip().removesuffix(".")
            labels_ok = all(DOMAIN_LABEL_RE.fullmatch(label) for label in name.split("."))
            if len(name) > 253 or not labels_ok:
                self.problem(where, f"{text!r} is not a valid domain name")
            else:
                out.append(name)
        self.fields["dns_search"] = tuple(out)

    def environment(self, at: _At) -> None:
        pairs = self.pairs(at, "environment", bare_ok=False)
        if pairs is None:
            return
        env: dict[str, str] = {}
        for key, value, where in pairs:
            if not ENV_KEY_RE.fullmatch(key):
                self.problem(where, f"invalid environment variable name {key!r}", on_key=True)
            elif key in env:
                self.problem(where, f"environment variable {key!r} is set twice", on_key=True)
            elif self.template(where, value, field="environment"):
                env[key] = value
        self.fields["environment"] = tuple(env.items())

    def env_file(self, at: _At) -> None:
        """Variables from files read beside the manifest (manifest/env_files.py); `environment`
        overrides them, as in compose."""
        entries = [at] if isinstance(at.value, (str, Mapping)) else self.list_of(at, "env files")
        found: dict[str, str] = {}
        for entry in entries or ():
            required = True
            if isinstance(entry.value, Mapping):
                opts = self.options(entry, ("path", "required"), "env_file") or {}
                if "required" in opts:
                    required = bool(self.flag(opts["required"]))
                if "path" not in opts:
                    self.problem(entry, "an env_file entry needs a 'path'")
                    continue
                entry = opts["path"]
            path = self.string(entry)
            if path is None:
                continue
            text = (self.env_files or {}).get(path)
            if text is None:
                self.problem(entry, f"env_file {path!r} was not read: give the manifest through the mariposa CLI "
                             "or the watched directory, which read it beside the manifest")
            elif isinstance(text, Mapping):
                if required:
                    self.problem(entry, f"cannot read env_file {path!r}: {text['error']}")
            else:
                for number, key, value, problem in env_file_lines(text):
                    if problem is not None:
                        self.problem(entry, f"env_file {path!r} line {number}: {problem}")
                    elif value is not None:
                        found[key] = value
        self.env_from_files = found

    def mdata(self, at: _At) -> None:
        """Live metadata (mariposa/mdata/): each key a file in /run/mariposa/mdata/, its value
        rendered from the current meta whenever it changes, so a key must be a file name."""
        pairs = self.pairs(at, "mdata", bare_ok=True)
        if pairs is None:
            return
        found: dict[str, str] = {}
        for key, value, where in pairs:
            if not MDATA_KEY_RE.fullmatch(key) or key in (".", ".."):
                self.problem(where, f"invalid mdata key {key!r}: a file name of letters, digits, '.', '_' and '-' "
                             "(not starting with '.'), at most 255 characters", on_key=True)
            elif key in found:
                self.problem(where, f"mdata key {key!r} is set twice", on_key=True)
            elif self.template(where, value, fixed=False, field="mdata"):
                found[key] = value
        self.fields["mdata"] = tuple(found.items())

    def entrypoint(self, at: _At) -> None:
        argv = self.argv(at)
        if argv is not None:
            self.fields["entrypoint"] = argv

    def command(self, at: _At) -> None:
        argv = self.argv(at)
        if argv is not None:
            self.fields["command"] = argv

    def containerpilot(self, at: _At) -> None:
        if isinstance(at.value, bool):
            self.unsupported(at, "'containerpilot' is not supported yet")
            return
        opts = self.options(at, ("network", "port"), "containerpilot")
        if opts is None:
            return
        if "network" in opts:
            self.string(opts["network"])
        if "port" in opts:
            self.integer(opts["port"], 1, 65535)
        self.unsupported(at, "'containerpilot' is not supported yet")

    def scale(self, at: _At) -> None:
        value = self.integer(at, 0, MAX_SCALE)
        if value is not None:
            self.fields["scale"] = value


# Names people bring from docker-compose and friends that difflib would not match.
_FAMILIAR_NAMES = {
    "env": "environment",
    "cmd": "command",
    "mem": "memory",
    "mem_limit": "memory",
    "label": "tags",
    "replicas": "scale",
    "healthcheck": "healthchecks",
    "stop_grace_period": "stop",
    "restart_policy": "restart",
    "workdir": "working_dir",
    "capabilities": "cap_add",
    "net": "network_mode",
    "pull_policy": "pull",
}

# Options whose values may hold templates (manifest/interpolate.py); healthchecks in path and command.
# (healthchecks are walked by no_templates, which skips their path and command)
_TEMPLATED = frozenset({"environment", "command", "entrypoint", "tags", "labels", "mdata"})

_OPTIONS: dict[str, Callable[[_ServiceChecks, _At], None]] = {
    "service_type": _ServiceChecks.service_type,
    "compute_type": _ServiceChecks.compute_type,
    "image": _ServiceChecks.image,
    "pull": _ServiceChecks.pull,
    "package": _ServiceChecks.package,
    "memory": _ServiceChecks.memory,
    "labels": _ServiceChecks.tags,
    "tags": _ServiceChecks.tags,
    "affinity": _ServiceChecks.affinity,
    "ports": _ServiceChecks.ports,
    "dns": _ServiceChecks.dns,
    "dns_search": _ServiceChecks.dns_search,
    "environment": _ServiceChecks.environment,
    "env_file": _ServiceChecks.env_file,
    "mdata": _ServiceChecks.mdata,
    "mdata_signal": _ServiceChecks.mdata_signal,
    "entrypoint": _ServiceChecks.entrypoint,
    "command": _ServiceChecks.command,
    "containerpilot": _ServiceChecks.containerpilot,
    "healthchecks": _ServiceChecks.healthchecks,
    "restart": _ServiceChecks.restart,
    "stop": _ServiceChecks.stop,
    "triggers": _ServiceChecks.triggers,
    "autoscale": _ServiceChecks.autoscale,
    "webhooks": _ServiceChecks.webhooks,
    # scheduled and event services (manifest/scheduling.py)
    "schedule": _ServiceChecks.schedule,
    "time_zone": _ServiceChecks.time_zone,
    "concurrency": _ServiceChecks.concurrency,
    "catch_up": _ServiceChecks.catch_up,
    "catch_up_limit": _ServiceChecks.catch_up_limit,
    "starting_deadline": _ServiceChecks.starting_deadline,
    "timeout": _ServiceChecks.timeout,
    "retries": _ServiceChecks.retries,
    "history": _ServiceChecks.history,
    "queue_limit": _ServiceChecks.queue_limit,
    "on": _ServiceChecks.on,
    "scale": _ServiceChecks.scale,
    "min_healthy_time": _ServiceChecks.min_healthy_time,
    "progress_deadline": _ServiceChecks.progress_deadline,
    "on_meta_change": _ServiceChecks.on_meta_change,
    "secret_env": _ServiceChecks.secret_env,
    # docker compose's container options, in its spelling (manifest/container.py)
    "user": _ServiceChecks.user,
    "working_dir": _ServiceChecks.working_dir,
    "cap_add": _ServiceChecks.cap_add,
    "cap_drop": _ServiceChecks.cap_drop,
    "devices": _ServiceChecks.devices,
    "extra_hosts": _ServiceChecks.extra_hosts,
    "hostname": _ServiceChecks.hostname,
    "read_only": _ServiceChecks.read_only,
    "tmpfs": _ServiceChecks.tmpfs,
    "shm_size": _ServiceChecks.shm_size,
    "sysctls": _ServiceChecks.sysctls,
    "ulimits": _ServiceChecks.ulimits,
    "stop_signal": _ServiceChecks.stop_signal,
    "init": _ServiceChecks.init,
    "network_mode": _ServiceChecks.network_mode,
    "endpoint_mode": _ServiceChecks.endpoint_mode,
    "privileged": _ServiceChecks.privileged,
    "volumes": _ServiceChecks.volumes,
    "networks": _ServiceChecks.networks,
    "depends_on": _ServiceChecks.depends_on,
    "secrets": _ServiceChecks.secrets,
    # virtual machines (manifest/vm.py)
    "accel": _ServiceChecks.accel,
    "boot_timeout": _ServiceChecks.boot_timeout,
    "machine": _ServiceChecks.machine,
    "disk": _ServiceChecks.disk,
    "kernel": _ServiceChecks.kernel,
    "initrd": _ServiceChecks.initrd,
    "cmdline": _ServiceChecks.cmdline,
}
