"""The Docker Engine driver, spoken over the Engine's HTTP API on its unix socket.

Why the raw API and not docker-py: docker-py is synchronous and would need a worker thread per
call; httpx runs natively under trio (through anyio), so hundreds of creates, stops and one
never-ending event stream share one connection pool in the daemon's own nursery.

Ownership is carried by labels, never by names: every container and network gets
``io.mariposa.owner=<owner>`` and every listing filters on it server-side, so several daemons
(tests run many side by side) share one Engine without ever seeing each other's instances.

Docker's own restart policy is always ``no``: restarting is the reconciler's job, and two
supervisors fighting over one container is how restart storms start.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import attrs
import httpx
import structlog
import trio

from mariposa.bridges import DOCKER_BRIDGE_OPTION, Bridges, docker_range, gateway, project_network
from mariposa.drivers import rawget
from mariposa.drivers.base import (
    MAX_LOG_LINE,
    AuthFailed,
    DriverError,
    DriverEvent,
    ImageNotFound,
    LogLine,
    Progress,
    PullFailed,
    PullProgress,
    RegistryAuth,
    RuntimeUnavailable,
    VolumeInUse,
    identity_from_labels,
)
from mariposa.drivers.docker_stats import DockerStats
from mariposa.model import (
    LABEL_INSTANCE,
    LABEL_NETWORK,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_PROJECT_NAME,
    LABEL_SERVICE,
    LABEL_VOLUME,
    CreateRequest,
    Instance,
    InstanceState,
    InstanceStats,
    MountSpec,
    NetworkRef,
    PublishedPort,
    ServiceSpec,
    VolumeInfo,
    volume_name,
)

log = structlog.get_logger()

API_VERSION = "v1.41"  # Debian's Engine is 20.10; pinning keeps response shapes stable.
DEFAULT_SOCKET = "/var/run/docker.sock"
CALL_TIMEOUT = 60.0
STOP_GRACE = 60.0  # on top of the stop timeout, for Docker's own kill-and-wait
# Below this length an environment value is too short to be a secret worth redacting, and
# redacting it would shred ordinary words in error messages.
_REDACT_MIN = 4

_EXITED = re.compile(r"^Exited \((-?\d+)\)")

# Docker's states in the protocol's vocabulary. "restarting" cannot last (RestartPolicy is always
# "no"); "dead" is a container the Engine failed to remove or clean up: it exited, badly.
_STATES = {
    "created": InstanceState.CREATING,
    "running": InstanceState.RUNNING,
    "restarting": InstanceState.RUNNING,
    "paused": InstanceState.PAUSED,
    "removing": InstanceState.REMOVING,
    "exited": InstanceState.EXITED,
    "dead": InstanceState.EXITED,
}
DEAD_EXIT_CODE = -1  # a dead container whose own exit code says nothing of failure still failed

# How far back a resumed subscription asks the Engine to replay. The Engine stamps an event
# before it takes the lock that orders its buffer, so events a little apart in time can arrive
# a little out of order; replaying a margin and dropping what was delivered (by key) loses none.
REPLAY_MARGIN_NS = 1_000_000_000
CURSOR_KEYS = 512  # at most this many delivered events are remembered in a cursor


def _parse_docker_host(docker_host: str | None) -> tuple[str, str | None]:
    """(base url, unix socket path or None); DOCKER_HOST is honoured like the docker CLI does."""
    host = docker_host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if host.startswith("/"):
        host = f"unix://{host}"
    if host.startswith("unix://"):
        return f"http://docker/{API_VERSION}", host[len("unix://") :]
    if host.startswith(("tcp://", "http://")):
        return f"http://{host.split('://', 1)[1].rstrip('/')}/{API_VERSION}", None
    raise ValueError(f"unsupported DOCKER_HOST {host!r}: use unix:///path or tcp://host:port")


def engine_client(docker_host: str | None, max_connections: int = 32) -> httpx.AsyncClient:
    """An async client of the Engine API at ``docker_host`` (unix socket or tcp://), its base URL
    pinned to ``API_VERSION``: the Docker driver's, and the Swarm client's (mariposa/swarm/)."""
    base_url, socket = _parse_docker_host(docker_host)
    transport = httpx.AsyncHTTPTransport(
        uds=socket,
        verify=False,  # plain HTTP only (unix socket or tcp://): no CA bundle to load at every start
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2),
    )
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=httpx.Timeout(CALL_TIMEOUT))


def engine_where(docker_host: str | None) -> str:
    """How messages name the Engine at ``docker_host``."""
    base_url, socket = _parse_docker_host(docker_host)
    return f"unix://{socket}" if socket else base_url


def _message(resp: httpx.Response) -> str:
    try:
        msg = resp.json().get("message")
    except (ValueError, AttributeError):
        msg = None
    return (msg or resp.text or resp.reason_phrase or f"HTTP {resp.status_code}").strip()


def _redact(text: str, spec: ServiceSpec | None) -> str:
    """Environment values may be secrets; none may reach an error message or a log line."""
    if spec is None:
        return text
    for _, value in sorted(spec.environment, key=lambda kv: -len(kv[1])):
        if len(value) >= _REDACT_MIN:
            text = text.replace(value, "<redacted>")
    return text


def _filters(**filters: Iterable[str]) -> dict[str, str]:
    return {"filters": json.dumps({k: list(v) for k, v in filters.items()})}


def _parse_created(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        # RFC 3339 with nanoseconds; Python 3.11 only takes up to microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return 0.0


def _published(entries: Iterable[Mapping[str, Any]]) -> tuple[PublishedPort, ...]:
    """Docker lists a binding once per address family; keep one, preferring IPv4's.

    The IPv6 twin is dropped by container port, not by host port: Engine 20.10 can bind an
    ephemeral port on 0.0.0.0 and a different one on ::, and one binding must stay one port.
    An IPv6 entry is kept only where the container port has no IPv4 binding at all.
    """
    ports = [
        PublishedPort(
            container=int(e["PrivatePort"]),
            protocol=e.get("Type", "tcp"),
            host_ip=e.get("IP", ""),
            host_port=int(e["PublicPort"]),
        )
        for e in entries
        if e.get("PublicPort")
    ]
    with_ipv4 = {(p.container, p.protocol) for p in ports if ":" not in p.host_ip}
    kept = {
        (p.container, p.protocol, p.host_port): p
        for p in ports
        if ":" not in p.host_ip or (p.container, p.protocol) not in with_ipv4
    }
    return tuple(sorted(kept.values(), key=lambda p: (p.container, p.protocol, p.host_port)))


def _inspect_ports(ports: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Inspect's {"80/tcp": [{"HostIp", "HostPort"}]} in the list API's shape."""
    out = []
    for key, bindings in (ports or {}).items():
        container, _, proto = key.partition("/")
        for b in bindings or ():
            if b.get("HostPort"):
                out.append(
                    {
                        "IP": b.get("HostIp", ""),
                        "PrivatePort": int(container),
                        "PublicPort": int(b["HostPort"]),
                        "Type": proto or "tcp",
                    }
                )
    return out


def _state(docker_state: str, exit_code: int | None) -> tuple[InstanceState, int | None]:
    """(state, exit code) in the protocol's terms; the exit code only for an exited instance."""
    state = _STATES.get(docker_state, InstanceState.UNKNOWN)
    if state is not InstanceState.EXITED:
        return state, None
    if docker_state == "dead" and not exit_code:
        return state, DEAD_EXIT_CODE
    return state, exit_code


def network_name(project_id: str, project_name: str) -> str:
    return f"mariposa-{project_name}-{project_id[:8]}"


def _instance(
    *,
    labels: Mapping[str, str],
    runtime_id: str,
    name: str,
    state: str,
    image: str,
    created: Any,
    networks: Mapping[str, Any] | None,
    ports: Iterable[Mapping[str, Any]],
    exit_code: int | None,
) -> Instance | None:
    """One builder for both the list and the inspect shapes, so they can never disagree."""
    found = identity_from_labels(labels)
    if found is None:
        return None
    mapped, exit_code = _state(state, exit_code)
    found.setdefault("created", _parse_created(created))
    found["image"] = found["image"] or image
    net = (networks or {}).get(network_name(found["project_id"], found["project_name"]))
    address = (net or {}).get("IPAddress") or None
    if address is None and "host" in (networks or {}) and mapped == InstanceState.RUNNING:
        address = "127.0.0.1"  # network_mode: host: it listens on the host's own interfaces
    return Instance(
        **found,
        runtime_id=runtime_id,
        name=name.lstrip("/"),
        state=mapped,
        exit_code=exit_code,
        address=address,
        ports=_published(ports),
        compute_type=DockerDriver.compute_type,
    )


def _from_list(entry: Mapping[str, Any]) -> Instance | None:
    state = entry.get("State", "")
    exit_code = None
    if state in ("exited", "dead"):
        m = _EXITED.match(entry.get("Status", ""))
        exit_code = int(m.group(1)) if m else None
    names = entry.get("Names") or [entry["Id"][:12]]
    return _instance(
        labels=entry.get("Labels") or {},
        runtime_id=entry["Id"],
        name=names[0],
        state=state,
        image=entry.get("Image", ""),
        created=entry.get("Created"),
        networks=(entry.get("NetworkSettings") or {}).get("Networks"),
        ports=entry.get("Ports") or (),
        exit_code=exit_code,
    )


def _from_inspect(data: Mapping[str, Any]) -> Instance | None:
    st = data.get("State") or {}
    state = st.get("Status", "")
    settings = data.get("NetworkSettings") or {}
    return _instance(
        labels=(data.get("Config") or {}).get("Labels") or {},
        runtime_id=data["Id"],
        name=data.get("Name", ""),
        state=state,
        image=(data.get("Config") or {}).get("Image", ""),
        created=data.get("Created"),
        networks=settings.get("Networks"),
        ports=_inspect_ports(settings.get("Ports")),
        exit_code=st.get("ExitCode") if state in ("exited", "dead") else None,
    )


SECRETS_TARGET = "/run/secrets"
MDATA_TARGET = "/run/mariposa/mdata"


def container_config(req: CreateRequest, network: str, responder: str | None = None) -> dict[str, Any]:
    """The body of POST /containers/create; public so tests can check it without a daemon.
    ``responder``: the address of the project's DNS responder (mariposa/dns/), when the network is
    on a bridge of Mariposa's; Docker's embedded DNS forwards to it what it does not know, which is
    then everything but instance names: the service's name is the responder's to answer, as it
    knows which instances are ready and which are on other runtimes. The manifest's ``dns``
    servers answer the rest (the responder forwards to them)."""
    spec = req.spec
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in spec.ports:
        key = f"{p.container}/{p.protocol}"
        exposed[key] = {}
        # HostPort "" lets Docker pick a free ephemeral port, so replicas never collide.
        bindings.setdefault(key, []).append(
            {"HostIp": "", "HostPort": "" if p.host is None else str(p.host)}
        )
    host_network = spec.network_mode == "host"
    host_config: dict[str, Any] = {
        "NetworkMode": "host" if host_network else network,
        "RestartPolicy": {"Name": "no"},
        "PortBindings": bindings,
        # A tiny init as PID 1 forwards SIGTERM and reaps zombies: without it a process that
        # never installed a handler (busybox httpd, most shells) ignores SIGTERM and every
        # stop waits out the whole timeout. On by default; `init: false` for images with their own.
        "Init": spec.init,
        **_host_options(spec, req.project_name),
    }
    if responder and not host_network:
        # the responder first; the manifest's servers, which it forwards the world's names to,
        # after it: Docker asks them while the daemon (and so the responder) is down
        host_config["Dns"] = [responder, *spec.dns]
    elif spec.dns:
        host_config["Dns"] = list(spec.dns)
    if spec.dns_search:
        host_config["DnsSearch"] = list(spec.dns_search)
    if spec.memory:
        host_config["Memory"] = int(spec.memory)
    if spec.cpus:
        host_config["NanoCpus"] = int(spec.cpus * 1e9)
    if req.secrets_dir is not None:
        # the instance's secret files (vault/delivery.py): only this path shows in `docker inspect`
        host_config.setdefault("Mounts", []).append(
            {"Type": "bind", "Source": req.secrets_dir, "Target": SECRETS_TARGET, "ReadOnly": True})
    if req.mdata_dir is not None:
        # live mdata (mdata/files.py): the directory, not its files, so each swap shows at once
        host_config.setdefault("Mounts", []).append(
            {"Type": "bind", "Source": req.mdata_dir, "Target": MDATA_TARGET, "ReadOnly": True})
    body: dict[str, Any] = {
        "Image": spec.image_id or spec.image,
        "Env": [f"{k}={v}" for k, v in spec.environment],
        "Labels": req.labels(),
        "ExposedPorts": exposed,
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {} if host_network else {
            network: {"Aliases": [req.name] if responder else [spec.name, req.name]}}},
    }
    for key, value in (("User", spec.user), ("WorkingDir", spec.working_dir), ("Hostname", spec.hostname),
                       ("StopSignal", spec.stop_signal)):
        if value is not None:
            body[key] = value
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
    if spec.entrypoint is not None:
        # A non-null empty list tells the Engine to drop the image's entrypoint.
        body["Entrypoint"] = list(spec.entrypoint)
    if spec.stop_timeout is not None:
        body["StopTimeout"] = int(spec.stop_timeout)
    return body


def _host_options(spec: ServiceSpec, project_name: str) -> dict[str, Any]:
    """HostConfig for the compose-spelled options a service sets (manifest/container.py);
    options left at their default are left out, so the Engine's own defaults apply."""
    out: dict[str, Any] = {}
    if spec.cap_add:
        out["CapAdd"] = [c if c == "ALL" else f"CAP_{c}" for c in spec.cap_add]
    if spec.cap_drop:
        out["CapDrop"] = [c if c == "ALL" else f"CAP_{c}" for c in spec.cap_drop]
    if spec.devices:
        out["Devices"] = [
            {"PathOnHost": host, "PathInContainer": container, "CgroupPermissions": permissions}
            for host, container, permissions in (d.split(":") for d in spec.devices)
        ]
    if spec.extra_hosts:
        out["ExtraHosts"] = [f"{name}:{address}" for name, address in spec.extra_hosts]
    if spec.read_only:
        out["ReadonlyRootfs"] = True
    if spec.tmpfs:
        out["Tmpfs"] = {path: options for path, _, options in (t.partition(":") for t in spec.tmpfs)}
    if spec.shm_size:
        out["ShmSize"] = int(spec.shm_size)
    if spec.sysctls:
        out["Sysctls"] = dict(spec.sysctls)
    if spec.ulimits:
        out["Ulimits"] = [{"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in spec.ulimits]
    if spec.privileged:
        out["Privileged"] = True
    if spec.volumes:
        out["Mounts"] = [_mount(m, project_name) for m in spec.volumes]
    return out


def _mount(m: MountSpec, project_name: str) -> dict[str, Any]:
    if m.type == "tmpfs":
        return {"Type": "tmpfs", "Target": m.target, "ReadOnly": m.read_only,
                **({"TmpfsOptions": {"SizeBytes": m.size}} if m.size else {})}
    assert m.source is not None  # volume and bind mounts name one (manifest/volumes.py)
    source = volume_name(project_name, m.source) if m.type == "volume" else m.source
    return {"Type": m.type, "Source": source, "Target": m.target, "ReadOnly": m.read_only}


@attrs.define
class _Demux:
    """Splits Docker's multiplexed attach stream (8-byte header: stream, 0, 0, 0, size)."""

    buf: bytearray = attrs.field(factory=bytearray)
    out: bytearray = attrs.field(factory=bytearray)

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while len(self.buf) >= 8:
            size = struct.unpack(">I", self.buf[4:8])[0]
            if len(self.buf) < 8 + size:
                return
            self.out += self.buf[8 : 8 + size]
            del self.buf[: 8 + size]

    def take(self) -> bytes:
        """The payload demultiplexed so far, and forget it."""
        out = bytes(self.out)
        self.out.clear()
        return out


@attrs.define
class _LogLines:
    """Docker's log stream (asked with ``timestamps=1``) as ``LogLine``s. Each frame of the
    multiplexed stream is one log message, "TIMESTAMP text"; a line the Engine split (its logger
    cuts at 16 KiB) comes as several messages without a newline, so each stream (stdout, stderr)
    joins its own pieces, up to ``MAX_LOG_LINE``, and a line keeps its first piece's time."""

    buf: bytearray = attrs.field(factory=bytearray)
    partial: dict[int, tuple[float, bytearray]] = attrs.field(factory=dict)  # by stream: (when, text so far)
    seconds: dict[bytes, float] = attrs.field(factory=dict)  # "2026-11-26T13:55:39" -> epoch seconds

    def feed(self, chunk: bytes | bytearray) -> list[LogLine]:
        buf = self.buf
        buf += chunk
        out: list[LogLine] = []
        pos, size_of = 0, len(buf)
        while size_of - pos >= 8:
            end = pos + 8 + int.from_bytes(buf[pos + 4 : pos + 8], "big")
            if end > size_of:
                break
            stream, payload = buf[pos], bytes(buf[pos + 8 : end])
            pos = end
            stamp, _, text = payload.partition(b" ")
            when = self._time(stamp)
            if stream not in self.partial and text.find(b"\n") == len(text) - 1 <= MAX_LOG_LINE:
                out.append(LogLine(when, text[:-1]))  # the usual case: one whole line
            else:
                self._message(stream, when, text, out)
        del buf[:pos]
        return out

    def _time(self, stamp: bytes) -> float:
        """``_docker_time``, with the whole seconds remembered: lines come many to a second."""
        seconds = self.seconds.get(stamp[:19])
        if seconds is None:
            if len(self.seconds) > 1024:
                self.seconds.clear()
            seconds = self.seconds[stamp[:19]] = _docker_time(stamp[:19] + b"Z")
        fraction = stamp[20:26].split(b"Z", 1)[0]
        return seconds + (int(fraction.ljust(6, b"0")) / 1e6 if fraction.isdigit() else 0.0)

    def _message(self, stream: int, when: float, text: bytes, out: list[LogLine]) -> None:
        started, pending = self.partial.pop(stream, (when, bytearray()))
        pending += text
        while True:
            cut = pending.find(b"\n")
            if cut < 0 and len(pending) < MAX_LOG_LINE:
                break
            end = cut if 0 <= cut < MAX_LOG_LINE else MAX_LOG_LINE
            out.append(LogLine(started, bytes(pending[:end])))
            del pending[: end + 1 if end == cut else end]
            started = when
        if pending:
            self.partial[stream] = (started, pending)

    def rest(self) -> list[LogLine]:
        """Last lines that had no newline when the stream ended."""
        out = [LogLine(when, bytes(text)) for when, text in self.partial.values()]
        self.partial.clear()
        return sorted(out, key=lambda line: line.when)


def _docker_time(stamp: bytes) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2026-11-26T13:55:39.123456789Z", always UTC) as
    epoch seconds, to the microsecond."""
    text = stamp.decode("ascii", "replace").rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise DriverError(f"docker: log line with an unreadable time {stamp[:40]!r}") from None
    return seconds + (int(fraction[:6].ljust(6, "0")) / 1e6 if fraction.isdigit() else 0.0)


# Times a project network's create is tried on another subnet when the Engine says the one chosen
# overlaps a pool it holds (seen on 20.10 after a busy run: a pool no listed network holds).
POOL_RETRIES = 4


def _subnet_taken(message: str) -> bool:
    """The Engine's words for a subnet it holds already: an overlapping pool (its IPAM), the same
    pool (then its gateway address is the one in use), or another bridge network's subnet."""
    return ("Pool overlaps" in message or "networks have overlapping" in message
            or ("failed to allocate gateway" in message and "already in use" in message))


class DockerDriver:
    """Driver protocol over the Docker Engine API; see the module docstring for the rules."""

    compute_type = "docker"

    def __init__(self, owner: str, docker_host: str | None = None, bridges: Bridges | None = None,
                 stats_source: str = "auto") -> None:
        if not owner:
            raise ValueError("owner must not be empty: it is what keeps daemons apart")
        self.owner = owner
        base_url, self._socket = _parse_docker_host(docker_host)
        self.where = f"unix://{self._socket}" if self._socket else base_url
        self._client = engine_client(docker_host)
        self._base_url = base_url
        # Docker's CheckDuplicate is best effort: two concurrent creates can both succeed and
        # leave two networks with one name, so creates of one project's network take turns here.
        self._net_locks: dict[str, trio.Lock] = {}
        # Networks seen to exist, so a scale-up of 20 does not ask 20 times (one at a time, under
        # the lock). One removed behind our back is found at the start that needs it: see create.
        self._networks: set[str] = set()
        # The daemon's bridges (mariposa/bridges.py): a project network made from now on is on a
        # bridge of Mariposa's, shared with LXC and VMs; without, Docker makes its own (driver tests).
        self.bridges = bridges
        if bridges is not None:
            bridges.add_reservations(self._held_subnets)
        self._responders: dict[str, str] = {}  # network name -> its DNS responder's address
        # stats: cgroup files when the Engine is local, else its one-shot stats (docker_stats.py)
        self._stats = DockerStats(self._call, self._socket is not None, stats_source)

    @property
    def _owner_label(self) -> str:
        return f"{LABEL_OWNER}={self.owner}"

    # ---- plumbing -----------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> RuntimeUnavailable:
        return RuntimeUnavailable(
            f"Docker Engine not reachable at {self.where}: {exc or type(exc).__name__}"
        )

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        allow: tuple[int, ...] = (),
        spec: ServiceSpec | None = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call; statuses in ``allow`` come back to the caller, other errors raise.
        Each is timed in a debug line (``--log-level debug``): where a convergence spends its
        time is the first question of any slowness."""
        t0 = time.perf_counter()
        try:
            resp = await self._client.request(method, path, timeout=timeout, **kwargs)
        except (httpx.TransportError, OSError) as exc:
            raise self._unavailable(exc) from None
        finally:
            log.debug("engine call", call=f"{method} {path}", seconds=round(time.perf_counter() - t0, 4))
        if resp.status_code < 400 or resp.status_code in allow:
            return resp
        msg = _redact(_message(resp), spec)
        exc_type = ImageNotFound if "No such image" in msg else DriverError
        raise exc_type(f"docker: {what}: {msg}")

    @asynccontextmanager
    async def _streaming(self, method: str, path: str, what: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A call whose body is read as it comes (events, exec); errors as from ``_call``, also
        those that break the stream half way."""
        try:
            async with self._client.stream(method, path, **kwargs) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise DriverError(f"docker: {what}: {_message(resp)}")
                yield resp
        except (httpx.TransportError, OSError) as exc:
            raise self._unavailable(exc) from None

    # ---- protocol -----------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("GET", "/_ping", "ping")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def resolve_image(self, image: str) -> str:
        resp = await self._call(
            "GET",
            f"/images/{quote(image, safe='/:@')}/json",
            f"inspect image {image}",
            allow=(404,),
        )
        if resp.status_code == 404:
            raise _image_not_found(image)
        return resp.json()["Id"]

    async def pull(self, image: str, auth: RegistryAuth | None, progress: Progress | None = None) -> None:
        """``POST /images/create``: the Engine streams JSON lines of progress and, when the
        registry refuses half way, an ``error`` line after a 200; a refusal before any layer
        (no such tag, no credentials) is a 404 or 500 with the registry's message. Read as it
        comes, with no read timeout (a big layer takes its time), and cancellable like any trio
        I/O: cancelling closes the connection, and the Engine gives up the pull with it."""
        from mariposa.registries import split_reference

        name, tag = split_reference(image)
        headers = {"X-Registry-Auth": _auth_header(auth)} if auth is not None else {}
        secret = auth.password if auth is not None else None
        t0 = time.perf_counter()
        try:
            async with self._client.stream("POST", "/images/create", params={"fromImage": name, "tag": tag},
                                           headers=headers, timeout=httpx.Timeout(CALL_TIMEOUT, read=None)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise PullFailed(f"pull {image}: {_scrub(_message(resp), secret)}")
                async for line in resp.aiter_lines():
                    data = _event_data(line)
                    if data is None:
                        continue
                    if data.get("error") or data.get("errorDetail"):
                        detail = data.get("errorDetail") or {}
                        message = data.get("error") or detail.get("message") or "the registry refused"
                        raise PullFailed(f"pull {image}: {_scrub(str(message), secret)}")
                    if progress is not None and data.get("status"):
                        await progress(PullProgress(image, str(data["status"]), data.get("id"),
                                                    _progress_detail(data.get("progressDetail"))))
        except (httpx.TransportError, OSError) as exc:
            raise self._unavailable(exc) from None
        finally:
            log.debug("engine call", call=f"POST /images/create {name}:{tag}",
                      seconds=round(time.perf_counter() - t0, 4))

    async def login(self, auth: RegistryAuth) -> None:
        """``POST /auth``: the Engine tries the credentials on the registry and answers with its
        verdict; nothing is stored on the Engine's side."""
        body = {"username": auth.username, "password": auth.password, "serveraddress": _server_address(auth)}
        resp = await self._call("POST", "/auth", f"login to {auth.server}", allow=tuple(range(400, 600)), json=body)
        if resp.status_code >= 400:
            raise AuthFailed(f"login to {auth.server}: {_scrub(_message(resp), auth.password)}")

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        await self._ensure_network(project_id, project_name)

    async def _ensure_network(self, project_id: str, project_name: str) -> str:
        name = network_name(project_id, project_name)
        lock = self._net_locks.setdefault(name, trio.Lock())
        async with lock:
            if name in self._networks:
                return name
            path = f"/networks/{quote(name, safe='')}"
            resp = await self._call("GET", path, f"inspect network {name}", allow=(404,))
            if resp.status_code == 200:
                self._note_responder(name, resp.json())
                self._networks.add(name)
                return name
            body: dict[str, Any] = {
                "Name": name,
                "CheckDuplicate": True,
                "Driver": "bridge",
                "Labels": {
                    LABEL_OWNER: self.owner,
                    LABEL_PROJECT: project_id,
                    LABEL_PROJECT_NAME: project_name,
                },
            }
            for attempt in range(POOL_RETRIES):
                if self.bridges is not None:
                    rec = await self.bridges.ensure(project_network(project_id), dict(body["Labels"]))
                    body["Options"] = {DOCKER_BRIDGE_OPTION: rec["bridge"]}
                    body["IPAM"] = {"Driver": "default", "Config": [
                        {"Subnet": rec["subnet"], "Gateway": gateway(rec), "IPRange": docker_range(rec)}]}
                try:
                    # 409: another daemon or process won the race; its network serves us as well.
                    await self._call(
                        "POST", "/networks/create", f"create network {name}", json=body, allow=(409,)
                    )
                    break
                except DriverError as exc:
                    if self.bridges is None or not _subnet_taken(str(exc)) or attempt == POOL_RETRIES - 1:
                        raise
                    # The Engine's IPAM still holds a pool no network lists (a network removed a
                    # moment ago): that subnet is skipped from now on and another one chosen.
                    log.warning("network: subnet held by the Engine's IPAM, choosing another",
                                network=name, subnet=rec["subnet"])
                    await self.bridges.drop(project_network(project_id))
                    self.bridges.refuse(rec["subnet"])
            if self.bridges is not None:
                self._responders[name] = body["IPAM"]["Config"][0]["Gateway"]
            self._networks.add(name)
            return name

    async def _held_subnets(self) -> set[str]:
        """Every subnet Docker's networks hold (any owner's): a project bridge must not overlap one."""
        resp = await self._call("GET", "/networks", "list networks")
        return {config["Subnet"] for net in resp.json() for config in ((net.get("IPAM") or {}).get("Config") or ())
                if config.get("Subnet")}

    def _note_responder(self, name: str, network: Mapping[str, Any]) -> None:
        """A network on a bridge of Mariposa's has the DNS responder on its gateway; one Docker made
        (before Mariposa made bridges) has Docker's embedded DNS alone."""
        bridge = (network.get("Options") or {}).get(DOCKER_BRIDGE_OPTION, "")
        config = ((network.get("IPAM") or {}).get("Config") or [{}])[0]
        if self.bridges is not None and bridge.startswith("mlx") and config.get("Gateway"):
            self._responders[name] = config["Gateway"]
        else:
            self._responders.pop(name, None)

    async def remove_network(self, project_id: str, project_name: str = "") -> list[str]:
        resp = await self._call(
            "GET",
            "/networks",
            f"list networks of project {project_id}",
            params=_filters(label=[self._owner_label, f"{LABEL_PROJECT}={project_id}"]),
        )
        for net in resp.json():
            self._networks.discard(net["Name"])
            await self._remove_network(net["Id"], net["Name"])
        if self.bridges is not None:  # after Docker's network, which would otherwise make it again
            await self.bridges.drop(project_network(project_id))
        return await self._remove_shared(project_name) if project_name else []

    async def _remove_shared(self, project_name: str) -> list[str]:
        """The networks the project made for others go when nobody is on them; one that other
        projects' instances still use stays (never disconnected by force, unlike the project's
        own), and the answer says so. External networks carry no such labels: never touched."""
        resp = await self._call("GET", "/networks", f"list shared networks of {project_name}", params=_filters(
            label=[self._owner_label, f"{LABEL_PROJECT_NAME}={project_name}", LABEL_NETWORK]))
        kept = []
        for net in resp.json():
            name = net["Name"]
            self._networks.discard(name)
            info = await self._call("GET", f"/networks/{net['Id']}", f"inspect network {name}", allow=(404,))
            if info.status_code == 404:
                continue
            users = await self._other_users(net["Id"], name, project_name, info.json().get("Containers") or {})
            if not users:
                gone = await self._call("DELETE", f"/networks/{net['Id']}", f"remove network {name}",
                                        allow=(403, 404, 409))
                if gone.status_code < 400 or gone.status_code == 404:
                    continue
                users = [_message(gone)]
            kept.append(f"network {name} is kept, still in use by {', '.join(users)}")
        return kept

    async def _other_users(self, net_id: str, name: str, project_name: str, endpoints: Mapping[str, Any]) -> list[str]:
        """The containers of others on a network the project made. An endpoint whose container is
        gone (the Engine keeps stale ones a while) or is the project's own is disconnected, so
        it never keeps the network alive."""
        users = []
        for container, endpoint in endpoints.items():
            resp = await self._call("GET", f"/containers/{container}/json", f"inspect {container[:12]}", allow=(404,))
            labels = ((resp.json().get("Config") or {}).get("Labels") or {}) if resp.status_code == 200 else {}
            if resp.status_code == 404 or (labels.get(LABEL_OWNER) == self.owner
                                           and labels.get(LABEL_PROJECT_NAME) == project_name):
                await self._call("POST", f"/networks/{net_id}/disconnect", f"disconnect {container[:12]} from {name}",
                                 json={"Container": container, "Force": True}, allow=(404, 500))
            else:
                users.append(str(endpoint.get("Name") or container[:12]))
        return sorted(users)

    async def network_exists(self, name: str) -> bool:
        resp = await self._call("GET", f"/networks/{quote(name, safe='')}", f"inspect network {name}", allow=(404,))
        return resp.status_code == 200 and resp.json().get("Name") == name

    async def _ensure_joined(self, req: CreateRequest) -> list[tuple[str, NetworkRef]]:
        """The networks the instance joins besides its project's, each found (external) or made
        (the project's own, labelled so ``remove_network`` finds it and nobody else's is taken)."""
        out = []
        for ref in req.spec.networks:
            name = ref.runtime(req.project_name)
            async with self._net_locks.setdefault(name, trio.Lock()):
                if name not in self._networks:
                    await self._find_or_make(req.project_name, ref, name)
                    self._networks.add(name)
            out.append((name, ref))
        return out

    async def _find_or_make(self, project_name: str, ref: NetworkRef, name: str) -> None:
        resp = await self._call("GET", f"/networks/{quote(name, safe='')}", f"inspect network {name}", allow=(404,))
        if resp.status_code == 200 and resp.json().get("Name") == name:
            labels = resp.json().get("Labels") or {}
            mine = {LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: project_name, LABEL_NETWORK: ref.name}
            if not ref.external and any(labels.get(k) != v for k, v in mine.items()):
                raise DriverError(f"docker: network {name} exists and is not project {project_name}'s network "
                                  f"{ref.name!r} (labels {labels}); remove or rename it, or declare it "
                                  "external: true")
            return
        if ref.external:
            raise DriverError(f"docker: external network {name} (network {ref.name!r} of the manifest) does not "
                              f"exist; create it first (docker network create {name})")
        body = {"Name": name, "CheckDuplicate": True, "Driver": "bridge",
                "Labels": {LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: project_name, LABEL_NETWORK: ref.name}}
        await self._call("POST", "/networks/create", f"create network {name}", json=body, allow=(409,))

    async def _remove_network(self, net_id: str, name: str) -> None:
        """Remove one network, disconnecting (forced) whatever is still attached: a container
        someone else connected, or a stale endpoint the Engine kept after its container went
        ("has active endpoints" failed 1 in 3 deletes of a 20-instance project)."""
        for attempt in range(4):
            resp = await self._call("DELETE", f"/networks/{net_id}", f"remove network {name}", allow=(403, 404, 409))
            if resp.status_code < 400 or resp.status_code == 404:
                return
            if attempt == 3:
                raise DriverError(f"docker: remove network {name}: {_message(resp)}")
            info = await self._call("GET", f"/networks/{net_id}", f"inspect network {name}", allow=(404,))
            if info.status_code == 404:
                return
            for endpoint in (info.json().get("Containers") or {}):
                await self._call("POST", f"/networks/{net_id}/disconnect", f"disconnect {endpoint[:12]} from {name}",
                                 json={"Container": endpoint, "Force": True}, allow=(404, 500))
            await trio.sleep(0.2 * 2**attempt)

    async def _ensure_volumes(self, req: CreateRequest) -> None:
        """Create the project's named volumes this instance mounts, labelled as the project's;
        refuse one of that name that belongs to someone else (another daemon, another project)."""
        for m in req.spec.volumes:
            if m.type != "volume" or m.source is None:
                continue
            name = volume_name(req.project_name, m.source)
            labels = {**dict(m.labels), LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: req.project_name,
                      LABEL_VOLUME: m.source}
            resp = await self._call("POST", "/volumes/create", f"create volume {name}",
                                    json={"Name": name, "Labels": labels})
            found = resp.json().get("Labels") or {}
            if any(found.get(k) != labels[k] for k in (LABEL_OWNER, LABEL_PROJECT_NAME, LABEL_VOLUME)):
                raise DriverError(f"docker: volume {name} exists and is not project {req.project_name}'s "
                                  f"(labels {found}); remove or rename it")

    async def volumes(self, project_name: str) -> list[VolumeInfo]:
        filters = _filters(label=[self._owner_label, f"{LABEL_PROJECT_NAME}={project_name}"])
        listed = (await self._call("GET", "/volumes", f"list volumes of {project_name}", params=filters)).json()
        sizes: dict[str, int] = {}
        df = await self._call("GET", "/system/df", "volume sizes", params={"type": "volume"}, allow=(400,))
        if df.status_code == 200:
            for v in df.json().get("Volumes") or []:
                size = (v.get("UsageData") or {}).get("Size", -1)
                if size >= 0:
                    sizes[v["Name"]] = size
        out = []
        for v in listed.get("Volumes") or []:
            users = await self._call("GET", "/containers/json", f"users of volume {v['Name']}",
                                     params={"all": "1", **_filters(volume=[v["Name"]])})
            names = sorted(c["Names"][0].lstrip("/") for c in users.json() if c.get("Names"))
            labels = v.get("Labels") or {}
            out.append(VolumeInfo(labels.get(LABEL_VOLUME, v["Name"]), v["Name"],
                                  tuple(sorted(labels.items())), sizes.get(v["Name"]), tuple(names)))
        return sorted(out, key=lambda v: v.name)

    async def remove_volume(self, project_name: str, volume: str) -> None:
        name = volume_name(project_name, volume)
        resp = await self._call("DELETE", f"/volumes/{quote(name, safe='')}", f"remove volume {name}",
                                allow=(404, 409))
        if resp.status_code == 409:
            raise VolumeInUse(f"volume {volume} of project {project_name} is in use: {_message(resp)}")

    async def create(self, req: CreateRequest) -> Instance:
        """Create, start and inspect: three Engine calls, like ``docker run -d`` plus the look
        that reports the address. The image is not looked up first (a missing one is the
        create's 404) and the project network only the first time; a network removed since is
        the start's 404, and then the container is made again on a network made again."""
        for attempt in range(2):
            network = await self._ensure_network(req.project_id, req.project_name)
            joined = await self._ensure_joined(req)
            try:
                return await self._create(req, network, joined)
            except _NetworkGone:
                self._networks.difference_update([network, *(name for name, _ in joined)])
                if attempt == 1:
                    raise DriverError(f"docker: start {req.name}: network {network} not found") from None
        raise AssertionError("unreachable")

    async def _create(self, req: CreateRequest, network: str, joined: list[tuple[str, NetworkRef]]) -> Instance:
        spec = req.spec
        await self._ensure_volumes(req)
        body = container_config(req, network, self._responders.get(network))
        try:
            resp = await self._call(
                "POST",
                "/containers/create",
                f"create {req.name}",
                params={"name": req.name},
                json=body,
                spec=spec,
                allow=(409,),
            )
        except ImageNotFound:
            raise _image_not_found(spec.image_id or spec.image) from None
        except (RuntimeUnavailable, trio.Cancelled):
            # The Engine may have made it before we stopped listening; the name is ours alone.
            await self._cleanup(req.name)
            raise
        if resp.status_code == 409:
            runtime_id = await self._adopt(req, _redact(_message(resp), spec))
        else:
            runtime_id = resp.json()["Id"]
        try:
            for name, _ref in joined:
                await self._join_network(req, runtime_id, name)
            resp = await self._call(
                "POST",
                f"/containers/{runtime_id}/start",
                f"start {req.name}",
                spec=spec,
                allow=(304, 404),
            )
            if resp.status_code == 404:
                message = _redact(_message(resp), spec)
                if re.match(r"network .* not found", message):
                    raise _NetworkGone(message)
                raise DriverError(f"docker: start {req.name}: {message}")
            inst = await self._inspect(runtime_id, req.name)
        except BaseException:
            await self._cleanup(runtime_id)
            raise
        if inst is None:
            raise DriverError(
                f"docker: create {req.name}: the container vanished right after start"
            )
        return inst

    async def _join_network(self, req: CreateRequest, runtime_id: str, network: str) -> None:
        """Join one more network before the start (API 1.41 creates on one network only), as
        SERVICE.PROJECT: the name other projects' services on that network use."""
        aliases = [f"{req.spec.name}.{req.project_name}", req.name]
        body = {"Container": runtime_id, "EndpointConfig": {"Aliases": aliases}}
        resp = await self._call("POST", f"/networks/{quote(network, safe='')}/connect",
                                f"connect {req.name} to network {network}", json=body, allow=(403, 404))
        if resp.status_code == 404:
            raise _NetworkGone(_message(resp))
        if resp.status_code == 403 and "already exists" not in _message(resp):  # a replay: joined already
            raise DriverError(f"docker: connect {req.name} to network {network}: {_message(resp)}")

    async def _adopt(self, req: CreateRequest, conflict: str) -> str:
        """A replayed create finds its own container (same instance id) and carries on with it."""
        resp = await self._call(
            "GET", f"/containers/{req.name}/json", f"inspect {req.name}", allow=(404,)
        )
        if resp.status_code == 200:
            labels = resp.json().get("Config", {}).get("Labels") or {}
            if (
                labels.get(LABEL_INSTANCE) == req.instance_id
                and labels.get(LABEL_OWNER) == self.owner
            ):
                return resp.json()["Id"]
        raise DriverError(f"docker: create {req.name}: {conflict}")

    async def _cleanup(self, ref: str) -> None:
        """Remove a half-made container even while being cancelled; never mask the real error."""
        with trio.move_on_after(30, shield=True):
            try:
                await self._force_remove(ref, ref)
            except DriverError:
                pass

    async def _force_remove(self, ref: str, what: str) -> None:
        # 404: gone already; 409: "removal ... is already in progress", someone is on it.
        await self._call(
            "DELETE", f"/containers/{ref}", f"remove {what}", params={"force": "true", "v": "true"}, allow=(404, 409)
        )

    async def _inspect(self, runtime_id: str, what: str) -> Instance | None:
        resp = await self._call(
            "GET", f"/containers/{runtime_id}/json", f"inspect {what}", allow=(404,)
        )
        return _from_inspect(resp.json()) if resp.status_code == 200 else None

    async def start(self, inst: Instance) -> None:
        await self._call(
            "POST", f"/containers/{inst.runtime_id}/start", f"start {inst.name}", allow=(304,)
        )

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        """``timeout`` None: the container's own stop timeout; negative: wait for ever.

        Negative ``t`` meaning "no deadline" is Engine 20.10 behaviour, checked on this host.
        """
        params = {} if timeout is None else {"t": str(int(timeout))}
        http_timeout = None if timeout is None or timeout < 0 else timeout + STOP_GRACE
        # 304: already stopped; 404: already gone, which is stopped enough.
        await self._call(
            "POST",
            f"/containers/{inst.runtime_id}/stop",
            f"stop {inst.name}",
            params=params,
            allow=(304, 404),
            timeout=http_timeout,
        )

    async def signal(self, inst: Instance, name: str) -> None:
        # 404: gone, nothing to tell; 409: not running, which the caller should hear of
        await self._call("POST", f"/containers/{inst.runtime_id}/kill", f"signal {inst.name} with {name}",
                         params={"signal": name}, allow=(404,))

    async def remove(self, inst: Instance) -> None:
        await self._force_remove(inst.runtime_id, inst.name)
        self._stats.forget(inst.runtime_id)

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        labels = [self._owner_label]
        if project_id is not None:
            labels.append(f"{LABEL_PROJECT}={project_id}")
        resp = await self._call(
            "GET",
            "/containers/json",
            "list containers",
            params={"all": "1", **_filters(label=labels)},
        )
        return [inst for inst in map(_from_list, resp.json()) if inst is not None]

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        """Container events of this owner (see the protocol), resumable by cursor.

        A cursor is ``FLOOR|KEY,KEY,...``: resume from FLOOR (the Engine's timeNano) and drop the
        replayed events whose KEY (timeNano/action/container) was delivered already. FLOOR trails
        the newest delivered event by ``REPLAY_MARGIN_NS``, so an event the Engine publishes a
        little out of order is replayed, not lost. What the Engine no longer keeps (it buffers
        the last few hundred events of all its users) cannot be replayed; the daemon's periodic
        resync covers that, as it covers any lost wake-up.
        """
        if since is None:
            # Wall time, because the Engine stamps events with it; taken now, so events that
            # happen before the stream is open are still delivered.
            floor = time.time_ns()
            seen: list[tuple[int, str]] = []
        else:
            floor, seen = _parse_cursor(since)
        return self._events(floor, seen)

    async def _events(self, floor: int, seen: list[tuple[int, str]]) -> AsyncIterator[DriverEvent]:
        window = deque(seen)  # (timeNano, key) of delivered events at or after floor
        keys = {key for _, key in window}
        params = _filters(type=["container"], label=[self._owner_label])
        params["since"] = f"{floor // 10**9}.{floor % 10**9:09d}"
        async with self._streaming("GET", "/events", "events", params=params, timeout=None) as resp:
            async for line in resp.aiter_lines():
                data = _event_data(line)
                if data is None:
                    continue
                stamp = data.get("timeNano")
                if isinstance(stamp, int):
                    key = f"{stamp}/{data.get('Action') or data.get('status')}/{data.get('id', '')[:12]}"
                    if stamp < floor or key in keys:
                        continue  # delivered before the cursor
                    window.append((stamp, key))
                    keys.add(key)
                    floor = max(floor, stamp - REPLAY_MARGIN_NS)
                    while window and (window[0][0] < floor or len(window) > CURSOR_KEYS):
                        old, old_key = window.popleft()
                        keys.discard(old_key)
                        floor = max(floor, old + 1)  # forgotten, so never replayed again
                yield self._event(data, f"{floor}|" + ",".join(k for _, k in window))
        raise RuntimeUnavailable(f"Docker Engine at {self.where} closed the event stream")

    @staticmethod
    def _event(data: Mapping[str, Any], cursor: str) -> DriverEvent:
        attrs_ = (data.get("Actor") or {}).get("Attributes") or {}
        # "exec_start: sh -c ..." carries a command line; keep the verb only.
        action = (data.get("Action") or data.get("status") or "").split(":", 1)[0]
        code = attrs_.get("exitCode")
        stamped = data.get("timeNano")
        return DriverEvent(
            action=action,
            instance_id=attrs_.get(LABEL_INSTANCE),
            project_id=attrs_.get(LABEL_PROJECT),
            service=attrs_.get(LABEL_SERVICE),
            exit_code=int(code) if code is not None and code.lstrip("-").isdigit() else None,
            cursor=cursor,
            time=stamped / 1e9 if isinstance(stamped, int) else None,
        )

    async def exec(
        self, inst: Instance, argv: list[str], timeout: float, user: str | None = None
    ) -> tuple[int, bytes]:
        """See the protocol. Past ``timeout`` the process itself is left to finish, since the
        Engine API has no way to kill an exec."""
        what = f"exec in {inst.name}"
        body: dict[str, Any] = {"Cmd": list(argv), "AttachStdout": True, "AttachStderr": True}
        if user is not None:
            body["User"] = user
        with trio.fail_after(timeout):
            resp = await self._call("POST", f"/containers/{inst.runtime_id}/exec", what, json=body)
            exec_id = resp.json()["Id"]
            demux = _Demux()
            start = {"Detach": False, "Tty": False}
            async with self._streaming("POST", f"/exec/{exec_id}/start", what, json=start, timeout=None) as resp:
                async for chunk in resp.aiter_raw():
                    demux.feed(chunk)
            # The stream ends when the process does; the exit code lands a moment later.
            while True:
                info = (await self._call("GET", f"/exec/{exec_id}/json", what)).json()
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return int(info["ExitCode"]), bytes(demux.out)
                await trio.sleep(0.02)

    async def address(self, inst: Instance) -> str | None:
        found = await self._inspect(inst.runtime_id, inst.name)
        return found.address if found is not None else None

    async def logs(
        self, inst: Instance, since: float | None = None, tail: int | None = None, follow: bool = False
    ) -> AsyncGenerator[LogLine, None]:
        """See the protocol. Containers never get a TTY, so the stream is always the multiplexed
        one; with ``follow`` the Engine ends it when the container stops. Read raw over a
        connection of its own (``rawget``: httpx costs a third of a millisecond a line here)."""
        params = {"stdout": "1", "stderr": "1", "timestamps": "1", "follow": "1" if follow else "0"}
        if since is not None:
            params["since"] = f"{since:.6f}"
        if tail is not None:
            params["tail"] = str(tail)
        base = urlsplit(self._base_url)
        target = f"{base.path}/containers/{quote(inst.runtime_id)}/logs?{urlencode(params)}"
        lines = _LogLines()
        what = f"logs of {inst.name}"
        body = rawget.get(self._connect, target, host=base.netloc, read_timeout=None if follow else CALL_TIMEOUT)
        try:
            async with aclosing(body):
                async for chunk in body:
                    for line in lines.feed(chunk):
                        yield line
        except rawget.BadStatus as exc:
            raise DriverError(f"docker: {what}: {exc.message}") from None
        except (rawget.BrokenResponse, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._unavailable(exc) from None
        for line in lines.rest():
            yield line

    async def stats(self, inst: Instance) -> InstanceStats | None:
        """See the protocol; where the numbers come from and why: drivers/docker_stats.py."""
        return await self._stats.read(inst.runtime_id)

    async def _connect(self) -> trio.abc.Stream:
        if self._socket:
            return await trio.open_unix_socket(self._socket)
        base = urlsplit(self._base_url)
        return await trio.open_tcp_stream(base.hostname or "localhost", base.port or 80)


class _NetworkGone(DriverError):
    """The start found the container's network gone: removed behind the driver's back."""


def _image_not_found(image: str) -> ImageNotFound:
    return ImageNotFound(f"image '{image}' is not on this host")


def _server_address(auth: RegistryAuth) -> str:
    """What the Engine calls the registry: Docker Hub by its index address, others by host."""
    return "https://index.docker.io/v1/" if auth.server == "docker.io" else auth.server


def _auth_header(auth: RegistryAuth) -> str:
    """``X-Registry-Auth``: the credentials as base64url JSON, as the Engine reads them."""
    blob = json.dumps({"username": auth.username, "password": auth.password, "serveraddress": _server_address(auth)})
    return base64.urlsafe_b64encode(blob.encode()).decode()


def _scrub(text: str, secret: str | None) -> str:
    """A registry never should echo a password, but nothing it says reaches a user unchecked."""
    return text.replace(secret, "<redacted>") if secret else text


def _progress_detail(detail: Any) -> str | None:
    """'1.2MB/3.4MB' from the Engine's progressDetail {current, total} (bytes)."""
    if not isinstance(detail, dict) or not detail.get("total"):
        return None
    try:
        return f"{int(detail.get('current') or 0) / 1e6:.1f}MB/{int(detail['total']) / 1e6:.1f}MB"
    except (TypeError, ValueError):
        return None


def _event_data(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _parse_cursor(cursor: str) -> tuple[int, list[tuple[int, str]]]:
    """A cursor of ``events``; a malformed one is a caller's bug, so it fails loudly."""
    try:
        floor, _, keys = cursor.partition("|")
        seen = [(int(key.split("/", 1)[0]), key) for key in keys.split(",") if key]
        return int(floor), seen
    except ValueError:
        raise ValueError(f"not a Docker event cursor: {cursor!r}") from None
