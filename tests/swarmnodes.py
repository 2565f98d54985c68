"""A real three-node Docker Swarm for tests, made of Docker-in-Docker containers on this machine.

Why it is built this way:
- No registry is reachable, so there is no `docker:dind` image. The node image is a `docker import`
  of a few kilobytes: the usr-merge symlinks (bin, lib, lib64, sbin -> usr/...) and the handful of
  /etc files dockerd, containerd, runc and iptables read (no secrets: no shadow, no ssh, no apt
  credentials). The host's `/usr` is bind-mounted read-only, so each node runs the host's own
  docker.io (dockerd, containerd, runc, iptables, docker-init). Building it takes well under a second
  and needs nothing but the host; it is rebuilt only when CONTENT changes.
- The privileges are the ones that work here (as in /work/shared/tools/fresh-machine.sh):
  `--privileged` fails because CAP_SYS_RESOURCE is missing, so `--cap-add ALL --cap-drop
  SYS_RESOURCE`, seccomp/apparmor/systempaths unconfined, the host's cgroup fs mounted read-write
  with the host cgroup namespace (cgroup v1 here), and /var/lib/docker on a volume (overlay2 cannot
  stack on the container's own overlay root). Each inner dockerd puts its containers under the
  cgroup parent /mariposa-swarmnode-N, so they never mix with the host engine's /docker/<id>.
- Each dockerd answers on a unix socket bind-mounted to a host tmp dir (unix://.../nodeN/docker.sock),
  not on tcp:2375: nothing is exposed on any network, and dockerd 20.10 warns about (and later
  versions refuse) plain TCP without TLS. Swarm traffic itself (2377, 7946, 4789/udp vxlan) runs on
  a user-defined bridge, NETWORK, with fixed addresses (.11, .12, .13).
- Node 1 is the only manager, nodes 2 and 3 join as workers: a test stops a worker and measures
  failure detection plus rescheduling, never a Raft election or a lost quorum (two of three managers
  would survive one stop, but a leader's stop would add an election, ~10 s, to every figure).
  Tests and the Mariposa backend talk to node 1.
- The dispatcher heartbeat is HEARTBEAT (swarm default 5 s): a node is declared down after a few
  missed heartbeats, so this bounds how fast a stopped node's tasks are rescheduled.
- The host engine is itself a single-node Swarm others are using: nothing here touches it beyond
  creating and removing these containers, their volumes, the bridge network and the node image.
  Every object carries LABEL; `remove_leftovers()` (run first) and `.ci/clean-docker.sh` remove what
  a crashed run left, plus the empty cgroup dirs a killed node's containers leave behind.
Only one such swarm can run per engine at a time (fixed names and addresses)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NODE_IMAGE = "mariposa-test/swarm-node:latest"  # mariposa-test/*: .ci/clean-docker.sh removes it
CONTENT = "1"  # bump when the image's content changes, so existing machines rebuild it
NETWORK = "mariposa-swarmnodes"
SUBNET = "192.168.213.0/24"
ADDRESS = "192.168.213.{}"  # node N gets .1N
PREFIX = "mariposa-swarmnode-"  # container N is PREFIX + N; its hostname is swarmnode-N
LABEL_KEY = "io.mariposa.test"
LABEL = f"{LABEL_KEY}=swarmnodes"
ZONES = "abc"  # node N is labelled zone=ZONES[N-1]
HEARTBEAT = "2s"
TEST_IMAGE = "mariposa-example/busybox:latest"  # built by tests/integration/images.py
SOCKET_DIRS = "mariposa-swarmnodes-"  # prefix of the host tmp dirs holding the nodes' sockets
# What the node needs from /etc: user and group names, the dynamic loader's cache (the multiarch
# library dirs are not in its defaults), the iptables alternative (-> iptables-nft here), names of
# protocols and services for iptables, iproute2's tables, resolver settings, time zone.
ETC = ["passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives",
       "protocols", "services", "ethertypes", "iproute2", "host.conf", "gai.conf", "localtime", "os-release"]


def _run(*args: str, input: bytes | None = None, check: bool = True, timeout: float = 60) -> str:
    out = subprocess.run(list(args), input=input, capture_output=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.decode().strip()}")
    return out.stdout.decode()


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    """The host engine's CLI."""
    return _run("docker", *args, check=check, timeout=timeout)


def ensure_node_image() -> bool:
    """Builds NODE_IMAGE unless this CONTENT of it exists. Returns whether it built."""
    got = docker("image", "inspect", "-f", '{{index .Config.Labels "io.mariposa.image-content"}}',
                 NODE_IMAGE, check=False).strip()
    if got == CONTENT:
        return False
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def entry(name: str, kind: bytes, mode: int, target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, target
            tar.addfile(info)
        for d in ["usr", "etc", "var", "var/lib", "var/lib/docker", "run", "proc", "sys", "dev", "root"]:
            entry(d, tarfile.DIRTYPE, 0o755)
        entry("tmp", tarfile.DIRTYPE, 0o1777)
        entry("var/run", tarfile.SYMTYPE, 0o777, "../run")
        for link in ["bin", "lib", "lib64", "sbin"]:
            entry(link, tarfile.SYMTYPE, 0o777, f"usr/{link}")
        for name in ETC:
            if os.path.lexists(f"/etc/{name}"):
                tar.add(f"/etc/{name}", arcname=f"etc/{name}")  # symlinks stay symlinks
    _run("docker", "import", "--message", "built by mariposa tests/swarmnodes.py",
         "--change", f"LABEL io.mariposa.image-content={CONTENT}",
         "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
         "-", NODE_IMAGE, input=buf.getvalue())
    return True


def _remove_cgroups(index: int | str = "*") -> None:
    """The empty cgroup dirs inner containers leave when their node is killed (its dockerd never
    cleans them up). Deepest first; a dir still in use stays (rmdir fails)."""
    for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{PREFIX}{index}"), reverse=True):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


def remove_leftovers() -> None:
    """Everything a previous (maybe crashed) run left: node containers, their volumes, the network,
    the socket dirs, the cgroup dirs. Touches nothing else on the host engine."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    vols = docker("volume", "ls", "-q", "--filter", f"label={LABEL}").split()
    if vols:
        docker("volume", "rm", "-f", *vols)
    if _network_subnet() is not None:
        # dockerd 20.10 sometimes keeps a removed container's endpoint (moby#42119) and refuses;
        # start_swarm then reuses the network as it is
        docker("network", "rm", NETWORK, check=False)
    for d in Path(tempfile.gettempdir()).glob(f"{SOCKET_DIRS}*"):
        shutil.rmtree(d, ignore_errors=True)
    _remove_cgroups()


def _network_subnet() -> str | None:
    """NETWORK's subnet, None when there is no such network."""
    out = subprocess.run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", NETWORK],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("docker", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


@dataclass
class Node:
    """One DinD node: its container on the host engine and its own dockerd."""

    index: int
    socket_dir: Path
    node_id: str = ""

    @property
    def container(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def hostname(self) -> str:
        return f"swarmnode-{self.index}"

    @property
    def address(self) -> str:
        return ADDRESS.format(10 + self.index)

    @property
    def zone(self) -> str:
        return ZONES[self.index - 1]

    @property
    def socket(self) -> str:
        return str(self.socket_dir / "docker.sock")

    @property
    def host(self) -> str:
        """The DOCKER_HOST of this node's dockerd."""
        return f"unix://{self.socket}"

    def docker(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 60) -> str:
        """This node's engine through the docker CLI."""
        return _run("docker", "-H", self.host, *args, input=input, check=check, timeout=timeout)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """This node's Engine API (plain HTTP on its socket): the decoded JSON answer, else its text."""
        conn = _UnixConnection(self.socket, timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status >= 400:
                raise AssertionError(f"{method} {path} on {self.hostname}: {resp.status} {raw.decode()[:500]}")
            if resp.getheader("Content-Type", "").startswith("application/json"):
                return json.loads(raw)
            return raw.decode()
        finally:
            conn.close()

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.container, check=False).strip() == "true"

    def answers(self) -> bool:
        try:
            self.api("GET", "/_ping", timeout=2)
        except (OSError, AssertionError, json.JSONDecodeError):
            return False
        return True

    def wait_answers(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline or not self.running():
                logs = subprocess.run(["docker", "logs", "--tail", "30", self.container], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
                raise AssertionError(f"dockerd of {self.hostname} does not answer on {self.socket}:\n{logs}")
            time.sleep(0.1)

    def create(self) -> None:
        """The node's container, started (dockerd as its command, docker-init as PID 1)."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        docker(
            "run", "-d", "--name", self.container, "--hostname", self.hostname, "--label", LABEL,
            "--network", NETWORK, "--ip", self.address,
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--cgroupns", "host",
            "-v", "/usr:/usr:ro",
            "--mount", f"type=volume,dst=/var/lib/docker,volume-label={LABEL}",
            # /run on a tmpfs: a restarted node starts as a rebooted machine would, with no stale
            # docker.pid (dockerd refuses to start when its pid, the same in a new container, runs)
            "--tmpfs", "/run", "-v", f"{self.socket_dir}:/mariposa-node",
            # docker-init (tini) from the host's /usr: `--init` would bind it onto /sbin, a symlink
            # into the /usr bind mount, which fails
            NODE_IMAGE, "/usr/bin/docker-init", "--",
            "dockerd", "-H", "unix:///mariposa-node/docker.sock", "-H", "unix:///run/docker.sock",
            "--cgroup-parent", f"/{self.container}",
        )

    def stop(self, kill: bool = True) -> None:
        """Takes the node down: killed (a power cut: its dockerd says nothing to the swarm) or stopped
        (dockerd shuts down its containers first)."""
        if kill:
            docker("kill", self.container)
        else:
            docker("stop", "-t", "20", self.container, timeout=60)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)  # a dead dockerd's socket file would look like a live one
        _remove_cgroups(self.index)

    def start(self, timeout: float = 30) -> None:
        """Starts the node's container again: dockerd rejoins the swarm from its volume's state."""
        docker("start", self.container)
        self.wait_answers(timeout)


@dataclass
class Event:
    at: float  # time.monotonic() when it arrived
    data: dict

    @property
    def type(self) -> str:
        return self.data.get("Type", "")

    @property
    def action(self) -> str:
        return self.data.get("Action", "")

    @property
    def attributes(self) -> dict:
        return self.data.get("Actor", {}).get("Attributes", {})


class EventLog:
    """The Engine's /events stream of one node, read in a thread into a list, every type."""

    def __init__(self, node: Node):
        self.node = node
        self.events: list[Event] = []
        self._since_ns = time.time_ns()
        self._conn = _UnixConnection(node.socket, None)
        # `since` is in whole seconds: the events of the second before are dropped by their timeNano
        self._conn.request("GET", f"/events?since={self._since_ns // 10**9}")
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            raise AssertionError(f"/events on {node.hostname}: {self._resp.status}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # ends when close() shuts the socket down under it: http.client then fails in several ways
        # (OSError, ValueError, AttributeError from its half-closed chunk reader), all meaning "closed"
        with contextlib.suppress(Exception):
            while line := self._resp.readline():
                if line.strip() and (data := json.loads(line)).get("timeNano", 0) >= self._since_ns:
                    self.events.append(Event(time.monotonic(), data))

    def of(self, *types: str) -> list[Event]:
        return [e for e in self.events if e.type in types]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        self._thread.join(5)


@dataclass
class Swarm:
    """The three nodes, node 1 the manager. `up_seconds`: bring-up time; `image_built`: whether
    that included building the node image."""

    nodes: list[Node]
    up_seconds: float = 0.0
    image_built: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def describe(self) -> str:
        """The bring-up figure and its parts."""
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items())
        image = "built" if self.image_built else "cached"
        return f"three-node swarm up in {self.up_seconds:.1f} s (node image {image}: {parts})"

    def node(self, hostname: str) -> Node:
        for n in self.nodes:
            if n.hostname == hostname:
                return n
        raise KeyError(hostname)

    def node_states(self) -> dict[str, str]:
        """Hostname -> the manager's view of the node (ready, down, unknown)."""
        return {n["Description"]["Hostname"]: n["Status"]["State"] for n in self.manager.api("GET", "/nodes")}

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (states := self.node_states()) != {n.hostname: "ready" for n in self.nodes}:
            if time.monotonic() > deadline:
                raise AssertionError(f"swarm nodes not all ready after {timeout} s: {states}")
            time.sleep(0.2)

    def events(self) -> EventLog:
        return EventLog(self.manager)

    def load_image(self, image: str) -> None:
        """Copies an image of the host engine into every node (no registry: `docker save | load`)."""
        data = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=120).stdout
        for n in self.nodes:
            n.docker("load", "-q", input=data, timeout=120)

    def reset(self) -> None:
        """Between tests: every node up and ready, and none of what tests make: services, secrets,
        configs, swarm networks (the manager's), containers and volumes (each node's)."""
        for n in self.nodes:
            if not n.running():
                n.start()
        m = self.manager
        for svc in m.api("GET", "/services"):
            m.api("DELETE", f"/services/{svc['ID']}")
        for kind in ("secrets", "configs"):
            for obj in m.api("GET", f"/{kind}"):
                m.api("DELETE", f"/{kind}/{obj['ID']}")
        deadline = time.monotonic() + 20
        for n in self.nodes:  # a removed service's containers go asynchronously (and quickly)
            while (left := n.docker("ps", "-aq").split()) and time.monotonic() < deadline:
                time.sleep(0.2)
            if left:  # a test's own container, or a task the agent was slow to remove
                n.docker("rm", "-f", "-v", *left, check=False)
            for vol in n.api("GET", "/volumes")["Volumes"] or []:
                n.api("DELETE", f"/volumes/{vol['Name']}?force=true")
        for net in m.api("GET", "/networks"):
            if net["Scope"] == "swarm" and net["Name"] != "ingress":
                with contextlib.suppress(AssertionError):  # still attached somewhere: the next reset
                    m.api("DELETE", f"/networks/{net['Id']}")
        self.wait_ready()


def start_swarm() -> Swarm:
    """Brings the three nodes up as one swarm; on any failure removes what it made and raises."""
    t0 = time.monotonic()
    remove_leftovers()
    built = ensure_node_image()
    t_image = time.monotonic()
    socket_root = Path(tempfile.mkdtemp(prefix=SOCKET_DIRS))
    swarm = Swarm([Node(i, socket_root / f"node{i}") for i in (1, 2, 3)], image_built=built)
    try:
        if (subnet := _network_subnet()) is None:
            docker("network", "create", "--driver", "bridge", "--subnet", SUBNET, "--label", LABEL, NETWORK)
        elif subnet != SUBNET:
            raise AssertionError(f"network {NETWORK} exists with subnet {subnet}, not {SUBNET}: remove it")
        for n in swarm.nodes:
            n.create()
        for n in swarm.nodes:
            n.wait_answers()
        t_engines = time.monotonic()
        m = swarm.manager
        m.docker("swarm", "init", "--advertise-addr", m.address, "--dispatcher-heartbeat", HEARTBEAT)
        token = m.docker("swarm", "join-token", "-q", "worker").strip()
        for n in swarm.nodes[1:]:
            n.docker("swarm", "join", "--advertise-addr", n.address, "--token", token, f"{m.address}:2377")
        for n in swarm.nodes:
            n.node_id = n.api("GET", "/info")["Swarm"]["NodeID"]
            m.docker("node", "update", "--label-add", f"zone={n.zone}", n.node_id)
        swarm.wait_ready()
        t_swarm = time.monotonic()
        swarm.load_image(TEST_IMAGE)
        t_end = time.monotonic()
    except BaseException:
        stop_swarm(swarm)
        raise
    swarm.up_seconds = t_end - t0
    swarm.timings = {"image": t_image - t0, "engines": t_engines - t_image, "swarm": t_swarm - t_engines,
                     "load": t_end - t_swarm}
    return swarm


def stop_swarm(swarm: Swarm) -> None:
    remove_leftovers()
    shutil.rmtree(swarm.manager.socket_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def three_node_swarm(docker_images: None) -> Iterator[Swarm]:
    """A real three-node Swarm (see the module's docstring), once per session; torn down at the end,
    failure or not. Tests leave it as they found it: `swarm.reset()` removes services and networks
    and starts any node a test stopped (the test module does it after each test)."""
    swarm = start_swarm()
    print(f"\n{swarm.describe()}")
    try:
        yield swarm
    finally:
        stop_swarm(swarm)
