"""The container options people bring from docker compose, in compose's spelling: who the process
runs as, where, with which capabilities, devices, host names, kernel settings and limits.

Some of them hand the container the host: ``privileged``, ``network_mode: host``, ``devices`` and
capabilities of the SYS_ADMIN class. Those are refused unless the daemon's configuration says
``allow_privileged = true``, because anyone who may write a manifest would otherwise be root on
the host. A stored version was judged when it was made and is never judged again by today's
configuration (``allow_privileged`` is passed as true when it is read back)."""

from __future__ import annotations

import ipaddress
import re
import signal
from collections.abc import Mapping

from mariposa.manifest.report import DOMAIN_LABEL_RE, _At, _did_you_mean, _is_int
from mariposa.manifest.shapes import _Shapes

CAPABILITIES = frozenset({
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
    "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT",
    "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "SYSLOG", "WAKE_ALARM", "ALL",
})
# Capabilities that reach past the container: the host's kernel, devices, clock, other processes'
# memory, the network stack, audit and security modules. Adding one needs allow_privileged.
POWERFUL_CAPABILITIES = frozenset({
    "ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_BOOT", "SYS_TIME", "MAC_ADMIN",
    "MAC_OVERRIDE", "DAC_READ_SEARCH", "NET_ADMIN", "BPF", "PERFMON", "SYSLOG", "LINUX_IMMUTABLE",
    "SYS_PACCT", "AUDIT_CONTROL",
})
ULIMITS = frozenset({
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
    "rtprio", "rttime", "sigpending", "stack", "as",
})
NETWORK_MODES = ("bridge", "host")
ENDPOINT_MODES = ("vip", "dnsrr")  # a Swarm service's (mariposa/swarm/); compose's deploy.endpoint_mode
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")
_SECRET_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_NUMERIC_USER_RE = re.compile(r"[0-9]+(:[0-9]+)?")
_SYSCTL_RE = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+")
_DEVICE_PERMISSIONS = re.compile(r"[rwm]{1,3}")
PRIVILEGED_HINT = "set allow_privileged = true in mariposa.toml to allow it"


class _ContainerChecks(_Shapes):
    """Checks of the compose-spelled container options; each records ``fields`` for ServiceSpec."""

    def needs_permission(self, at: _At, what: str) -> bool:
        """Whether ``what`` is refused here: it gives the container the host."""
        if self.allow_privileged:
            return False
        self.problem(at, f"{what} gives the container control of the host; {PRIVILEGED_HINT}")
        return True

    def absolute_path(self, at: _At) -> str | None:
        value = self.string(at)
        if value is not None and not value.startswith("/"):
            self.problem(at, f"must be an absolute path (starting with '/'), got {value!r}")
            return None
        return value

    def user(self, at: _At) -> None:
        value = at.value
        if _is_int(value) and value >= 0:
            self.fields["user"] = str(value)
            return
        text = self.string(at)
        if text is None:
            return
        if not _USER_RE.fullmatch(text.strip()):
            self.problem(at, f"user {text!r} must be NAME, UID, NAME:GROUP or UID:GID")
            return
        self.fields["user"] = text.strip()

    def secrets(self, at: _At) -> None:
        """Names of the project's secrets, each delivered as the file /run/secrets/NAME."""
        items = self.strings(at)
        if items is None:
            return
        names: list[str] = []
        for name, item in items:
            if not _SECRET_RE.fullmatch(name):
                self.problem(item, f"secret name {name!r} must be letters, digits, '_', '.' or '-'")
            elif name in names:
                self.problem(item, f"secret {name!r} is listed twice")
            elif self.rules.secrets is not None and name not in self.rules.secrets:
                self.problem(item, f"unknown secret {name!r}: set it first with "
                             f"'mariposa -j PROJECT secret set {name}'")
            else:
                names.append(name)
        self.fields["secrets"] = tuple(names)

    def working_dir(self, at: _At) -> None:
        value = self.absolute_path(at)
        if value is not None:
            self.fields["working_dir"] = value

    def capabilities(self, at: _At, key: str) -> None:
        names = self.strings(at)
        if names is None:
            return
        out: list[str] = []
        for text, where in names:
            name = text.strip().upper().removeprefix("CAP_")
            if name not in CAPABILITIES:
                self.problem(where, f"unknown capability {text!r}{_did_you_mean(name, sorted(CAPABILITIES))}")
            elif name in out:
                self.problem(where, f"capability {name} is given twice")
            elif key == "cap_add" and name in POWERFUL_CAPABILITIES and self.needs_permission(
                where, f"capability {name}"
            ):
                continue
            else:
                out.append(name)
        self.fields[key] = tuple(out)

    def cap_add(self, at: _At) -> None:
        self.capabilities(at, "cap_add")

    def cap_drop(self, at: _At) -> None:
        self.capabilities(at, "cap_drop")

    def devices(self, at: _At) -> None:
        items = self.strings(at)
        if items is None:
            return
        out = []
        for text, where in items:
            parts = text.strip().split(":")
            if len(parts) > 3 or not all(parts[:2]):
                self.problem(where, f"device {text!r} must be HOST_PATH[:CONTAINER_PATH[:rwm]]")
                continue
            host = parts[0]
            container = parts[1] if len(parts) > 1 else host
            permissions = parts[2] if len(parts) > 2 else "rwm"
            if not host.startswith("/") or not container.startswith("/"):
                self.problem(where, f"device {text!r}: both paths must be absolute")
            elif not _DEVICE_PERMISSIONS.fullmatch(permissions):
                self.problem(where, f"device {text!r}: permissions are some of r, w and m")
            elif not self.needs_permission(where, f"device {host}"):
                out.append(f"{host}:{container}:{permissions}")
        self.fields["devices"] = tuple(out)

    def extra_hosts(self, at: _At) -> None:
        if isinstance(at.value, Mapping):
            entries = [(str(k), e.value, e) for k, e in at.entries()]
        else:
            items = self.strings(at)
            if items is None:
                return
            entries = []
            for text, where in items:
                # compose writes host:ip, and host=ip since v2.24; an IPv6 address has colons of its own
                name, sep, address = text.partition("=") if "=" in text else text.partition(":")
                if not sep:
                    self.problem(where, f"extra host {text!r} must be HOST:IP")
                    continue
                entries.append((name.strip(), address.strip(), where))
        out = []
        for name, address, where in entries:
            if not isinstance(address, str):
                self.wrong_type(where, "an IP address")
                continue
            if not name or not all(DOMAIN_LABEL_RE.match(label) for label in name.split(".")):
                self.problem(where, f"extra host {name!r} is not a valid host name")
                continue
            try:
                out.append((name, str(ipaddress.ip_address(address.strip("[]")))))
            except ValueError:
                self.problem(where, f"extra host {name!r}: {address!r} is not an IP address")
        self.fields["extra_hosts"] = tuple(out)

    def hostname(self, at: _At) -> None:
        value = self.string(at)
        if value is None:
            return
        if len(value) > 63 or not DOMAIN_LABEL_RE.match(value) or "_" in value:
            self.problem(at, f"hostname {value!r} must be one DNS label (letters, digits and '-', 63 at most)")
            return
        self.fields["hostname"] = value

    def read_only(self, at: _At) -> None:
        self.set_flag(at, "read_only")

    def init(self, at: _At) -> None:
        self.set_flag(at, "init")

    def set_flag(self, at: _At, key: str) -> None:
        value = self.flag(at)
        if value is not None:
            self.fields[key] = value

    def privileged(self, at: _At) -> None:
        value = self.flag(at)
        if value and not self.needs_permission(at, "privileged: true"):
            self.fields["privileged"] = True

    def tmpfs(self, at: _At) -> None:
        items = [(at.value, at)] if isinstance(at.value, str) else self.strings(at)
        if items is None:
            return
        out: list[str] = []
        for text, where in items:
            path, _, options = text.strip().partition(":")
            if not path.startswith("/"):
                self.problem(where, f"tmpfs {text!r}: the path must be absolute")
            elif path in {p.partition(":")[0] for p in out}:
                self.problem(where, f"tmpfs {path} is given twice")
            else:
                out.append(f"{path}:{options}" if options else path)
        self.fields["tmpfs"] = tuple(out)

    def shm_size(self, at: _At) -> None:
        size = self.size(at, "64m")
        if size is None:
            return
        if size <= 0:
            self.problem(at, "shm_size must be above 0")
            return
        self.fields["shm_size"] = size

    def sysctls(self, at: _At) -> None:
        pairs = self.pairs(at, "sysctl", bare_ok=False)
        if pairs is None:
            return
        out: dict[str, str] = {}
        for key, value, where in pairs:
            if not _SYSCTL_RE.fullmatch(key):
                self.problem(where, f"sysctl {key!r} must be a dotted kernel parameter such as net.core.somaxconn",
                             on_key=True)
            elif key in out:
                self.problem(where, f"sysctl {key!r} is set twice", on_key=True)
            else:
                out[key] = value.strip()
        self.fields["sysctls"] = tuple(out.items())

    def ulimits(self, at: _At) -> None:
        if not isinstance(at.value, Mapping):
            self.wrong_type(at, "a mapping of limits (nofile: 65535, or nofile: {soft: 1024, hard: 65535})")
            return
        out = []
        for name, entry in at.entries():
            if name not in ULIMITS:
                self.problem(entry, f"unknown ulimit {name!r}{_did_you_mean(str(name), sorted(ULIMITS))}", on_key=True)
                continue
            if isinstance(entry.value, Mapping):
                opts = self.options(entry, ("soft", "hard"), "ulimit")
                if opts is None or set(opts) != {"soft", "hard"}:
                    if opts is not None:
                        self.problem(entry, f"ulimit {name!r} needs both 'soft' and 'hard'")
                    continue
                soft, hard = self.integer(opts["soft"], -1), self.integer(opts["hard"], -1)
            else:
                soft = hard = self.integer(entry, -1)
            if soft is None or hard is None:
                continue
            if soft > hard and hard != -1:
                self.problem(entry, f"ulimit {name!r}: soft {soft} is above hard {hard}")
                continue
            out.append((str(name), soft, hard))
        self.fields["ulimits"] = tuple(out)

    def stop_signal(self, at: _At) -> None:
        name = self.signal_name(at, "stop_signal")
        if name is not None:
            self.fields["stop_signal"] = name

    def mdata_signal(self, at: _At) -> None:
        """The signal sent to an instance's process when its live mdata files change (mariposa/mdata/)."""
        name = self.signal_name(at, "mdata_signal")
        if name is not None:
            self.fields["mdata_signal"] = name

    def signal_name(self, at: _At, what: str) -> str | None:
        """``SIGHUP``, ``HUP``, ``hup`` or a number 1-64, as ``SIGHUP`` or the number."""
        value = self.string(at)
        if value is None:
            return None
        name = value.strip().upper()
        name = name if name.startswith("SIG") or name.isdigit() else "SIG" + name
        known = {s.name for s in signal.Signals}
        if name.isdigit():
            if not 1 <= int(name) <= 64:
                self.problem(at, f"{what} {value!r} is not a signal number (1-64)")
                return None
        elif name not in known and not re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name):
            self.problem(at, f"unknown {what} {value!r}{_did_you_mean(name, sorted(known))}")
            return None
        return name

    def network_mode(self, at: _At) -> None:
        value = self.choice(at, NETWORK_MODES, "network_mode")
        if value == "host" and not self.needs_permission(at, "network_mode: host"):
            self.fields["network_mode"] = "host"

    def endpoint_mode(self, at: _At) -> None:
        """How a Swarm service is reached: one virtual IP (IPVS) or DNS round robin. Only a
        Swarm placement reads it; on the local engine it changes nothing."""
        value = self.choice(at, ENDPOINT_MODES, "endpoint_mode")
        if value is not None:
            self.fields["endpoint_mode"] = value

    def container_cross_checks(self) -> None:
        user = self.fields.get("user")
        if self.fields.get("secrets") and user is not None and not _NUMERIC_USER_RE.fullmatch(user) \
                and user not in ("root", "root:root"):
            self.problem(self.seen["user"], f"user {user!r}: a service with secrets gives its user as UID or "
                         "UID:GID (the secret files are owned by number, before the container exists)")
        if self.fields.get("network_mode") == "host":
            for port, where in self.port_ats:
                self.problem(where, f"port {port} is not published with network_mode: host; the service "
                             "listens on the host's own ports")
            for key in ("hostname", "dns", "dns_search", "extra_hosts"):
                if key in self.fields and key in self.seen:
                    self.problem(self.seen[key], f"{key!r} does not apply with network_mode: host", on_key=True)
