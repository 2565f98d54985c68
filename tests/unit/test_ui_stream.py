"""The dashboard's event stream (ui/stream.py) writes one message at a time: its two writers
(each event as it comes, and the coalesced ``change``) never send at once, which a TLS stream
refuses (trio's BusyResourceError) and which ended streams under load."""

from __future__ import annotations

import trio

from mariposa.api.router import Request
from mariposa.control import Caller
from mariposa.ui import stream
from mariposa.ui.app import build
from tests.unit.conftest import ROOT, Core


async def test_the_event_streams_writers_take_turns_on_a_slow_client(core: Core):
    await core.settle(await core.control.projects.add(
        ROOT, "shop", "services:\n  web:\n    image: busybox\n    command: sleep 1000\n    scale: 1\n"))
    board = build(core.control, core.ctx.sessions, None)
    cookie, _ = core.ctx.sessions.open("root")
    req = Request("GET", "/ui/stream", {"project": "shop"}, b"", {}, Caller(transport="remote"),
                  headers=((b"cookie", f"mariposa_session={cookie}".encode()),))
    resp = await stream.stream(board, req)
    assert resp.status == 200 and resp.produce is not None
    busy = False
    kinds: list[str] = []

    async def write(chunk: bytes) -> None:  # a client that takes longer than the coalescing to take a message
        nonlocal busy
        assert not busy, "two writes at once"
        busy = True
        await trio.sleep(stream.COALESCE * 2)
        kinds.append(chunk.decode().split("\n", 1)[0])
        busy = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resp.produce, write)
        await trio.sleep(0.1)
        await core.settle(await core.control.services.scale(ROOT, "shop", "web", 3))
        with trio.fail_after(20):
            while "event: change" not in kinds or "event: event" not in kinds:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
