"""The Docker driver's translations, with no Engine: its states into ``InstanceState``, and its
event stream into cursor'd events that resume without loss or repeats (against a fake Engine on
a unix socket that replays from ``since`` as the real one does)."""

from __future__ import annotations

import json
import time
from contextlib import aclosing
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from mariposa.drivers.base import RuntimeUnavailable
from mariposa.drivers.docker import DEAD_EXIT_CODE, REPLAY_MARGIN_NS, DockerDriver, _from_inspect, _from_list
from mariposa.model import LABEL_INSTANCE, InstanceState

LABELS = {LABEL_INSTANCE: "i1", "io.mariposa.project": "p"}


@pytest.mark.parametrize(
    ("docker", "status", "state", "code"),
    [
        ("created", "Created", InstanceState.CREATING, None),
        ("running", "Up 3 seconds", InstanceState.RUNNING, None),
        ("restarting", "Restarting (1) 2 seconds ago", InstanceState.RUNNING, None),
        ("paused", "Up 3 seconds (Paused)", InstanceState.PAUSED, None),
        ("removing", "Removal In Progress", InstanceState.REMOVING, None),
        ("exited", "Exited (3) 2 seconds ago", InstanceState.EXITED, 3),
        ("exited", "Exited (0) 2 seconds ago", InstanceState.EXITED, 0),
        ("dead", "Dead", InstanceState.EXITED, DEAD_EXIT_CODE),  # a failed exit, even with no code
        ("dead", "Exited (137) 2 seconds ago", InstanceState.EXITED, 137),  # its own code is kept
        ("frobnicated", "?", InstanceState.UNKNOWN, None),
    ],
)
def test_docker_states_map_into_the_protocols(docker, status, state, code):
    listed = _from_list({"Id": "c1", "Names": ["/n"], "Labels": LABELS, "State": docker, "Status": status})
    assert (listed.state, listed.exit_code, listed.compute_type) == (state, code, "docker")
    inspected = _from_inspect({"Id": "c1", "Name": "/n", "Config": {"Labels": LABELS},
                               "State": {"Status": docker, "ExitCode": code or 0}})
    assert (inspected.state, inspected.exit_code) == (state, code)


def _event(ns: int, action: str, container: str) -> dict:
    return {"Type": "container", "Action": action, "id": container * 8, "timeNano": ns, "time": ns // 10**9,
            "Actor": {"ID": container * 8, "Attributes": {LABEL_INSTANCE: container}}}


class FakeEngine:
    """Serves /events like the Engine: replays its buffer from ``since`` (inclusive, in
    timeNano), sends what ``live`` adds, then hangs up; records each ``since`` asked for."""

    def __init__(self, path: str):
        self.path = path
        self.buffer: list[dict] = []
        self.asked: list[int] = []

    async def serve(self, listener, connections: int) -> None:
        for _ in range(connections):
            conn, _ = await listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += await conn.recv(65536)
                target = request.split(b" ", 2)[1].decode()
                secs, _, nanos = parse_qs(urlsplit(target).query)["since"][0].partition(".")
                since = int(secs) * 10**9 + int(nanos.ljust(9, "0"))
                self.asked.append(since)
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
                for ev in self.buffer:
                    if ev["timeNano"] >= since:
                        line = json.dumps(ev).encode() + b"\n"
                        await conn.send(b"%x\r\n%s\r\n" % (len(line), line))
                await conn.send(b"0\r\n\r\n")


async def _read(driver: DockerDriver, since: str | None) -> list:
    seen = []
    with pytest.raises(RuntimeUnavailable, match="closed the event stream"):
        async with aclosing(driver.events(since=since)) as stream:
            async for ev in stream:
                seen.append(ev)
    return seen


async def test_events_resume_from_a_cursor_with_nothing_lost_or_repeated(tmp_path):
    path = str(tmp_path / "engine.sock")
    engine = FakeEngine(path)
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(4)
    t = 1_700_000_000 * 10**9
    driver = DockerDriver("o", docker_host=f"unix://{path}")
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(engine.serve, listener, 3)
                # two events in one nanosecond, then a third
                engine.buffer = [_event(t, "start", "a"), _event(t, "start", "b"), _event(t + 500, "die", "a")]
                first = await _read(driver, f"{t - 1}|")
                # while nobody listened: one published late with an earlier stamp, one more
                engine.buffer += [_event(t + 300, "die", "b"), _event(t + 900, "destroy", "a")]
                second = await _read(driver, first[-1].cursor)
                third = await _read(driver, second[-1].cursor)
    finally:
        listener.close()
        await driver.aclose()
    assert [(e.action, e.instance_id) for e in first] == [("start", "a"), ("start", "b"), ("die", "a")]
    assert [(e.action, e.instance_id) for e in second] == [("die", "b"), ("destroy", "a")]
    assert third == []
    # the resumed subscription asked for a margin before the last event, never before the first
    assert engine.asked[1] == max(t - 1, t + 500 - REPLAY_MARGIN_NS)


async def test_a_subscription_starts_when_events_is_called(tmp_path):
    """``events()`` takes its starting point when called, so the caller's own next action is
    delivered even if the stream opens later."""
    path = str(tmp_path / "engine.sock")
    engine = FakeEngine(path)
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    driver = DockerDriver("o", docker_host=f"unix://{path}")
    try:
        before = time.time_ns()
        stream = driver.events()
        # stamped before and after the call; the stream opens only after both
        engine.buffer = [_event(before - 1, "die", "old"), _event(time.time_ns(), "die", "new")]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(engine.serve, listener, 1)
                seen = []
                with pytest.raises(RuntimeUnavailable):
                    async with aclosing(stream) as events:
                        async for ev in events:
                            seen.append(ev)
    finally:
        listener.close()
        await driver.aclose()
    assert [e.instance_id for e in seen] == ["new"]


def test_one_published_port_per_binding_even_when_families_got_different_host_ports():
    """Engine 20.10 may bind an ephemeral port on 0.0.0.0 and a different one on ::."""
    from mariposa.drivers.docker import _published

    entries = [
        {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": 49153, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 8080, "PublicPort": 49154, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
    ]
    ports = _published(entries)
    assert [(p.container, p.protocol, p.host_ip, p.host_port) for p in ports] == [
        (53, "udp", "::", 5353),
        (8080, "tcp", "0.0.0.0", 49153),
    ]


def test_two_ipv4_bindings_of_one_container_port_both_stay():
    from mariposa.drivers.docker import _published

    entries = [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8081, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 8081, "Type": "tcp"},
    ]
    assert [p.host_port for p in _published(entries)] == [8080, 8081]
