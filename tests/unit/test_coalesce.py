"""Coalesced fetches: shared by whoever asks meanwhile, never older than the ask."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mariposa.coalesce import Coalesced


class Source:
    """A fetch that takes 1 s of trio time and answers with the state when it began."""

    def __init__(self):
        self.state, self.fetches, self.leaders = 0, 0, []

    async def __call__(self, key):
        self.fetches += 1
        self.leaders.append(trio.lowlevel.current_task().name)
        seen = self.state
        await trio.sleep(1)
        if seen < 0:
            raise RuntimeError("runtime away")
        return (key, seen)


async def test_callers_during_a_fetch_share_the_next_one_and_see_their_own_change(autojump_clock):
    source = Source()
    fetch = Coalesced(source)
    answers = {}

    async def ask(name, key="all"):
        answers[name] = await fetch(key)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "first")
        await trio.sleep(0.5)
        source.state = 1  # a change made after the first fetch began ...
        for name in ("second", "third", "fourth"):
            nursery.start_soon(ask, name)  # ... by callers who must see it
        nursery.start_soon(ask, "other", "p1")
    assert answers["first"] == ("all", 0)
    assert answers["second"] == answers["third"] == answers["fourth"] == ("all", 1)
    assert answers["other"] == ("p1", 1)
    assert source.fetches == 3  # 'all' twice, 'p1' once: not once per caller


async def test_an_error_is_everyone_s_and_the_next_ask_fetches_again(autojump_clock):
    source = Source()
    source.state = -1
    fetch = Coalesced(source)
    errors = []

    async def ask():
        try:
            await fetch("all")
        except RuntimeError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
    # The first leads; the two who asked once it had begun share the next fetch.
    assert errors == ["runtime away"] * 3 and source.fetches == 2
    source.state = 2
    assert await fetch("all") == ("all", 2)


async def test_a_cancelled_leader_leaves_its_followers_to_fetch_again(autojump_clock):
    source = Source()
    fetch = Coalesced(source)
    got = {}
    scopes = {name: trio.CancelScope() for name in ("one", "two")}

    async def ask(name):
        with scopes[name]:
            got[name] = await fetch("all")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch, "all")  # a fetch already running ...
        await trio.sleep(0.1)
        nursery.start_soon(ask, "one", name="one")  # ... two ask during it: one of them leads the
        nursery.start_soon(ask, "two", name="two")  # next fetch, the other follows it
        await trio.sleep(1.2)
        leader = source.leaders[-1]
        scopes[leader].cancel()  # the leader is cancelled in the middle of its fetch
    follower = "two" if leader == "one" else "one"
    assert got == {follower: ("all", 0)}
    assert source.fetches == 3  # the follower led a fetch of its own


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)
