"""The daemon's back-offs on trio's MockClock: minutes of restart delays pass in a second of
real time, and the schedule can be checked against ``RESTART`` itself."""

from __future__ import annotations

import httpx
import pytest
import trio
from trio.testing import MockClock

from mariposa.converge.supervise import RESTART
from mariposa.daemon import DaemonConfig, run_daemon
from mariposa.drivers.fake import FakeDriver


@pytest.fixture
def virtual_clock():
    # 5 ms of real idleness before a jump: store calls run in worker threads (see
    # test_daemon_fake.py's fixture of the same name).
    return MockClock(autojump_threshold=0.005)


class TimedDriver(FakeDriver):
    """Remembers when (on trio's clock) each start happened."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.starts: list[float] = []

    async def start(self, inst) -> None:
        self.starts.append(trio.current_time())
        await super().start(inst)


async def test_restarts_follow_the_back_off_schedule(virtual_clock, tmp_path, nursery):
    driver = TimedDriver(images=("crashy",), crash_images=("crashy",))
    sock = str(tmp_path / "m.sock")
    config = DaemonConfig(state_dir=str(tmp_path / "state"), socket=sock, resync=0.5, manifest_dir=None)
    await nursery.start(run_daemon, config, {"docker": driver})
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://m") as client:
        r = await client.post("/v1/projects", json={"name": "p", "manifest": "services:\n  a:\n    image: crashy\n"})
        assert r.status_code == 200, r.text
        with trio.fail_after(300):  # virtual seconds: 0.1 + 0.2 + ... + 6.4 is 12.7
            while len(driver.starts) < 7:
                await trio.sleep(0.5)
    gaps = [b - a for a, b in zip(driver.starts, driver.starts[1:], strict=False)]
    # the fake instance exits at once, even on create: the first start is already restart 1
    for n, gap in enumerate(gaps, start=2):
        # never earlier than the schedule (give or take the float rounding of epoch seconds);
        # later only by a round or two of the task loop (a clock jump while a store call runs
        # in its thread looks like a slow machine)
        assert RESTART.delay(n) - 1e-3 <= gap <= RESTART.delay(n) * 1.5 + 1.5, (n, gaps)
