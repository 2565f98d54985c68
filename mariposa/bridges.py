"""The Linux bridges Mariposa owns: one per project network, which every runtime's instances join.

Why Mariposa makes the bridge and not Docker: a project mixes Docker containers, LXC containers and
VMs on one network with one address plan, and the daemon's DNS responder answers on the bridge's
gateway. Docker adopts a bridge that exists (``com.docker.network.bridge.name``) and, having not
made it, leaves it in place when its network goes; LXC veths and VM taps plug into the same bridge.
The address plan is the split of the subnet in two halves: Docker's IPAM hands out the lower half
(``--ip-range``), the other runtimes the upper half, each from its own books, so no two instances
ever get one address without the two having to talk.

Each network has a record (``NAME.json``: name, bridge, subnet, labels) written before the bridge is
made, so a crash half way leaves something ``drop`` finds. The bridge is ``mlx`` + 12 hex (a prefix
no one else uses, within the 15 bytes of an interface name), on a free /22 of 10.200/13. Docker
sets the FORWARD policy to DROP, so each bridge gets ``iptables -I DOCKER-USER -i BR -o BR -j
ACCEPT`` when that chain exists, removed with the bridge. ``lxc-net`` would do this for LXC, but it
needs systemd, which a host like this one lacks.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
import trio

from mariposa.drivers.base import DriverError
from mariposa.drivers.tools import run_tool
from mariposa.model import LABEL_NETWORK, LABEL_PROJECT_NAME

log = structlog.get_logger()

Member = tuple[str, str | None]  # an instance on a network: (its project's name, its address there)

SUBNETS = ipaddress.IPv4Network("10.200.0.0/13")
PREFIX = 22  # 1,022 addresses a network: 510 for Docker's IPAM, 509 for LXC and VMs
DOCKER_BRIDGE_OPTION = "com.docker.network.bridge.name"


def bridge_name(network: str) -> str:
    """A Linux interface name (15 bytes at most) for a network of any length."""
    return "mlx" + hashlib.sha256(network.encode()).hexdigest()[:12]


def project_network(project_id: str) -> str:
    """The name of a project's own network in the records (and of its bridge)."""
    return f"mlx{project_id[:12]}"


def gateway(rec: dict[str, Any]) -> str:
    """The bridge's own address: the instances' route out and the DNS responder's address."""
    return str(next(ipaddress.ip_network(rec["subnet"]).hosts()))


def prefix(rec: dict[str, Any]) -> int:
    return ipaddress.ip_network(rec["subnet"]).prefixlen


def mac_for(address: str, prefix: str) -> str:
    """The MAC of an address, as Docker derives its own (02:42 + the IPv4 octets), under a prefix
    of the runtime's own: an address handed out again comes with the same MAC, so the host's and
    the neighbours' ARP caches stay right. With a random MAC, a replacement that got its
    predecessor's address was unreachable from the host for seconds (the stale neighbour entry),
    and failed its first health checks."""
    return prefix + ":" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def docker_range(rec: dict[str, Any]) -> str:
    """The lower half of the subnet: what Docker's IPAM may hand out."""
    return str(next(ipaddress.ip_network(rec["subnet"]).subnets(prefixlen_diff=1)))


def host_addresses(rec: dict[str, Any]) -> Iterator[str]:
    """The upper half of the subnet: the addresses for instances of the runtimes that have no IPAM
    of their own (LXC, VMs). Never one ending in .0 or .255: valid in a /22, but tools that assume
    a /24 take them for a network or broadcast address."""
    upper = list(ipaddress.IPv4Network(rec["subnet"]).subnets(prefixlen_diff=1))[1]
    return (str(h) for h in upper if h.packed[3] not in (0, 255))


async def run(*argv: str, check: bool = True, what: str = "") -> tuple[int, str]:
    """One tool call (``ip``, ``iptables``): its exit code and its output, stderr included."""
    return await run_tool("network", "apt-get install iproute2 iptables", *argv, check=check, what=what)


class Bridges:
    """The records and bridges under one directory; drivers of one daemon share one of these."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = trio.Lock()  # subnets are handed out one at a time
        # Networks seen up, so a scale-up of 20 checks the bridge once; one removed behind our back
        # makes a start fail, and the driver then ``forget``s it and ensures it again.
        self._up: dict[str, dict[str, Any]] = {}
        # The upper half of a subnet is shared by the drivers without an IPAM (LXC, QEMU): each
        # chooses and records an address under this lock, from what none of them has (``free``).
        self.allocation = trio.Lock()
        self._users: list[Callable[[str], dict[str, Member]]] = []
        self._reservations: list[Callable[[], Awaitable[set[str]]]] = []
        self._refused: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()  # subnets a runtime said are taken
        self._removals = trio.Lock()

    def add_user(self, members: Callable[[str], dict[str, Member]]) -> None:
        """A driver whose instances join these bridges (LXC, QEMU): ``members(network)`` says which
        of its instances are on that network, as name -> (project name, address or None)
        (blocking: called in a worker thread)."""
        self._users.append(members)

    def refuse(self, subnet: str) -> None:
        """Never choose ``subnet`` again in this process: the runtime refused it as taken."""
        self._refused.add(ipaddress.ip_network(subnet))

    def add_reservations(self, subnets: Callable[[], Awaitable[set[str]]]) -> None:
        """A runtime that holds subnets no interface shows (Docker: a network whose bridge is
        gone still holds its subnet in its IPAM, and a new network overlapping it is refused
        with "Pool overlaps"): ``subnets()`` lists them, asked whenever a subnet is chosen."""
        self._reservations.append(subnets)

    async def members(self, network: str) -> dict[str, Member]:
        found: dict[str, Member] = {}
        for members in self._users:
            found.update(await trio.to_thread.run_sync(members, network))
        return found

    async def free(self, rec: dict[str, Any]) -> str:
        """An address of the upper half no instance of any runtime has; the caller holds
        ``allocation`` until its instance's record holds the address."""
        assert self.allocation.locked(), "hold Bridges.allocation while choosing and recording an address"
        taken = {address for _project, address in (await self.members(rec["name"])).values() if address}
        found = next((a for a in host_addresses(rec) if a not in taken), None)
        if found is None:
            raise DriverError(f"network: no free address on network {rec['name']} ({rec['subnet']}'s upper half "
                              "is for LXC and VMs)")
        return found

    def _file(self, network: str) -> Path:
        return self.path / f"{network}.json"

    def _read(self, network: str) -> dict[str, Any] | None:
        try:
            rec = json.loads(self._file(network).read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    async def get(self, network: str) -> dict[str, Any] | None:
        return await trio.to_thread.run_sync(self._read, network)

    async def records(self) -> list[dict[str, Any]]:
        def scan() -> list[dict[str, Any]]:
            return [rec for f in sorted(self.path.glob("*.json")) if (rec := self._read(f.stem)) is not None]

        return await trio.to_thread.run_sync(scan)

    def forget(self, network: str) -> None:
        self._up.pop(network, None)

    async def is_up(self, bridge: str) -> bool:
        code, _ = await run("ip", "link", "show", "dev", bridge, check=False)
        return code == 0

    async def exists(self, name: str) -> bool:
        """Whether a network of this name (a record's, or a bridge made outside Mariposa) is up."""
        rec = await self.get(name)
        if rec is not None:
            return await self.is_up(rec["bridge"])
        return len(name) <= 15 and await self.is_up(name)

    async def _used_subnets(self) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Every subnet on a host interface (Docker's bridges included), recorded here, or held by
        a runtime (``add_reservations``)."""
        _, out = await run("ip", "-4", "-o", "addr", "show")
        used: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set(self._refused)
        for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out):
            used.add(ipaddress.ip_interface(m.group(1)).network)
        held: list[str] = [rec.get("subnet", "") for rec in await self.records()]
        for reserved in self._reservations:
            try:
                held += sorted(await reserved())
            except DriverError as exc:  # the runtime away: its own create will say so
                log.warning("network: subnets held by a runtime not known", error=str(exc))
        for subnet in held:
            try:
                used.add(ipaddress.ip_network(subnet))
            except ValueError:
                continue
        return used

    async def ensure(self, network: str, labels: dict[str, str]) -> dict[str, Any]:
        """The network's bridge, up, with its gateway address and its DOCKER-USER rule."""
        if network in self._up:
            return self._up[network]
        async with self._lock:
            await trio.to_thread.run_sync(lambda: self.path.mkdir(parents=True, exist_ok=True))
            rec = await self.get(network)
            if rec is None:
                used = await self._used_subnets()
                subnets = list(SUBNETS.subnets(new_prefix=PREFIX))
                start = int(hashlib.sha256(network.encode()).hexdigest()[:8], 16)
                subnet = None
                for i in range(len(subnets)):  # from a spot the name picks, so two daemons rarely race
                    candidate = subnets[(start + i) % len(subnets)]
                    if not any(candidate.overlaps(u) for u in used):
                        subnet = candidate
                        break
                if subnet is None:
                    raise DriverError(f"network: no free /{PREFIX} in {SUBNETS} for network {network}")
                rec = {"name": network, "bridge": network if network.startswith("mlx") else bridge_name(network),
                       "subnet": str(subnet), "labels": labels}
                text = json.dumps(rec)
                await trio.to_thread.run_sync(_write_atomic, self._file(network), text)
            bridge = rec["bridge"]
            if not await self.is_up(bridge):
                await run("ip", "link", "add", bridge, "type", "bridge", what=f"make bridge {bridge}")
                await run("ip", "addr", "add", f"{gateway(rec)}/{prefix(rec)}", "dev", bridge)
                await run("ip", "link", "set", bridge, "up")
            await _forward_rule(bridge, add=True)
            self._up[network] = rec
            return rec

    async def remove_project(self, project_id: str, project_name: str = "") -> list[str]:
        """The project's bridge goes, and the networks it made for others to join (``networks:``,
        not external) that no other project's instance is on; one line for each kept."""
        async with self._removals:
            await self.drop(project_network(project_id))
            if not project_name:
                return []
            kept = []
            for rec in await self.records():
                labels = rec.get("labels", {})
                if labels.get(LABEL_PROJECT_NAME) != project_name or LABEL_NETWORK not in labels:
                    continue
                users = sorted(name for name, (project, _address) in (await self.members(rec["name"])).items()
                               if project != project_name)
                if users:
                    kept.append(f"network {rec['name']} is kept, still in use by {', '.join(users)}")
                else:
                    await self.drop(rec["name"])
            return kept

    async def drop(self, network: str) -> None:
        """The bridge, its rule and its record go; a network already gone is not an error."""
        async with self._lock:
            self._up.pop(network, None)
            rec = await self.get(network)
            if rec is None:
                return
            bridge = rec["bridge"]
            await _forward_rule(bridge, add=False)
            if await self.is_up(bridge):
                await run("ip", "link", "del", bridge, check=False)
            await trio.Path(self._file(network)).unlink(missing_ok=True)


async def _forward_rule(bridge: str, add: bool) -> None:
    rule = ["DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    code, _ = await run("iptables", "-w", "-C", *rule, check=False)
    if add and code != 0:
        chain, _ = await run("iptables", "-w", "-n", "-L", "DOCKER-USER", check=False)
        if chain == 0:
            await run("iptables", "-w", "-I", *rule, what=f"allow forwarding on {bridge}")
    elif not add and code == 0:
        await run("iptables", "-w", "-D", *rule, check=False)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
