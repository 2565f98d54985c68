"""Outgoing webhooks in the daemon core on the fake driver and trio's MockClock: the dispatcher
follows the event log, each URL's sender POSTs through an httpx.MockTransport (the receiver),
retries on the project's Backoff, and the deliveries survive a restart of the dispatcher."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json

import httpx
import pytest
import trio

from mariposa.control.base import Area
from mariposa.errors import Conflict
from mariposa.store import events as event_store
from mariposa.store import webhooks as webhook_store
from mariposa.webhooks.dispatcher import Dispatcher
from mariposa.webhooks.events import webhook_event
from mariposa.webhooks.sender import DELIVERY, TIMEOUT
from tests.unit.conftest import ROOT, Core

SECRET = "s3cret-hook-key"
HOOK = "http://hooks.test/a"
OTHER = "http://other.test/b"


def manifest(url: str = HOOK, events: str = "[start, stop, down]", extra: str = "", scale: int = 2) -> str:
    return f"""\
webhooks:
  - url: {url}
    events: {events}
    secret_from: hook_key
services:
  web:
    image: busybox
    scale: {scale}
    min_healthy_time: 0
{extra}"""


class Receiver:
    """What the receivers got, and how they answer: ``status`` per URL (or ``hang``)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict, dict]] = []  # (url, headers, body)
        self.status: dict[str, int] = {}
        self.hang: set[str] = set()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url in self.hang:
            await trio.sleep_forever()
        body = request.content
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "x-mariposa-signature" in headers:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-mariposa-signature"], expected)
        status = self.status.get(url, 200)
        if 200 <= status < 300:
            self.got.append((url, headers, json.loads(body)))
        return httpx.Response(status)

    def events(self, url: str = HOOK) -> list[str]:
        return [b["event"] for u, _, b in self.got if u == url]


async def start_dispatcher(core: Core, nursery: trio.Nursery, receiver: Receiver) -> trio.CancelScope:
    """A dispatcher in the test's nursery, as the daemon starts one; cancel the scope to stop it."""
    dispatcher = Dispatcher(core.ctx, httpx.MockTransport(receiver.handle))
    core.ctx.webhooks = dispatcher
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await dispatcher.run(task_status=task_status)

    await nursery.start(run)
    return scope


async def until(predicate, timeout: float = 600.0, step: float = 0.1):
    """The first truthy answer of ``predicate()`` (a plain or async function), in virtual time."""
    with trio.fail_after(timeout):
        while True:
            found = predicate()
            if inspect.isawaitable(found):
                found = await found
            if found:
                return found
            await trio.sleep(step)


async def add(core: Core, text: str) -> None:
    await core.control.secrets.set(ROOT, "p", "hook_key", SECRET)
    await core.settle(await core.control.projects.add(ROOT, "p", text, "p.yaml"))


def test_the_event_types_each_webhook_event_is_made_of():
    assert webhook_event("instance.create") == webhook_event("instance.start") == "start"
    assert {webhook_event(t) for t in ("instance.stop", "instance.exit", "instance.remove")} == {"stop"}
    assert webhook_event("health.unhealthy") == "health"
    assert webhook_event("health.healthy") is None
    assert webhook_event("service.down") == "down"
    assert webhook_event("rollout.failed") == "rollout_failed"
    assert webhook_event("autoscale.scale") == webhook_event("autoscale.notify") == "autoscale"
    assert webhook_event("run.failed") == "run_failed"
    assert webhook_event("run.end") is None and webhook_event("service.scale") is None


async def test_each_start_is_posted_signed_with_its_delivery_id_in_body_and_header(core: Core, nursery):
    receiver = Receiver()
    await start_dispatcher(core, nursery, receiver)
    await add(core, manifest())
    await until(lambda: len(receiver.events()) == 2)
    instances = {i["id"] for i in await core.control.services.instances(ROOT, "p", "web")}
    for url, headers, body in receiver.got:
        assert url == HOOK
        assert body["event"] == "start" and body["type"] == "instance.create" and body["project"] == "p"
        assert body["service"] == "web" and body["instance"] in instances
        assert headers["x-mariposa-delivery"] == body["delivery"]
        assert headers["x-mariposa-event"] == "start"
        assert headers["content-type"] == "application/json"
    assert {b["instance"] for _, _, b in receiver.got} == instances
    rows = await core.control.webhooks.deliveries(ROOT, "p")
    assert [r["state"] for r in rows] == ["delivered", "delivered"]
    assert all(r["attempts"] == 1 and r["signed"] and r["last_status"] == 200 for r in rows)
    assert SECRET not in json.dumps(rows)
    # events it was not asked for go nowhere: scale down is a stop (asked for), a scale event is not announced
    await core.settle(await core.control.services.scale(ROOT, "p", "web", 1))
    await until(lambda: receiver.events().count("stop") == 1)
    assert receiver.events().count("start") == 2


async def test_a_failing_receiver_is_retried_on_the_backoff_then_gets_each_once(core: Core, nursery, mock_clock):
    receiver = Receiver()
    receiver.status[HOOK] = 503
    await start_dispatcher(core, nursery, receiver)
    await add(core, manifest())

    async def five_attempts() -> bool:
        return sum(r["attempts"] for r in await core.control.webhooks.deliveries(ROOT, "p")) >= 5

    t0 = trio.current_time()
    await until(five_attempts)
    rows = await core.control.webhooks.deliveries(ROOT, "p")
    assert all(r["state"] == "pending" and r["last_status"] == 503 and r["last_error"] == "HTTP 503" for r in rows)
    # the URL waits out its back-off between attempts: 1 + 2 + 4 + 8 s before the fifth
    assert trio.current_time() - t0 >= DELIVERY.delay(1) + DELIVERY.delay(2) + DELIVERY.delay(3)
    receiver.status[HOOK] = 200
    await until(lambda: len(receiver.events()) == 2)
    await trio.sleep(30)
    assert sorted(b["delivery"] for _, _, b in receiver.got) == sorted(r["id"] for r in rows)
    assert {r["state"] for r in await core.control.webhooks.deliveries(ROOT, "p")} == {"delivered"}


async def test_a_restart_neither_skips_nor_repeats_and_resumes_pending(core: Core, nursery, mock_clock):
    receiver = Receiver()
    receiver.status[HOOK] = 500
    scope = await start_dispatcher(core, nursery, receiver)
    await add(core, manifest())
    await until(lambda: deliveries_count(core, 2))
    scope.cancel()  # the dispatcher (and its senders) stop; two deliveries pending
    await core.settle(await core.control.services.scale(ROOT, "p", "web", 3))  # a start while it is down
    receiver.status[HOOK] = 200
    await start_dispatcher(core, nursery, receiver)
    await until(lambda: len(receiver.events()) == 3)
    await trio.sleep(60)
    ids = [b["delivery"] for _, _, b in receiver.got]
    assert len(ids) == len(set(ids)) == 3
    assert {b["id"] for _, _, b in receiver.got} == {
        r["event_id"] for r in await core.control.webhooks.deliveries(ROOT, "p")}


async def deliveries_count(core: Core, n: int) -> bool:
    return len(await core.control.webhooks.deliveries(ROOT, "p")) >= n


async def test_a_hanging_receiver_delays_no_other_url(core: Core, nursery, mock_clock):
    receiver = Receiver()
    receiver.hang.add(HOOK)
    await start_dispatcher(core, nursery, receiver)
    extra = f"    webhooks: [{{url: '{OTHER}', events: [start]}}]\n"
    await add(core, manifest(extra=extra))
    t0 = trio.current_time()
    await until(lambda: len(receiver.events(OTHER)) == 2, step=0.05)
    assert trio.current_time() - t0 < 2.0  # the other URL waits for nothing of the hanging one's
    await until(lambda: hanging_timed_out(core))
    row = next(r for r in await core.control.webhooks.deliveries(ROOT, "p") if r["url"] == HOOK and r["attempts"])
    assert row["last_error"] == f"no answer in {TIMEOUT:g} s" and row["state"] == "pending"


async def hanging_timed_out(core: Core) -> bool:
    return any(r["url"] == HOOK and r["attempts"] for r in await core.control.webhooks.deliveries(ROOT, "p"))


async def test_a_full_outbox_drops_the_oldest_with_an_event(core: Core, nursery, monkeypatch):
    monkeypatch.setattr(webhook_store, "OUTBOX", 3)
    receiver = Receiver()
    receiver.status[HOOK] = 500
    await start_dispatcher(core, nursery, receiver)
    await add(core, manifest(scale=5))
    await until(lambda: deliveries_count(core, 5))
    rows = await core.control.webhooks.deliveries(ROOT, "p")  # newest first
    assert [r["state"] for r in rows] == ["pending"] * 3 + ["dropped"] * 2
    dropped = [e for e in await core.control.events.list(ROOT, "p") if e["type"] == "webhook.dropped"]
    assert dropped and "outbox full (3 pending), dropped the" in dropped[0]["message"]
    failed = await core.control.webhooks.deliveries(ROOT, "p", failed=True)
    assert {r["id"] for r in failed} == {r["id"] for r in rows[3:]}


async def test_given_up_at_its_deadline_then_redelivered_under_the_same_id(core: Core, nursery, mock_clock):
    receiver = Receiver()
    receiver.status[HOOK] = 404
    await start_dispatcher(core, nursery, receiver)
    await add(core, manifest(scale=1))
    [row] = await until(lambda: core.control.webhooks.deliveries(ROOT, "p"))
    assert row["deadline"] - row["created"] == 24 * 3600
    # a day of virtual time is 170,000 passes of the core's loops: the deadline is brought near instead
    await core.ctx.store.call(lambda db: db.execute(
        "UPDATE webhook_deliveries SET deadline = created + 40 WHERE id = ?", [row["id"]]))

    async def failed() -> list[dict]:
        return await core.control.webhooks.deliveries(ROOT, "p", failed=True)

    [row] = await until(failed)
    # attempts at 0, 1, 3, 7, 15 and 31 s; the next would be at 63 s, past the deadline: given up then
    assert row["state"] == "failed" and row["attempts"] == 6 and row["next_attempt"] is None
    gave_up = [e for e in await core.control.events.list(ROOT, "p") if e["type"] == "webhook.failed"]
    assert len(gave_up) == 1 and "given up after 6 attempts (HTTP 404)" in gave_up[0]["message"]
    receiver.status[HOOK] = 200
    again = await core.control.webhooks.redeliver(ROOT, "p", row["id"][:8])
    assert again["id"] == row["id"] and again["state"] == "pending"
    await until(lambda: len(receiver.events()) == 1)
    assert receiver.got[0][2]["delivery"] == row["id"]
    [done] = await core.control.webhooks.deliveries(ROOT, "p")
    assert done["state"] == "delivered" and done["attempts"] == 7
    assert [e["author"] for e in await core.control.events.list(ROOT, "p") if e["type"] == "webhook.redeliver"]


async def test_a_secret_a_webhook_uses_cannot_be_removed(core: Core, nursery):
    await add(core, manifest(scale=1))
    with pytest.raises(Conflict, match="used by service web"):
        await core.control.secrets.remove(ROOT, "p", "hook_key")


async def test_a_secret_gone_fails_the_attempt_and_nothing_goes_out_unsigned(core: Core, nursery):
    receiver = Receiver()
    await start_dispatcher(core, nursery, receiver)
    await add(core, manifest(scale=1))
    await until(lambda: len(receiver.events()) == 1)
    # removed behind the control layer's back (its check refuses while a version uses it)
    await core.ctx.vault.remove("project", "p", "hook_key")
    await core.settle(await core.control.services.scale(ROOT, "p", "web", 2))
    row = await until(lambda: attempted_unsigned(core))
    assert "secret 'hook_key' of project p is not set: not sent unsigned" == row["last_error"]
    assert len(receiver.got) == 1


async def attempted_unsigned(core: Core) -> dict | None:
    return next((r for r in await core.control.webhooks.deliveries(ROOT, "p") if r["last_error"]), None)


async def test_events_of_no_service_go_to_the_project_webhooks_only(core: Core, nursery, mock_clock):
    receiver = Receiver()
    await start_dispatcher(core, nursery, receiver)
    extra = f"    webhooks: [{{url: '{OTHER}', events: [down]}}]\n"
    await add(core, manifest(events="[down]", extra=extra, scale=1))
    project_id = (await core.control.projects.get(ROOT, "p"))["id"]
    await core.ctx.store.call(lambda db: event_store.record(db, "service.down", "the project is down",
                                                            project_id=project_id))
    await until(lambda: len(receiver.events()) == 1)
    await trio.sleep(10)
    assert receiver.events(OTHER) == [] and receiver.got[0][2]["service"] is None


def test_the_webhooks_area_is_a_control_area():
    from mariposa.control.webhooks import Webhooks

    assert issubclass(Webhooks, Area)
    assert Webhooks.deliveries.action == "webhook.deliveries"  # type: ignore[attr-defined]


async def test_an_unexpected_error_in_an_attempt_ends_neither_the_queue_nor_the_daemon(core: Core, nursery):
    receiver = Receiver()
    broken = {"times": 1}
    handle = receiver.handle

    async def flaky(request: httpx.Request) -> httpx.Response:
        if broken["times"]:
            broken["times"] -= 1
            raise RuntimeError("a bug in the transport")
        return await handle(request)

    receiver.handle = flaky  # type: ignore[method-assign]
    await start_dispatcher(core, nursery, receiver)
    await add(core, manifest(scale=1))
    await until(lambda: len(receiver.events()) == 1)
    [row] = await core.control.webhooks.deliveries(ROOT, "p")
    assert row["state"] == "delivered"


async def test_a_redelivery_asked_while_the_dispatcher_is_stopped_waits_for_its_start(core: Core, nursery):
    receiver = Receiver()
    scope = await start_dispatcher(core, nursery, receiver)
    await add(core, manifest(scale=1))
    await until(lambda: len(receiver.events()) == 1)
    scope.cancel()
    await trio.sleep(1)
    [row] = await core.control.webhooks.deliveries(ROOT, "p")
    again = await core.control.webhooks.redeliver(ROOT, "p", row["id"])  # the old dispatcher: stopped
    assert again["state"] == "pending"
    await start_dispatcher(core, nursery, receiver)
    await until(lambda: len(receiver.events()) == 2)
    assert receiver.got[0][2] == receiver.got[1][2]  # the same body, delivery id included
