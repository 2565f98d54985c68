"""The DHCP server's wire format and answers (mariposa/vm/dhcp.py), on packets built here by hand
(not by the code under test), and its sockets' lifecycle on the loopback interface."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
import structlog
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.vm import dhcp
from mariposa.vm.dhcp import DhcpServer, Kind, Lease, Request, decide, leases_from_sidecars, parse, reply

MAC = "02:4d:0a:c8:00:05"
SERVER = "10.200.0.1"
LEASE = Lease(mac=MAC, address="10.200.2.5", prefix=22, gateway=SERVER, dns=(SERVER, "9.9.9.9"), hostname="vm-1")


def packet(kind: int | None, mac: str = MAC, xid: int = 0x1234ABCD, flags: int = 0x8000, ciaddr: str = "0.0.0.0",
           options: bytes = b"", op: int = 1, htype: int = 1, hlen: int = 6) -> bytes:
    """A client's message as RFC 2131 §2 draws it, written out field by field."""
    chaddr = bytes.fromhex(mac.replace(":", "")) + bytes(10)
    out = bytes((op, htype, hlen, 0)) + struct.pack("!IHH", xid, 3, flags)
    out += socket.inet_aton(ciaddr) + bytes(4) + bytes(4) + bytes(4)  # ciaddr yiaddr siaddr giaddr
    out += chaddr + bytes(64) + bytes(128) + b"\x63\x82\x53\x63"
    if kind is not None:
        out += bytes((53, 1, kind))
    return out + options + b"\xff"


def opt(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def options_of(data: bytes) -> dict[int, bytes]:
    """The reply's options, read here independently of the code under test."""
    assert data[236:240] == b"\x63\x82\x53\x63"
    out, i = {}, 240
    while data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        out[data[i]] = data[i + 2:i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return out


def test_parse_discover() -> None:
    req = parse(packet(1, options=opt(50, socket.inet_aton("10.200.2.5")) + opt(12, b"guest")))
    assert req == Request(kind=Kind.DISCOVER, xid=0x1234ABCD, flags=0x8000, mac=MAC,
                          chaddr=bytes.fromhex("024d0ac80005") + bytes(10), ciaddr=None, giaddr="0.0.0.0",
                          requested="10.200.2.5", server_id=None)


def test_parse_request_with_server_id_and_ciaddr() -> None:
    req = parse(packet(3, mac=MAC.upper(), ciaddr="10.200.2.5", options=opt(54, socket.inet_aton(SERVER))))
    assert req is not None
    assert (req.kind, req.mac, req.ciaddr, req.server_id, req.requested) == (
        Kind.REQUEST, MAC, "10.200.2.5", SERVER, None)


def test_offer_round_trip() -> None:
    req = parse(packet(1))
    assert req is not None
    out = reply(req, LEASE, SERVER, Kind.OFFER)
    assert len(out) >= 300
    op, htype, hlen, hops, xid, secs, flags = struct.unpack_from("!BBBBIHH", out)
    assert (op, htype, hlen, hops, xid, secs, flags) == (2, 1, 6, 0, 0x1234ABCD, 0, 0x8000)
    assert socket.inet_ntoa(out[12:16]) == "0.0.0.0"  # ciaddr
    assert socket.inet_ntoa(out[16:20]) == "10.200.2.5"  # yiaddr
    assert socket.inet_ntoa(out[20:24]) == SERVER  # siaddr
    assert out[28:34] == bytes.fromhex("024d0ac80005")
    o = options_of(out)
    assert o[53] == b"\x02"
    assert o[54] == socket.inet_aton(SERVER)
    assert struct.unpack("!I", o[51]) == (86400,)
    assert struct.unpack("!I", o[58]) == (43200,)
    assert struct.unpack("!I", o[59]) == (75600,)
    assert o[1] == socket.inet_aton("255.255.252.0")
    assert o[3] == socket.inet_aton(SERVER)
    assert o[6] == socket.inet_aton(SERVER) + socket.inet_aton("9.9.9.9")
    assert o[12] == b"vm-1"


def test_reply_without_router_dns_or_hostname() -> None:
    req = parse(packet(1))
    assert req is not None
    o = options_of(reply(req, Lease(mac=MAC, address="10.9.0.7", prefix=24, gateway=None, dns=(), hostname=None),
                         "10.9.0.1", Kind.OFFER))
    assert o[1] == socket.inet_aton("255.255.255.0")
    assert not {3, 6, 12} & o.keys()


@pytest.mark.parametrize("how", ["option 50", "ciaddr"])
def test_request_for_the_lease_is_acked(how: str) -> None:
    if how == "option 50":
        raw = packet(3, options=opt(50, socket.inet_aton(LEASE.address)) + opt(54, socket.inet_aton(SERVER)))
    else:  # a renewal: the client has the address and says so in ciaddr, without option 50 or 54
        raw = packet(3, ciaddr=LEASE.address)
    req = parse(raw)
    assert req is not None
    assert decide(req, {MAC: LEASE}, SERVER) == (Kind.ACK, LEASE)
    out = reply(req, LEASE, SERVER, Kind.ACK)
    assert options_of(out)[53] == b"\x05"
    assert socket.inet_ntoa(out[16:20]) == LEASE.address


def test_request_for_another_address_is_naked() -> None:
    req = parse(packet(3, options=opt(50, socket.inet_aton("10.200.2.99"))))
    assert req is not None
    assert decide(req, {MAC: LEASE}, SERVER) == (Kind.NAK, LEASE)
    out = reply(req, LEASE, SERVER, Kind.NAK)
    o = options_of(out)
    assert o == {53: b"\x06", 54: socket.inet_aton(SERVER)}  # RFC 2131 table 3: nothing else in a NAK
    assert out[12:24] == bytes(12)  # no ciaddr, yiaddr or siaddr


def test_request_naming_another_server_is_ignored() -> None:
    req = parse(packet(3, options=opt(50, socket.inet_aton(LEASE.address)) + opt(54, socket.inet_aton("10.0.0.9"))))
    assert req is not None
    assert decide(req, {MAC: LEASE}, SERVER) is None


def test_request_naming_no_address_is_ignored() -> None:
    req = parse(packet(3))
    assert req is not None
    assert decide(req, {MAC: LEASE}, SERVER) is None


def test_inform_is_acked_without_an_address_or_lease_time() -> None:
    req = parse(packet(8, ciaddr=LEASE.address))
    assert req is not None
    assert decide(req, {MAC: LEASE}, SERVER) == (Kind.ACK, LEASE)
    out = reply(req, LEASE, SERVER, Kind.ACK)
    assert socket.inet_ntoa(out[12:16]) == LEASE.address  # ciaddr echoed
    assert out[16:20] == bytes(4)  # no yiaddr
    o = options_of(out)
    assert o[53] == b"\x05" and o[3] == socket.inet_aton(SERVER)
    assert not {51, 58, 59} & o.keys()


@pytest.mark.parametrize("kind", [1, 3, 8])
def test_unknown_mac_gets_no_answer(kind: int) -> None:
    req = parse(packet(kind, mac="02:4d:0a:c8:00:06", ciaddr=LEASE.address,
                       options=opt(50, socket.inet_aton(LEASE.address))))
    assert req is not None
    assert decide(req, {MAC: LEASE}, SERVER) is None


@pytest.mark.parametrize("kind", [4, 7])
def test_release_and_decline_get_no_answer(kind: int) -> None:
    req = parse(packet(kind, ciaddr=LEASE.address))
    assert req is not None and req.kind == kind
    assert decide(req, {MAC: LEASE}, SERVER) is None


@pytest.mark.parametrize("raw", [
    b"",
    b"\x01",
    packet(1)[:239],  # cut inside the magic cookie
    packet(1)[:240],  # no options at all: no message type
    packet(None),  # plain BOOTP
    packet(2),  # a server's OFFER sent to port 67
    packet(5), packet(6),
    packet(9),  # no such message type
    packet(1, op=2),  # a BOOTREPLY
    packet(1, htype=6), packet(1, hlen=16),  # not Ethernet
    packet(1)[:236] + b"\x00\x00\x00\x00" + packet(1)[240:],  # no magic cookie
    packet(None, options=b"\x35\x02\x01\x01"),  # message type of two bytes
    packet(None, options=b"\x35"),  # option code with no length
    packet(None, options=b"\x35\x05\x01"),  # length past the end
])
def test_malformed_is_none(raw: bytes) -> None:
    assert parse(raw) is None


def test_options_split_in_two_are_joined_and_pads_skipped() -> None:
    raw = packet(None, options=b"\x00\x00" + opt(53, b"\x01") + opt(12, b"gu") + opt(12, b"est"))
    req = parse(raw)
    assert req is not None and req.kind == Kind.DISCOVER


def test_short_requested_address_is_not_taken() -> None:
    req = parse(packet(3, options=opt(50, b"\x0a\xc8")))
    assert req is not None and req.requested is None


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_garbage_never_raises(raw: bytes) -> None:
    parse(raw)


@settings(max_examples=500)
@given(st.integers(0, 599), st.binary(min_size=1, max_size=8), st.data())
def test_fuzzed_requests_never_raise(at: int, junk: bytes, data: st.DataObject) -> None:
    """A real request with bytes overwritten, cut or added anywhere: parse never raises, and what it
    accepts can be answered."""
    base = packet(data.draw(st.sampled_from([1, 3, 8])), options=opt(50, socket.inet_aton(LEASE.address))
                  + opt(54, socket.inet_aton(SERVER)))
    how = data.draw(st.sampled_from(["overwrite", "cut", "insert"]))
    at = min(at, len(base))
    raw = {"overwrite": base[:at] + junk + base[at + len(junk):], "cut": base[:at],
           "insert": base[:at] + junk + base[at:]}[how]
    req = parse(raw)
    if req is not None:
        answer = decide(req, {req.mac: LEASE}, SERVER)
        if answer is not None:
            assert len(reply(req, answer[1], SERVER, answer[0])) >= 300


def test_leases_from_sidecars() -> None:
    side = {"nics": [
        {"bridge": "mlxaaaa", "address": "10.200.2.5", "prefix": 22, "mac": "02:4D:0A:C8:02:05"},
        {"bridge": "mlxbbbb", "address": "10.200.6.9", "prefix": 22, "mac": "02:4d:0a:c8:06:09"},
        {"bridge": "br-outside", "address": None, "prefix": None, "mac": "02:4d:00:00:00:01"},
    ], "gateway": "10.200.0.1", "dns": ["10.200.0.1", "9.9.9.9"], "hostname": "vm-1"}
    assert leases_from_sidecars([side, {"nics": None}]) == {
        "mlxaaaa": ("10.200.0.1", {"02:4d:0a:c8:02:05": Lease(
            mac="02:4d:0a:c8:02:05", address="10.200.2.5", prefix=22, gateway="10.200.0.1",
            dns=("10.200.0.1", "9.9.9.9"), hostname="vm-1")}),
        "mlxbbbb": ("10.200.4.1", {"02:4d:0a:c8:06:09": Lease(
            mac="02:4d:0a:c8:06:09", address="10.200.6.9", prefix=22, gateway=None, dns=(), hostname="vm-1")}),
    }


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def test_sockets_follow_the_leases_and_survive_failures() -> None:
    """A socket for each listed bridge that is up (here the loopback), none for a bridge that is
    not there or has no leases, closed when the bridge leaves the list; a failing ``leases()`` is
    logged and the sockets stay."""
    now: list[object] = [{"lo": (SERVER, {MAC: LEASE}), "mvmnosuchdev0": (SERVER, {MAC: LEASE}),
                          "empty": (SERVER, {})}]
    calls = 0

    async def leases() -> dict[str, tuple[str, dict[str, Lease]]]:
        nonlocal calls
        calls += 1
        if isinstance(now[0], Exception):
            raise now[0]
        return now[0]  # type: ignore[return-value]

    server = DhcpServer(leases, interval=0.02, port=0)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            assert set(server._serving) == {"lo"}
            now[0] = RuntimeError("store unavailable")
            seen = calls
            await wait_for(lambda: calls >= seen + 3)
            assert set(server._serving) == {"lo"}  # leases() failed: keep serving
            now[0] = {}
            await wait_for(lambda: not server._serving)
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert "dhcp: serving" in events and "dhcp: leases not refreshed" in events and "dhcp: stopped serving" in events


async def test_bind_failure_is_logged_and_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = DhcpServer._bind

    def flaky(self: DhcpServer, bridge: str) -> trio.socket.SocketType:
        calls.append(bridge)
        if len(calls) <= 3:
            raise OSError(98, "Address already in use")
        return real(self, bridge)

    monkeypatch.setattr(DhcpServer, "_bind", flaky)

    async def leases() -> dict[str, tuple[str, dict[str, Lease]]]:
        return {"lo": (SERVER, {MAC: LEASE})}

    server = DhcpServer(leases, interval=0.02, port=0)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            assert server._serving == {}
            await wait_for(lambda: bool(server._serving))
            nursery.cancel_scope.cancel()
    assert calls == ["lo"] * 4
    failed = [e["log_level"] for e in logs if e["event"] == "dhcp: cannot serve the bridge; retrying"]
    assert failed == ["warning", "debug", "debug"]  # said once, not once a second


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_answers_on_the_loopback() -> None:
    """The whole exchange through real sockets: a DISCOVER gets a broadcast OFFER, a REQUEST an ACK,
    an unknown MAC nothing; a DECLINE (the guest saw its address in use) is a warning, a RELEASE
    an info line, and neither is answered."""
    async def leases() -> dict[str, tuple[str, dict[str, Lease]]]:
        return {"lo": (SERVER, {MAC: LEASE})}

    port = free_udp_port()
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with client:
        await client.bind(("0.0.0.0", 0))
        server = DhcpServer(leases, interval=0.05, port=port, client_port=client.getsockname()[1])
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                await client.sendto(packet(1, mac="02:4d:0a:c8:00:99"), ("127.0.0.1", port))  # unknown: no answer
                await client.sendto(packet(4, options=opt(50, socket.inet_aton(LEASE.address))), ("127.0.0.1", port))
                await client.sendto(packet(7, ciaddr=LEASE.address), ("127.0.0.1", port))
                await client.sendto(packet(7, mac="02:4d:0a:c8:00:99", ciaddr=LEASE.address), ("127.0.0.1", port))
                await client.sendto(packet(1, xid=7), ("127.0.0.1", port))
                with trio.fail_after(10):
                    offer, _ = await client.recvfrom(1500)
                assert struct.unpack_from("!I", offer, 4) == (7,)
                assert options_of(offer)[53] == b"\x02"
                await client.sendto(packet(3, xid=8, options=opt(50, socket.inet_aton(LEASE.address))
                                           + opt(54, socket.inet_aton(SERVER))), ("127.0.0.1", port))
                with trio.fail_after(10):
                    ack, _ = await client.recvfrom(1500)
                assert struct.unpack_from("!I", ack, 4) == (8,)
                assert options_of(ack)[53] == b"\x05" and socket.inet_ntoa(ack[16:20]) == LEASE.address
                nursery.cancel_scope.cancel()
    said = [(e["event"], e["log_level"], e["mac"]) for e in logs if "mac" in e]
    assert said == [("dhcp: no answer", "debug", "02:4d:0a:c8:00:99"), ("dhcp: decline", "warning", MAC),
                    ("dhcp: release", "info", MAC), ("dhcp: release", "debug", "02:4d:0a:c8:00:99"),
                    ("dhcp: offer", "info", MAC), ("dhcp: ack", "info", MAC)]
    assert logs[[e["event"] for e in logs].index("dhcp: decline")]["address"] == LEASE.address


async def test_a_socket_error_closes_the_socket_and_the_bridge_is_opened_again() -> None:
    """A reply that cannot be sent (here to port 0: EINVAL) ends the bridge's socket with a warning;
    the next round opens the bridge again."""
    async def leases() -> dict[str, tuple[str, dict[str, Lease]]]:
        return {"lo": (SERVER, {MAC: LEASE})}

    port = free_udp_port()
    server = DhcpServer(leases, interval=0.05, port=port, client_port=0)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            first = server._serving["lo"]
            client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with client:
                await client.sendto(packet(1), ("127.0.0.1", port))
            await wait_for(lambda: server._serving.get("lo") not in (None, first))
            nursery.cancel_scope.cancel()
    assert any(e["event"] == "dhcp: socket failed; retrying" and e["bridge"] == "lo" for e in logs), logs


def test_constants() -> None:
    assert dhcp.HEADER.size == 236
