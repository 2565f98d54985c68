"""The DNS responder: one UDP socket on each project bridge's gateway, port 53.

Why one socket a project and not one socket for all: the address a query arrives on says which
project asks, with no table of client addresses to keep current, and a project's socket closes
with its bridge. Sockets bind with ``IP_FREEBIND``, so one can wait for a bridge that a restart
of the host has not made again yet.

Docker containers get the gateway as their DNS server: Docker's embedded DNS (127.0.0.11) answers
instance names itself and forwards the rest here, from the container's address. LXC containers
and VMs have it in their resolv.conf. A project's own names are answered from its ``Zone``
(mariposa/dns/zone.py), rebuilt at every runtime event, health change or instance taken out of
service, and once a second besides; names that are not the project's go to the host's resolvers
(its ``/etc/resolv.conf``, read again at every rebuild), or to the servers the asking instance's
manifest names in ``dns``, and their answer comes back as it is.
Answers carry TTL 0: a name follows scale and replacements as soon as the zone does.

UDP only: the answers a project's names make fit in 512 bytes up to about 30 addresses, and
Docker's embedded DNS retries over TCP only on a truncated answer; a bigger set is cut to what
fits, flagged truncated, as RFC 1035 says.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import structlog
import trio

from mariposa.bridges import Bridges, gateway, project_network
from mariposa.dns.zone import Zone
from mariposa.model import LABEL_PROJECT

log = structlog.get_logger()

PORT = 53
FORWARD_TIMEOUT = 3.0
MAX_UDP = 512
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def host_resolvers(path: str = "/etc/resolv.conf", exclude: frozenset[str] = frozenset()
                   ) -> list[tuple[str, int]]:
    """The host's name servers, but never one of ours (a loop)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in exclude:
            out.append((parts[1], 53))
    return out


def answer(zone: Zone, query: dns.message.Message) -> dns.message.Message | None:
    """The answer to a query for the project's names, or None when the query is for the world."""
    if len(query.question) != 1:
        return None
    question = query.question[0]
    name = question.name.to_text()
    addresses = zone.lookup(name)
    if addresses is None and not zone.owns(name):
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if addresses is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and addresses:
        response.answer.append(dns.rrset.from_text_list(question.name, 0, "IN", "A", list(addresses)))
    return response  # another type of a name we have: NODATA, so no resolver asks the world


def to_wire(response: dns.message.Message, limit: int = MAX_UDP) -> bytes:
    """The response, cut to fit ``limit`` bytes (flagged truncated) when it does not."""
    wire = response.to_wire()
    if len(wire) <= limit:
        return wire
    rrset = response.answer[0]
    while len(rrset) > 1 and len(wire) > limit:
        rrset.discard(list(rrset)[-1])
        response.flags |= dns.flags.TC
        wire = response.to_wire()
    return wire


class DnsResponder:
    """Serves every project network of ``bridges``; ``zones`` maps a project id to its names."""

    def __init__(self, bridges: Bridges, zones: Callable[[], dict[str, Zone]], port: int = PORT) -> None:
        self.bridges = bridges
        self.zones = zones
        self.port = port
        self._sockets: dict[str, tuple[str, trio.CancelScope]] = {}  # project id -> (gateway, its server)
        self.upstream: list[tuple[str, int]] = []  # the host's resolvers, as they are at the last sync
        self.resolv_conf = "/etc/resolv.conf"

    async def sync(self, nursery: trio.Nursery) -> None:
        """One server for each project network that has a record now; none for one that has gone."""
        wanted: dict[str, str] = {}
        for rec in await self.bridges.records():
            project_id = (rec.get("labels") or {}).get(LABEL_PROJECT)
            if project_id and rec.get("name") == project_network(project_id):
                wanted[project_id] = gateway(rec)
        ours = frozenset(wanted.values())
        self.upstream = await trio.to_thread.run_sync(lambda: host_resolvers(self.resolv_conf, ours))
        for project_id, (address, scope) in list(self._sockets.items()):
            if wanted.get(project_id) != address:
                scope.cancel()
                del self._sockets[project_id]
                log.info("dns: zone removed", project=project_id[:12], address=address)
        for project_id, address in wanted.items():
            if project_id not in self._sockets:
                try:
                    sock = self._bind(address)
                except OSError as exc:
                    log.warning("dns: cannot answer on the project's gateway", project=project_id[:12],
                                address=address, error=os.strerror(exc.errno or errno.EIO))
                    continue
                scope = trio.CancelScope()
                self._sockets[project_id] = (address, scope)
                nursery.start_soon(self._serve, sock, project_id, scope)
                log.info("dns: answering", project=project_id[:12], address=address)

    def _bind(self, address: str) -> trio.socket.SocketType:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # bind of a UDP socket neither blocks nor resolves: safe on the loop
            sock._sock.bind((address, self.port))  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve(self, sock: trio.socket.SocketType, project_id: str, scope: trio.CancelScope) -> None:
        with scope, sock:
            async with trio.open_nursery() as nursery:
                while True:
                    data, client = await sock.recvfrom(4096)
                    try:
                        query = dns.message.from_wire(data)
                    except dns.exception.DNSException:
                        continue  # not DNS: no answer, as a server that cannot parse it gives none
                    zone = self.zones().get(project_id)
                    response = answer(zone, query) if zone is not None else None
                    if response is not None:
                        await _send(sock, to_wire(response), client)
                    else:
                        servers = zone.upstreams.get(client[0]) if zone is not None else None
                        upstream = [(s, 53) for s in servers] if servers else self.upstream
                        nursery.start_soon(self._forward, sock, data, query, client, upstream)

    async def _forward(self, sock: trio.socket.SocketType, data: bytes, query: dns.message.Message,
                       client: Any, upstream: list[tuple[str, int]]) -> None:
        """Ask the resolvers in turn; SERVFAIL when none answers in time."""
        for server, port in upstream:
            with trio.move_on_after(FORWARD_TIMEOUT / max(1, len(upstream))):
                out = trio.socket.socket(trio.socket.AF_INET6 if ":" in server else trio.socket.AF_INET,
                                         trio.socket.SOCK_DGRAM)
                with out:
                    await out.connect((server, port))
                    await out.send(data)
                    while True:
                        reply = await out.recv(65535)
                        if reply[:2] == data[:2]:  # its id: an answer to this query
                            await _send(sock, reply, client)
                            return
        failed = dns.message.make_response(query)
        failed.set_rcode(dns.rcode.SERVFAIL)
        await _send(sock, failed.to_wire(), client)

    def close(self) -> None:
        for _address, scope in self._sockets.values():
            scope.cancel()
        self._sockets.clear()


async def _send(sock: trio.socket.SocketType, data: bytes, client: Any) -> None:
    """A client gone (its container removed) is no reason to stop answering the others."""
    try:
        await sock.sendto(data, client)
    except OSError as exc:
        log.debug("dns: answer not sent", client=str(client), error=os.strerror(exc.errno or errno.EIO))
