"""A small DHCP server (RFC 2131/2132) for the VMs that boot their own operating system.

Why DHCP at all: a VM booted from Mariposa's kernel and initramfs is told its address on the
kernel command line, and our init sets it. A VM that boots a user's disk image through its own
bootloader (``-M q35`` firmware), or a user's kernel, initrd and command line, runs an init we did
not write: the one way to tell it its address, route, name servers and host name without reaching
into its disk is the way every stock image already asks, DHCP.

Why static leases only: Mariposa has already chosen each VM's address (the upper half of the
project's subnet, under ``Bridges.allocation``, mariposa/bridges.py) and derived the VM's MAC from
it. This server hands out exactly that address to exactly that MAC, and answers nothing to a MAC it
was not given: a pool of its own would be a second allocator, able to give a Docker or LXC
instance's address to a stranger on the bridge. The lease lasts a day and is renewed at once
whatever happens, since the address is the VM's for its whole life.

Why broadcast replies: the client has no address yet, and a unicast to the address being offered
needs an ARP entry the host cannot have (or a raw socket writing Ethernet frames). RFC 2131 §4.1
allows broadcasting every reply, and every client accepts one (it matches on ``xid`` and
``chaddr``). Each bridge gets its own socket, bound to 0.0.0.0:67 with ``SO_BINDTODEVICE``, so a
broadcast leaves on that bridge only and a request is answered from that bridge's leases only;
Linux lets several sockets share port 67 when each is bound to its own device (``SO_REUSEADDR``).

The wire format (``parse``, ``reply``) and the choice of answer (``decide``) are pure functions,
tested without sockets; ``DhcpServer`` is the thin loop around them.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from enum import IntEnum
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

log = structlog.get_logger()

SERVER_PORT = 67
CLIENT_PORT = 68
LEASE_TIME = 86400  # a day; renewal (T1) at half of it, rebinding (T2) at 7/8, as RFC 2131 §4.4.5 says
RENEW_TIME = LEASE_TIME // 2
REBIND_TIME = LEASE_TIME * 7 // 8
MAGIC = b"\x63\x82\x53\x63"  # the DHCP "magic cookie" (RFC 2131 §3)
MIN_BOOTP = 300  # RFC 1542: BOOTP relays and old clients drop a message shorter than this
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # op .. file: the fixed 236 bytes
BOOTREQUEST, BOOTREPLY = 1, 2
ETHERNET, ETHERNET_LEN = 1, 6
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)

# options (RFC 2132)
PAD, SUBNET_MASK, ROUTER, DNS, HOSTNAME = 0, 1, 3, 6, 12
REQUESTED_IP, LEASE, MESSAGE_TYPE, SERVER_ID, RENEW, REBIND, END = 50, 51, 53, 54, 58, 59, 255


class Kind(IntEnum):
    """Option 53, the DHCP message type."""
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


@attrs.frozen
class Lease:
    mac: str  # "02:4d:0a:c8:00:05", lower case
    address: str  # "10.200.0.5"
    prefix: int  # 22
    gateway: str | None  # option 3; None: no router option
    dns: tuple[str, ...] = ()  # option 6
    hostname: str | None = None  # option 12


# {bridge interface name: (this server's address on it, {mac: Lease})}
Leases = Callable[[], Awaitable[dict[str, tuple[str, dict[str, Lease]]]]]


@attrs.frozen
class Request:
    """What a client's BOOTREQUEST says that the server needs."""
    kind: Kind
    xid: int
    flags: int
    mac: str  # chaddr, lower case
    chaddr: bytes  # the 16 bytes as they came, echoed in the reply
    ciaddr: str | None  # None for 0.0.0.0
    giaddr: str  # a relay's address (0.0.0.0: none), echoed in the reply
    requested: str | None = None  # option 50
    server_id: str | None = None  # option 54


def _address(raw: bytes) -> str | None:
    return None if raw == b"\0\0\0\0" else socket.inet_ntoa(raw)


def _options(data: bytes) -> dict[int, bytes] | None:
    """The options of ``data`` (what follows the magic cookie), or None when one runs past the end.
    A repeated option is joined as RFC 3396 says."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            return out
        if i + 1 >= len(data):
            return None
        length = data[i + 1]
        value = data[i + 2:i + 2 + length]
        if len(value) != length:
            return None
        out[code] = out.get(code, b"") + value
        i += 2 + length
    return out  # no END: lenient, as most servers are, when every option was whole


def parse(packet: bytes) -> Request | None:
    """The request in ``packet``, or None for anything that is not a well-formed DHCP request from
    an Ethernet client (never raises: whatever arrives on port 67 is untrusted)."""
    try:
        if len(packet) < HEADER.size + len(MAGIC) or packet[HEADER.size:HEADER.size + 4] != MAGIC:
            return None
        (op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yiaddr, _siaddr, giaddr, chaddr,
         _sname, _file) = HEADER.unpack_from(packet)
        if op != BOOTREQUEST or htype != ETHERNET or hlen != ETHERNET_LEN:
            return None
        options = _options(packet[HEADER.size + 4:])
        if options is None or len(options.get(MESSAGE_TYPE, b"")) != 1:
            return None  # plain BOOTP (no message type) is not served
        try:
            kind = Kind(options[MESSAGE_TYPE][0])
        except ValueError:
            return None
        if kind in (Kind.OFFER, Kind.ACK, Kind.NAK):
            return None  # a server's message, not a request
        requested = options.get(REQUESTED_IP)
        server_id = options.get(SERVER_ID)
        return Request(
            kind=kind, xid=xid, flags=flags, mac=":".join(f"{b:02x}" for b in chaddr[:6]), chaddr=chaddr,
            ciaddr=_address(ciaddr), giaddr=socket.inet_ntoa(giaddr),
            requested=socket.inet_ntoa(requested) if requested is not None and len(requested) == 4 else None,
            server_id=socket.inet_ntoa(server_id) if server_id is not None and len(server_id) == 4 else None)
    except (struct.error, ValueError, IndexError, OSError):  # belt and braces: garbage is no answer
        return None


def _option(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def reply(request: Request, lease: Lease, server_ip: str, kind: Kind) -> bytes:
    """The BOOTREPLY answering ``request`` with ``lease`` (OFFER, ACK or NAK), as RFC 2131 table 3
    lays it out: a NAK carries only its type and the server id; the ACK to an INFORM carries no
    address and no lease time (the client has its address already)."""
    server = socket.inet_aton(server_ip)
    zero = b"\0\0\0\0"
    inform = request.kind == Kind.INFORM
    yiaddr = zero if kind == Kind.NAK or inform else socket.inet_aton(lease.address)
    ciaddr = socket.inet_aton(request.ciaddr) if request.ciaddr and kind != Kind.NAK else zero
    header = HEADER.pack(BOOTREPLY, ETHERNET, ETHERNET_LEN, 0, request.xid, 0, request.flags, ciaddr, yiaddr,
                         zero if kind == Kind.NAK else server, socket.inet_aton(request.giaddr),
                         request.chaddr.ljust(16, b"\0")[:16], b"", b"")
    options = [_option(MESSAGE_TYPE, bytes((kind,))), _option(SERVER_ID, server)]
    if kind != Kind.NAK:
        if not inform:
            options += [_option(LEASE, struct.pack("!I", LEASE_TIME)), _option(RENEW, struct.pack("!I", RENEW_TIME)),
                        _option(REBIND, struct.pack("!I", REBIND_TIME))]
        mask = ipaddress.IPv4Network(f"0.0.0.0/{lease.prefix}").netmask.packed
        options.append(_option(SUBNET_MASK, mask))
        if lease.gateway:
            options.append(_option(ROUTER, socket.inet_aton(lease.gateway)))
        if lease.dns:
            options.append(_option(DNS, b"".join(socket.inet_aton(a) for a in lease.dns[:63])))
        if lease.hostname:
            options.append(_option(HOSTNAME, lease.hostname.encode()[:255]))
    packet = header + MAGIC + b"".join(options) + bytes((END,))
    return packet.ljust(MIN_BOOTP, b"\0")


def decide(request: Request, leases: dict[str, Lease], server_ip: str) -> tuple[Kind, Lease] | None:
    """What to answer ``request`` with on a bridge whose leases are ``leases``: None for no answer."""
    lease = leases.get(request.mac)
    if lease is None:
        return None  # never an address Mariposa did not allocate; another server may know the MAC
    if request.kind == Kind.DISCOVER:
        return Kind.OFFER, lease
    if request.kind == Kind.REQUEST:
        if request.server_id is not None and request.server_id != server_ip:
            return None  # the client chose another server's offer
        wanted = request.requested or request.ciaddr
        if wanted is None:
            return None  # malformed: a REQUEST names the address it wants one way or the other
        return (Kind.ACK if wanted == lease.address else Kind.NAK), lease
    if request.kind == Kind.INFORM:
        return Kind.ACK, lease
    return None  # RELEASE, DECLINE: the address stays the VM's; nothing to answer


def leases_from_sidecars(sides: Iterable[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Lease]]]:
    """The leases of VMs from their QEMU sidecars (``nics``: bridge, address, prefix, mac; plus
    ``gateway``, ``dns``, ``hostname``). The project network (the first NIC) gets the router and
    the name servers; another network only its address, so a VM has one default route. The
    server's address on a bridge is its gateway, the subnet's first host (bridges.gateway)."""
    out: dict[str, tuple[str, dict[str, Lease]]] = {}
    for side in sides:
        for index, nic in enumerate(side.get("nics") or ()):
            if not nic.get("address") or not nic.get("prefix") or not nic.get("mac") or not nic.get("bridge"):
                continue  # a network without addresses (a bridge made outside Mariposa): no lease
            network = ipaddress.IPv4Interface(f"{nic['address']}/{nic['prefix']}").network
            server = str(next(network.hosts()))
            first = index == 0
            lease = Lease(mac=str(nic["mac"]).lower(), address=nic["address"], prefix=int(nic["prefix"]),
                          gateway=side.get("gateway") if first else None,
                          dns=tuple(side.get("dns") or ()) if first else (),
                          hostname=side.get("hostname"))
            out.setdefault(nic["bridge"], (server, {}))[1][lease.mac] = lease
    return out


def _is_up(name: str) -> bool:
    """Whether the interface exists and is administratively up (IFF_UP); a bridge with no port yet
    is up without carrier, and a socket bound to it waits for its first VM."""
    if not name or "/" in name or name.startswith("."):
        return False
    try:
        return bool(int(Path(f"/sys/class/net/{name}/flags").read_text(), 16) & 1)
    except (OSError, ValueError):
        return False


class DhcpServer:
    """Answers the VMs of every bridge that ``leases()`` names, from their leases only."""

    def __init__(self, leases: Leases, interval: float = 1.0, port: int = SERVER_PORT,
                 client_port: int = CLIENT_PORT) -> None:
        self.leases = leases
        self.interval = interval
        self.port = port
        self.client_port = client_port
        self._current: dict[str, tuple[str, dict[str, Lease]]] = {}  # the last answer of leases()
        self._serving: dict[str, trio.CancelScope] = {}  # bridge -> its socket's task
        self._failing: dict[str, str] = {}  # bridge -> why its socket could not be opened last time
        # requests heard and left unanswered (a MAC that is none of ours), by (mac, kind): what the
        # debug log says, countable when the log level hides it
        self.unanswered: collections.Counter[tuple[str, str]] = collections.Counter()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every ``interval`` s: ask ``leases()``, open a socket for each bridge that has leases and is
        up, close the sockets of bridges no longer listed; serve in a nursery; cancellation stops it."""
        try:
            async with trio.open_nursery() as nursery:
                started = False
                while True:
                    try:
                        await self.sync(nursery)
                    except Exception as exc:  # a bug or a failing leases(): keep serving what we know
                        log.error("dhcp: leases not refreshed", error=repr(exc))
                    if not started:
                        task_status.started()
                        started = True
                    await trio.sleep(self.interval)
        finally:
            self.close()

    async def sync(self, nursery: trio.Nursery) -> None:
        """One socket for each bridge with leases that is up; none for any other."""
        current = {bridge: entry for bridge, entry in (await self.leases()).items() if entry[1]}
        up = await trio.to_thread.run_sync(lambda: {bridge for bridge in current if _is_up(bridge)})
        self._current = current
        for bridge in set(self._failing) - up:
            del self._failing[bridge]
        for bridge, scope in list(self._serving.items()):
            if bridge not in up:
                scope.cancel()
                del self._serving[bridge]
                log.info("dhcp: stopped serving", bridge=bridge,
                         reason="no leases" if bridge not in current else "bridge gone")
        for bridge in sorted(up - set(self._serving)):
            try:
                sock = self._bind(bridge)
            except OSError as exc:
                error = os.strerror(exc.errno or errno.EIO)
                # a warning when it starts failing or fails otherwise, not one a second
                (log.debug if self._failing.get(bridge) == error else log.warning)(
                    "dhcp: cannot serve the bridge; retrying", bridge=bridge, error=error)
                self._failing[bridge] = error
                continue
            self._failing.pop(bridge, None)
            scope = trio.CancelScope()
            self._serving[bridge] = scope
            nursery.start_soon(self._serve, bridge, sock, scope)
            log.info("dhcp: serving", bridge=bridge, server=current[bridge][0], leases=len(current[bridge][1]))

    def _bind(self, bridge: str) -> trio.socket.SocketType:
        # none of this blocks: a UDP socket bound to a numeric address, nothing resolved
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, bridge.encode())
            sock.bind(("0.0.0.0", self.port))
        except BaseException:
            sock.close()
            raise
        return trio.socket.from_stdlib_socket(sock)

    async def _serve(self, bridge: str, sock: trio.socket.SocketType, scope: trio.CancelScope) -> None:
        """Answers on one bridge until cancelled; a socket error ends it (logged), and the next sync
        opens the bridge again."""
        with scope, sock:
            try:
                while True:
                    packet, client = await sock.recvfrom(4096)
                    request = parse(packet)
                    if request is None:
                        continue
                    server_ip, leases = self._current.get(bridge, ("", {}))
                    if request.kind in (Kind.RELEASE, Kind.DECLINE):
                        # the address stays the VM's. A DECLINE says the guest saw it in use (ARP):
                        # someone on the bridge has an address Mariposa gave this VM, worth a warning
                        known = request.mac in leases
                        level = log.debug if not known else log.warning if request.kind == Kind.DECLINE else log.info
                        level(f"dhcp: {request.kind.name.lower()}", bridge=bridge, mac=request.mac,
                              address=request.requested or request.ciaddr)
                        continue
                    answer = decide(request, leases, server_ip) if server_ip else None
                    if answer is None:
                        if len(self.unanswered) < 1024 or (request.mac, request.kind.name) in self.unanswered:
                            self.unanswered[request.mac, request.kind.name] += 1
                        log.debug("dhcp: no answer", bridge=bridge, mac=request.mac, kind=request.kind.name)
                        continue
                    kind, lease = answer
                    await sock.sendto(reply(request, lease, server_ip, kind), ("255.255.255.255", self.client_port))
                    log.info(f"dhcp: {kind.name.lower()}", bridge=bridge, mac=request.mac, address=lease.address,
                             to=request.kind.name, source=client[0])  # 0.0.0.0, or the guest's address renewing
            except OSError as exc:
                log.warning("dhcp: socket failed; retrying", bridge=bridge, error=os.strerror(exc.errno or errno.EIO))
            finally:
                if self._serving.get(bridge) is scope:
                    del self._serving[bridge]

    def close(self) -> None:
        for scope in self._serving.values():
            scope.cancel()
        self._serving.clear()
