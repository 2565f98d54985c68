"""Scheduled and event services in the whole daemon on the fake driver, with trio's MockClock:
minutes of schedule pass in a second, and every run's time is checked exactly (virtual time
has no load). The jobs are fake programs that end after their ``sleep`` with their ``exit``."""

from __future__ import annotations

import contextlib
import functools
import math
import re

import attrs
import httpx
import pytest
import trio
from trio.testing import MockClock

from mariposa.clock import TrioClock
from mariposa.daemon import DaemonConfig, run_daemon
from mariposa.drivers.fake import FakeDriver, FakeRuntime

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a multiple of 5 s


@pytest.fixture
def virtual_clock():
    # 20 ms of real idleness before a jump: store calls run in worker threads, and a jump in the
    # middle of one looks like a slow machine (see test_daemon_fake.py's fixture)
    return MockClock(autojump_threshold=0.02)


class JobDriver(FakeDriver):
    """Each instance's program ends after its ``sleep N`` with its ``exit C`` ($VAR read from its
    environment); remembers when (epoch, by ``clock``) each instance ran, to check overlaps."""

    def __init__(self, nursery: trio.Nursery, clock: TrioClock, runtime: FakeRuntime, spans: dict):
        super().__init__(runtime=runtime)
        self.nursery, self.clock, self.spans = nursery, clock, spans

    async def create(self, req):
        fresh = self._box_of(req.instance_id) is None
        inst = await super().create(req)
        if fresh:
            script = " ".join(req.spec.command or ())
            for key, value in req.spec.environment:
                script = script.replace(f"${key}", value)
            sleep = re.search(r"sleep (\d+(?:\.\d+)?)", script)
            code = re.search(r"exit (\d+)", script)
            self.spans[req.instance_id] = [self.clock.now(), None]
            self.nursery.start_soon(self._end, req.instance_id, float(sleep[1]) if sleep else 0.0,
                                    int(code[1]) if code else 0)
        return inst

    async def _end(self, instance_id: str, seconds: float, code: int) -> None:
        await trio.sleep(seconds)
        box = self._box_of(instance_id)
        if box is not None and box.state.value == "running":
            self.kill(instance_id, code)

    async def stop(self, inst, timeout=None):
        await super().stop(inst, timeout)
        self.spans.setdefault(inst.id, [0, None])[1] = self.clock.now()

    def _exit(self, box, code):
        super()._exit(box, code)
        span = self.spans.get(box.labels.get("io.mariposa.instance", ""))
        if span is not None and span[1] is None:
            span[1] = self.clock.now()


class StaleListing(JobDriver):
    """As Docker: a death is announced (the die event) before the listing shows it; here the
    listing says "running" for ``LAG`` seconds after the event."""

    LAG = 0.5

    def __init__(self, *args):
        super().__init__(*args)
        self.died_at: dict[str, float] = {}

    def _exit(self, box, code):
        super()._exit(box, code)
        self.died_at[box.runtime_id] = self.clock.now()

    async def inventory(self, project_id=None):
        found = await super().inventory(project_id)
        now = self.clock.now()
        out = []
        for inst in found:
            if now < self.died_at.get(inst.runtime_id, -1.0) + self.LAG:
                inst = attrs.evolve(inst, state="running", exit_code=None)
            out.append(inst)
        return out


class Setup:
    def __init__(self, tmp_path, nursery, clock: TrioClock, mock: MockClock, driver: type = JobDriver):
        self.tmp_path, self.nursery, self.clock, self.mock, self.driver = tmp_path, nursery, clock, mock, driver
        self.runtime = FakeRuntime(("busybox",))
        self.spans: dict[str, list] = {}
        self.scope: trio.CancelScope | None = None
        self.sock = str(tmp_path / "m.sock")

    @contextlib.contextmanager
    def frozen(self):
        """Virtual time stands still meanwhile: on a loaded machine a store call's thread can be
        idle long enough for the clock to jump in the middle of a request (a firing would then
        come before the project it belongs to was added)."""
        before = self.mock.autojump_threshold
        self.mock.autojump_threshold = math.inf
        try:
            yield
        finally:
            self.mock.autojump_threshold = before

    async def start(self):
        with self.frozen():
            return await self._start()

    async def post(self, path: str, **kw):
        with self.frozen():
            return await self.client.post(path, **kw)

    async def get(self, path: str, **kw):
        with self.frozen():
            return await self.client.get(path, **kw)

    async def _start(self):
        driver = self.driver(self.nursery, self.clock, self.runtime, self.spans)
        config = DaemonConfig(state_dir=str(self.tmp_path / "state"), socket=self.sock, resync=60, manifest_dir=None)
        async def daemon(task_status=trio.TASK_STATUS_IGNORED):
            with trio.CancelScope() as scope:
                self.scope = scope
                async with trio.open_nursery() as inner:
                    task_status.started(await inner.start(functools.partial(
                        run_daemon, config, {"docker": driver}, clock=self.clock)))

        self.ctx = await self.nursery.start(daemon)
        self.client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self.sock), base_url="http://m",
                                        timeout=None)  # virtual time: a jump is no slow answer
        return self

    async def add(self, manifest: str):
        r = await self.post("/v1/projects", json={"name": "p", "manifest": manifest})
        assert r.status_code == 200, r.text

    async def runs(self, service="job", **params):
        r = await self.get(f"/v1/projects/p/services/{service}/runs", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return sorted(r.json(), key=lambda x: (x["scheduled"], x["attempt"]))

    async def until(self, t: float):
        await self.clock.sleep_until(t)


async def make(tmp_path, nursery, mock: MockClock, driver: type = JobDriver) -> Setup:
    return await Setup(tmp_path, nursery, TrioClock(epoch=START), mock, driver).start()


def scheduled(concurrency="forbid", job="sleep 7", extra=""):
    return (f"services:\n  job:\n    service_type: scheduled\n    image: busybox\n    command: sh -c '{job}'\n"
            f"    schedule: '*/5 * * * * *'\n    concurrency: {concurrency}\n{extra}")


def max_overlap(spans) -> int:
    points = sorted([(s, 1) for s, e in spans] + [(e, -1) for s, e in spans if e is not None])
    most = now = 0
    for _, d in points:
        now += d
        most = max(most, now)
    return most


async def test_forbid_runs_on_time_and_skips_overlapping_firings(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("forbid"))
    await s.until(START + 31)
    runs = await s.runs()
    got = [(r["scheduled"] - START, r["trigger"], r["state"]) for r in runs]
    assert got == [(5, "schedule", "succeeded"), (10, "schedule", "skipped"), (15, "schedule", "succeeded"),
                   (20, "schedule", "skipped"), (25, "schedule", "running"), (30, "schedule", "skipped")]
    for r in runs:
        if r["started"] is not None:
            assert 0 <= r["started"] - r["scheduled"] < 0.5  # virtual time: no load, only the steps' own
    done = [r for r in runs if r["state"] == "succeeded"]
    assert all(6.9 < r["ended"] - r["started"] < 7.5 and r["exit_code"] == 0 for r in done)
    assert max_overlap(s.spans.values()) == 1
    # no instance is left of a finished run, and the reconciler made none of its own
    assert [i.run_id for i in await s.ctx.inventory()] == [runs[4]["id"]]
    [job] = (await s.get("/v1/projects/p/services")).json()
    assert job["last_run"]["id"] == runs[4]["id"]  # the newest run, not the skipped firing after it


async def test_replace_stops_the_active_run(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("replace"))
    await s.until(START + 16)
    got = [(r["scheduled"] - START, r["state"]) for r in await s.runs()]
    assert got == [(5, "stopped"), (10, "stopped"), (15, "running")]
    assert max_overlap(s.spans.values()) == 1


async def test_allow_runs_alongside_up_to_scale(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("allow", job="sleep 12", extra="    scale: 2\n"))
    await s.until(START + 21)
    got = [(r["scheduled"] - START, r["state"]) for r in await s.runs()]
    # 5 (until 17) and 10 (until 22) overlap; 15 finds two running, scale 2, and is skipped
    assert got == [(5, "succeeded"), (10, "running"), (15, "skipped"), (20, "running")]
    assert max_overlap(s.spans.values()) == 2


@pytest.mark.parametrize("catch_up, expected", [
    ("latest", [(5, "schedule", "succeeded"), (10, "schedule", "missed"), (15, "schedule", "missed"),
                (20, "catch-up", "succeeded")]),
    ("none", [(5, "schedule", "succeeded"), (10, "schedule", "missed"), (15, "schedule", "missed"),
              (20, "schedule", "missed")]),
    ("all", [(5, "schedule", "succeeded"), (10, "catch-up", "succeeded"), (15, "catch-up", "succeeded"),
             (20, "catch-up", "succeeded")]),
])
async def test_catch_up_after_the_daemon_was_down_across_three_firings(virtual_clock, tmp_path, nursery,
                                                                        catch_up, expected):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("forbid", job="sleep 1", extra=f"    catch_up: {catch_up}\n"))
    await s.until(START + 7)
    s.scope.cancel()  # the daemon goes (its instances would keep running)
    await s.client.aclose()
    await s.until(START + 22)  # 10, 15 and 20 pass while it is down
    await s.start()
    await s.until(START + 25.5)  # the three catch-up runs of "all" run one after the other, 1 s each
    got = [(r["scheduled"] - START, r["trigger"], r["state"]) for r in await s.runs()]
    assert got[:4] == expected


async def test_a_run_the_daemon_lost_mid_run_is_recorded_once(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("forbid", job="echo hello; sleep 7; exit 3"))
    await s.until(START + 6)
    [run] = [r for r in await s.runs() if r["state"] == "running"]
    s.scope.cancel()  # as a SIGKILL: nothing recorded past this point
    await s.client.aclose()
    await s.until(START + 14)  # the job ended meanwhile, exit code 3; the 10 s firing was missed
    await s.start()
    with trio.fail_after(0.9):  # virtual: the first pass of the new daemon records it
        while [r for r in await s.runs() if r["id"] == run["id"] and r["state"] == "running"]:
            await trio.sleep(0.05)
    runs = {r["id"]: r for r in await s.runs()}
    assert runs[run["id"]]["state"] == "failed" and runs[run["id"]]["exit_code"] == 3
    assert [r["scheduled"] - START for r in runs.values() if r["scheduled"] == run["scheduled"]] == [5]
    # one instance per run ever made: the lost run's was not made again. (A catch-up run may be
    # between making its instance and recording it started: its instance id is chosen first.)
    assert set(s.spans) <= {r["instance_id"] for r in runs.values()}
    logs = (await s.get(f"/v1/runs/{run['id']}/logs")).text
    assert '"line": "hello"' in logs


async def test_manual_runs_idempotency_env_exit_codes_and_history(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add("services:\n  job:\n    service_type: event\n    image: busybox\n    command: sh -c 'echo "
                "run $N; sleep 1; exit $CODE'\n    environment: {CODE: '0', N: '0'}\n"
                "    history: {succeeded: 3, failed: 1}\n    queue_limit: 20\n")
    first = (await s.post("/v1/projects/p/services/job/runs", json={"idempotency_key": "k"})).json()
    again = (await s.post("/v1/projects/p/services/job/runs", json={"idempotency_key": "k"})).json()
    assert (first["created"], again["created"], again["id"]) == (True, False, first["id"])
    for n in range(1, 10):
        r = await s.post("/v1/projects/p/services/job/runs",
                                json={"env": [f"N={n}", f"CODE={5 if n in (3, 6) else 0}"]})
        assert r.status_code == 200, r.text
    await s.until(START + 15)
    runs = await s.runs()
    assert [r["state"] for r in runs] == ["failed"] + ["succeeded"] * 3
    assert runs[0]["exit_code"] == 5
    for r in runs:
        text = (await s.get(f"/v1/runs/{r['id']}/logs")).text
        assert text.count('"line"') == 1
    assert max_overlap(s.spans.values()) == 1  # forbid (the default): one at a time, the rest queued


async def test_a_full_queue_is_refused_and_a_continuous_service_does_not_run(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add("services:\n  job:\n    service_type: event\n    image: busybox\n    command: sh -c 'sleep 100'\n"
                "    queue_limit: 2\n  web:\n    image: busybox\n    command: sleep 1000\n")
    codes = [(await s.post("/v1/projects/p/services/job/runs", json={})).status_code]
    await s.until(START + 1)  # the first runs: two more wait, the queue's limit
    codes += [(await s.post("/v1/projects/p/services/job/runs", json={})).status_code for _ in range(3)]
    assert codes == [200, 200, 200, 409]
    r = await s.post("/v1/projects/p/services/web/runs", json={})
    assert r.status_code == 400 and "continuous" in r.json()["message"]


async def test_timeout_and_retries(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add("services:\n  job:\n    service_type: event\n    image: busybox\n    command: sh -c 'sleep 50'\n"
                "    timeout: 3s\n    retries: 2\n")
    await s.post("/v1/projects/p/services/job/runs", json={})
    await s.until(START + 20)
    runs = await s.runs()
    assert [(r["attempt"], r["state"]) for r in runs] == [(0, "failed"), (1, "failed"), (2, "failed")]
    assert all(r["reason"] == "timed out after 3s" for r in runs)
    assert all(2.9 < r["ended"] - r["started"] < 3.5 for r in runs)
    # the back-off between attempts: 1 s, then 2 s
    gaps = [b["started"] - a["ended"] for a, b in zip(runs, runs[1:], strict=False)]
    assert 0.9 < gaps[0] < 1.5 and 1.9 < gaps[1] < 2.5


async def test_stop_suspends_the_schedule_and_start_catches_up(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("forbid", job="sleep 1"))
    await s.until(START + 7)
    assert (await s.post("/v1/projects/p/services/job/stop")).status_code == 200
    await s.until(START + 18)
    assert (await s.post("/v1/projects/p/services/job/start")).status_code == 200
    await s.until(START + 19)
    got = [(r["scheduled"] - START, r["trigger"], r["state"]) for r in await s.runs()]
    assert got == [(5, "schedule", "succeeded"), (10, "schedule", "missed"), (15, "catch-up", "running")]
    nxt = (await s.get("/v1/projects/p/services/job/next", params={"count": 2})).json()
    assert [n["at"] - START for n in nxt["next"]] == [20, 25]


async def test_the_scheduler_sleeps_until_the_next_firing(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add("services:\n  job:\n    service_type: scheduled\n    image: busybox\n    command: sh -c 'sleep 1'\n"
                "    schedule: '*/10 * * * *'\n")
    await s.until(START + 10)
    scheduler = s.ctx.scheduler
    before = scheduler.passes
    await s.until(START + 590)  # ten minutes with nothing due: not one pass (it does not poll)
    assert scheduler.passes == before
    await s.until(START + 602)
    assert [(r["scheduled"] - START, r["state"]) for r in await s.runs()] == [(600, "succeeded")]
    [job] = (await s.get("/v1/projects/p/services")).json()
    assert (job["service_type"], job["last_run"]["state"], job["next_run"] - START) == ("scheduled", "succeeded", 1200)
    [project] = (await s.get("/v1/projects")).json()
    assert (project["last_run"]["service"], project["last_run"]["state"], project["next_run"] - START) == (
        "job", "succeeded", 1200)


async def test_queue_waits_and_the_starting_deadline_records_missed(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(scheduled("queue", job="sleep 12", extra="    starting_deadline: 4s\n"))
    await s.until(START + 18)
    runs = await s.runs()
    # 10 waits behind 5 (until 17) past its deadline (14): missed; 15 starts at 17, within its own (19)
    assert [(r["scheduled"] - START, r["state"]) for r in runs] == [(5, "succeeded"), (10, "missed"), (15, "running")]
    assert runs[1]["reason"] == "could not start within starting_deadline 4s"
    assert 16.9 <= runs[2]["started"] - START <= 17.5


async def test_a_run_whose_death_the_listing_shows_late_is_still_recorded_at_once(virtual_clock, tmp_path, nursery):
    """Regression (seen on the real Engine): the die event came, the listing still said running,
    no other event followed, and the run was recorded ended only at the next firing (or an
    hour later). Now the scheduler looks again until the listing agrees."""
    s = await make(tmp_path, nursery, virtual_clock, StaleListing)
    await s.add("services:\n  job:\n    service_type: event\n    image: busybox\n    command: sh -c 'sleep 1'\n")
    for _ in range(3):
        await s.post("/v1/projects/p/services/job/runs", json={})
    await s.until(START + 5)
    runs = await s.runs()
    assert [r["state"] for r in runs] == ["succeeded"] * 3
    assert all(r["ended"] - r["started"] < 1 + StaleListing.LAG + 0.3 for r in runs), runs
