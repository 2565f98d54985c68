"""The DNS responder's names (mariposa/dns/zone.py) and its wire behaviour (mariposa/dns/responder.py)
on loopback, with a fake upstream resolver: what answers from the zone, what is NXDOMAIN, what is
forwarded, and that a project's socket goes with its bridge record."""

from __future__ import annotations

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio

from mariposa.dns import zone as zones
from mariposa.dns.responder import DnsResponder, answer, host_resolvers, to_wire
from mariposa.model import LABEL_PROJECT, Instance, InstanceState

PROJECT = "p" * 32


def inst(name: str, service: str, address: str | None, state: str = "running", **kw) -> Instance:
    return Instance(id=name, runtime_id=name, name=name, project_id=PROJECT, service=service, spec_hash="h",
                    version_id="v", state=InstanceState(state), created=0.0, address=address,
                    compute_type="docker", **kw)


ZONE = zones.build("Shop", ["web", "db", "idle"], ["db"], [
    inst("shop-web-1", "web", "10.0.0.2"),
    inst("shop-web-2", "web", "10.0.0.3", health="unhealthy"),
    inst("shop-web-3", "web", "10.0.0.4", removing=True),
    inst("shop-web-4", "web", "10.0.0.5", retired=True),
    inst("shop-web-5", "web", None),
    inst("shop-db-1", "db", "10.0.2.1", health="healthy"),
    inst("shop-db-2", "db", "10.0.2.2", health="starting"),
    inst("shop-db-3", "db", "10.0.2.3"),  # checked but not looked at yet: not in
    inst("shop-db-4", "db", "10.0.2.4", state="exited"),
])


def test_a_service_name_answers_only_instances_that_take_traffic():
    assert ZONE.lookup("web") == ("10.0.0.2",)
    assert ZONE.lookup("WEB.shop.") == ("10.0.0.2",)  # SERVICE.PROJECT, any case, trailing dot
    assert ZONE.lookup("db") == ("10.0.2.1",)
    assert ZONE.lookup("idle") == ()  # a service with none ready: the name, no address (NODATA)


def test_an_instance_name_answers_while_it_runs_whatever_its_health():
    assert ZONE.lookup("shop-web-2") == ("10.0.0.3",) and ZONE.lookup("shop-db-2.shop") == ("10.0.2.2",)
    assert ZONE.lookup("shop-web-3") is None  # being removed
    assert ZONE.lookup("shop-db-4") is None  # not running


def test_unknown_names_of_the_project_are_its_own_and_the_rest_is_the_worlds():
    assert ZONE.lookup("nosuch") is None and ZONE.owns("nosuch")
    assert ZONE.lookup("nosuch.shop") == () and ZONE.owns("nosuch.shop")
    assert not ZONE.owns("example.com") and not ZONE.owns("a.b.shop")


def query(name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def test_answers_on_the_wire_a_nodata_and_nxdomain():
    a = answer(ZONE, query("web"))
    assert a is not None and a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert [r.address for r in a.answer[0]] == ["10.0.0.2"] and a.answer[0].ttl == 0
    aaaa = answer(ZONE, query("web", "AAAA"))
    assert aaaa is not None and aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
    nx = answer(ZONE, query("nosuch"))
    assert nx is not None and nx.rcode() == dns.rcode.NXDOMAIN
    assert answer(ZONE, query("example.com")) is None


def test_a_big_answer_is_cut_to_512_bytes_and_flagged_truncated():
    many = zones.build("p", ["big"], [], [inst(f"big-{i}", "big", f"10.0.{i // 250}.{i % 250 + 1}")
                                          for i in range(100)])
    response = answer(many, query("big"))
    assert response is not None
    wire = to_wire(response)
    parsed = dns.message.from_wire(wire)
    assert len(wire) <= 512 and parsed.flags & dns.flags.TC and 20 < len(parsed.answer[0]) < 100


def test_host_resolvers_skip_our_own_addresses(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 10.200.0.1\nnameserver 192.0.2.53\nsearch example.com\n")
    assert host_resolvers(str(conf), frozenset({"10.200.0.1"})) == [("192.0.2.53", 53)]


class Records:
    """Stands in for Bridges: the records the responder serves."""

    def __init__(self) -> None:
        self.recs: list[dict] = []

    async def records(self) -> list[dict]:
        return list(self.recs)


async def fake_upstream(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A resolver that knows one name of the world."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    task_status.started(sock.getsockname()[1])
    with sock:
        while True:
            data, client = await sock.recvfrom(4096)
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.7"))
            await sock.sendto(r.to_wire(), client)


async def test_the_responder_answers_forwards_and_closes_with_the_bridge(nursery):
    port = 15353  # on 127.77.0.1, which nothing else uses
    records = Records()
    records.recs = [{"name": f"mlx{PROJECT[:12]}", "bridge": f"mlx{PROJECT[:12]}", "subnet": "127.77.0.0/22",
                     "labels": {LABEL_PROJECT: PROJECT}}]
    responder = DnsResponder(records, lambda: {PROJECT: ZONE}, port=port)  # type: ignore[arg-type]
    responder.resolv_conf = "/nonexistent"
    await responder.sync(nursery)
    upstream_port = await nursery.start(fake_upstream)
    responder.upstream = [("127.0.0.1", upstream_port)]
    with trio.fail_after(10):
        mine = await dns.asyncquery.udp(query("db.shop"), "127.77.0.1", port=port, timeout=3)
        assert [r.address for r in mine.answer[0]] == ["10.0.2.1"]
        world = await dns.asyncquery.udp(query("example.com"), "127.77.0.1", port=port, timeout=3)
        assert [r.address for r in world.answer[0]] == ["192.0.2.7"]
        responder.upstream = []  # no resolver answers: SERVFAIL, not silence
        failed = await dns.asyncquery.udp(query("example.org"), "127.77.0.1", port=port, timeout=5)
        assert failed.rcode() == dns.rcode.SERVFAIL
    records.recs = []  # the project's bridge went: so does its socket
    await responder.sync(nursery)
    await trio.sleep(0.05)
    with pytest.raises((dns.exception.Timeout, OSError)):  # silence or ICMP port unreachable
        await dns.asyncquery.udp(query("db"), "127.77.0.1", port=port, timeout=0.5)


def test_the_world_names_of_an_instance_whose_service_names_dns_servers_go_to_them():
    z = zones.build("p", ["proxy", "app"], [], [inst("p-proxy-1", "proxy", "10.0.0.2"),
                                                 inst("p-app-1", "app", "10.0.0.3")], {"proxy": ("192.0.2.53",)})
    assert z.upstreams == {"10.0.0.2": ("192.0.2.53",)}
