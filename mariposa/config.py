"""The daemon's configuration: ``/etc/mariposa/mariposa.toml``, every key with a default, every
key overridable by a ``mariposa daemon`` flag.

TOML because it is what people expect in /etc for a daemon (and Python reads it without a
dependency). A bad file is refused with its file and line, and the daemon does not start on it;
on SIGHUP a bad file is refused and the running configuration kept.
"""

from __future__ import annotations

import difflib
import grp
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from mariposa import DEFAULT_SOCKET
from mariposa.errors import MariposaError
from mariposa.manifest.rules import DEFAULT_BIND_ROOTS
from mariposa.manifest.units import parse_size
from mariposa.packages import DEFAULT_PACKAGES, Package

DEFAULT_CONFIG = "/etc/mariposa/mariposa.toml"
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
CLUSTERS = ("none", "swarm")


class ConfigError(MariposaError):
    kind = "invalid-config"


@attrs.frozen
class DaemonConfig:
    state_dir: str = "/var/lib/mariposa"
    socket: str = DEFAULT_SOCKET
    socket_mode: int = 0o660
    socket_group: str | None = None  # a group name or gid; None: the daemon's own group
    manifest_dir: str | None = "/etc/mariposa/projects"  # None: no watched directory
    delete_removed_projects: bool = False  # deleting NAME.yaml deletes project NAME
    rescan: float = 30.0  # seconds between full rescans of the manifest directory
    docker_host: str | None = None
    # "swarm": the engine at docker_host must be a Swarm manager, and the daemon checks it at start
    # (mariposa/swarm/); manifests may then use a hard '!=' affinity, which a cluster can honour.
    # Placing services on the Swarm is being built: for now every service still runs on the
    # local engine, so the setting only gates the start and the manifest check. "none": one host.
    cluster: str = "none"
    # Where the LXC driver keeps its containers, base images and networks (drivers/lxc.py);
    # None: STATE_DIR/lxc. The LXC driver is there only on a host with LXC installed.
    lxc_path: str | None = None
    # The QEMU driver's VMs, base disks and kernel (drivers/qemu.py): None is STATE_DIR/qemu and
    # /var/lib/mariposa/kernel; qemu_accel is the accelerator of VMs whose manifest says none.
    qemu_path: str | None = None
    kernel_dir: str | None = None
    qemu_accel: str = "auto"
    log_format: str = "auto"
    log_level: str = "info"
    resync: float = 10.0
    parallelism: int = 8
    stop_instances_on_exit: bool = False
    packages: Mapping[str, Package] = attrs.field(factory=lambda: dict(DEFAULT_PACKAGES))
    # privileged, network_mode: host, devices, SYS_ADMIN-class cap_add: whoever may write a
    # manifest would be root on the host, so only when the host's owner says so
    allow_privileged: bool = False
    bind_roots: tuple[str, ...] = DEFAULT_BIND_ROOTS  # host paths a bind mount may name
    # The key that encrypts secrets at rest (mariposa/vault/keys.py), outside the state directory;
    # $CREDENTIALS_DIRECTORY/mariposa-secret-key instead when systemd passes it.
    secret_key_file: str = "/etc/mariposa/secret.key"
    # Where instances' secret files live on the host (a tmpfs; mariposa/vault/delivery.py).
    run_dir: str = "/run/mariposa"
    # The public triggers' HTTP listener (mariposa/triggers/), "HOST:PORT"; None: no listener
    # (triggers still get their tokens; their URLs have no host until one is configured).
    triggers_listen: str | None = None
    # Seconds between two readings of every running instance's numbers (mariposa/metrics/); live on SIGHUP.
    metrics_interval: float = 10.0
    # A TCP listener serving GET /metrics only, "HOST:PORT", for a Prometheus (which cannot scrape
    # the unix socket); None: /metrics on the control socket only.
    metrics_listen: str | None = None
    # The remote API (api/remote.py): the control API over HTTPS for callers with a token,
    # "HOST:PORT" (e.g. "0.0.0.0:8443"); None: the unix socket only. Its certificate and key are
    # tls_cert/tls_key, or a self-signed pair made at first start in STATE_DIR/tls.
    listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # The dashboard (/ui/ on the remote listener): seconds a signed-in browser may sit idle before
    # it must sign in again.
    ui_idle_timeout: float = 1800.0
    source: str | None = None  # the file it was read from

    def socket_gid(self) -> int | None:
        if self.socket_group is None:
            return None
        if str(self.socket_group).isdigit():
            return int(self.socket_group)
        try:
            return grp.getgrnam(str(self.socket_group)).gr_gid
        except KeyError:
            raise ConfigError(f"socket_group: no group named '{self.socket_group}' on this host") from None


_KEYS = {a.name for a in attrs.fields(DaemonConfig)} - {"source"}


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line) or re.match(rf"\s*\[\s*{re.escape(key)}[\].]", line):
            return number
    return None


def _problem(path: str, text: str, key: str, message: str) -> ConfigError:
    line = _line_of(text, key.split(".")[-1] if "." in key else key)
    where = f"{path}:{line}" if line else path
    return ConfigError(f"{where}: {key}: {message}")


def _packages(path: str, text: str, raw: Any) -> dict[str, Package]:
    if not isinstance(raw, dict):
        raise _problem(path, text, "packages",
                       "expected a table of packages ([packages.NAME] memory = ..., cpus = ...)")
    found = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or set(spec) - {"memory", "cpus", "disk"} or "memory" not in spec:
            raise _problem(path, text, f"packages.{name}",
                           "a package needs 'memory' (e.g. \"512m\"), optionally 'cpus' and 'disk'")
        try:
            memory = parse_size(spec["memory"])
        except (ValueError, TypeError) as exc:
            raise _problem(path, text, f"packages.{name}", f"memory: {exc}") from None
        cpus = spec.get("cpus", 1.0)
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
            raise _problem(path, text, f"packages.{name}", "cpus must be a number above 0")
        disk = None
        if "disk" in spec:
            try:
                disk = parse_size(spec["disk"])
            except (ValueError, TypeError) as exc:
                raise _problem(path, text, f"packages.{name}", f"disk: {exc}") from None
        found[name] = Package(name, memory, float(cpus), disk)
    return found


def _bind_roots(path: str, text: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(r, str) and r.startswith("/") for r in raw):
        raise _problem(path, text, "bind_roots", 'expected a list of absolute paths, e.g. ["/srv"]')
    return tuple(os.path.normpath(r) for r in raw)


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """The configuration from ``path`` (the default file if it exists, when ``path`` is None)
    with ``overrides`` (flags given on the command line, None meaning "not given") on top."""
    values: dict[str, Any] = {}
    source, text = None, ""
    candidate = path or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    if candidate:
        try:
            text = Path(candidate).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {candidate}: {exc.strerror}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{candidate}: {exc}") from None
        source = candidate
        for key, value in raw.items():
            if key not in _KEYS:
                close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise _problem(candidate, text, key, f"unknown key{hint}")
            if key == "packages":
                value = _packages(candidate, text, value)
            elif key == "bind_roots":
                value = _bind_roots(candidate, text, value)
            values[key] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return DaemonConfig(**_checked(source or "command line", text, values), source=source)


def _checked(path: str, text: str, values: dict[str, Any]) -> dict[str, Any]:
    kinds: dict[str, type | tuple[type, ...]] = {
        "state_dir": str, "socket": str, "secret_key_file": str, "run_dir": str,
        "manifest_dir": str, "docker_host": str, "cluster": str, "lxc_path": str, "log_format": str,
        "qemu_path": str, "kernel_dir": str, "qemu_accel": str, "triggers_listen": str, "metrics_listen": str,
        "listen": str, "tls_cert": str, "tls_key": str,
        "log_level": str, "delete_removed_projects": bool, "stop_instances_on_exit": bool,
        "allow_privileged": bool,
        "resync": (int, float), "rescan": (int, float), "metrics_interval": (int, float), "parallelism": int,
        "ui_idle_timeout": (int, float),
        "socket_group": (str, int),
        "socket_mode": (str, int),
    }
    for key, kind in kinds.items():
        if key in values and (not isinstance(values[key], kind) or (kind is int and isinstance(values[key], bool))):
            expected = getattr(kind, "__name__", "a number or string")
            raise _problem(path, text, key, f"expected {expected}, got {type(values[key]).__name__}")
    if "socket_mode" in values:
        mode = values["socket_mode"]
        try:
            values["socket_mode"] = int(mode, 8) if isinstance(mode, str) else int(mode)
        except ValueError:
            raise _problem(path, text, "socket_mode", f"expected an octal mode like \"0660\", got {mode!r}") from None
    if "socket_group" in values:
        values["socket_group"] = str(values["socket_group"])
    if values.get("log_format", "auto") not in LOG_FORMATS:
        raise _problem(path, text, "log_format", f"expected one of {', '.join(LOG_FORMATS)}")
    if values.get("qemu_accel", "auto") not in ("auto", "kvm", "tcg"):
        raise _problem(path, text, "qemu_accel", "expected one of auto, kvm, tcg")
    if values.get("cluster", "none") not in CLUSTERS:
        raise _problem(path, text, "cluster", f"expected one of {', '.join(CLUSTERS)}, got {values['cluster']!r}")
    if values.get("log_level", "info") not in LOG_LEVELS:
        raise _problem(path, text, "log_level", f"expected one of {', '.join(LOG_LEVELS)}")
    for key in ("resync", "rescan", "parallelism"):
        if key in values and values[key] <= 0:
            raise _problem(path, text, key, "must be above 0")
    if "ui_idle_timeout" in values and not 60 <= values["ui_idle_timeout"] <= 7 * 86400:
        raise _problem(path, text, "ui_idle_timeout", "must be from 60 seconds to 7 days (604800)")
    if "metrics_interval" in values and not 0.1 <= values["metrics_interval"] <= 3600:
        raise _problem(path, text, "metrics_interval", "must be from 0.1 to 3600 seconds")
    for key in ("triggers_listen", "metrics_listen", "listen"):  # HOST:PORT of a TCP listener, or off
        if values.get(key):
            from mariposa.triggers.listener import parse_listen

            try:
                parse_listen(values[key], key)
            except ValueError as exc:
                raise _problem(path, text, key, str(exc)) from None
        elif key in values:
            values[key] = None
    for key in ("tls_cert", "tls_key"):
        if values.get(key) == "":
            values[key] = None
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        key = "tls_key" if values.get("tls_cert") else "tls_cert"
        raise _problem(path, text, key, "tls_cert and tls_key go together: give both, or neither for a "
                       "self-signed certificate")
    if values.get("manifest_dir") == "":
        values["manifest_dir"] = None
    return values
