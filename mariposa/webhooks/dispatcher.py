"""The dispatcher: follows the event log and turns the events webhooks want into deliveries,
then hands each URL's to its sender (sender.py).

It follows from a cursor kept in the store. A page of events is read, the webhooks that want
each event are found in its project's current version (a project-level webhook is in every
service's list, marked ``scope: project``; an event of no service, or of a service the version
no longer has, goes to those), and the deliveries are written and the cursor moved in one
transaction (store/webhooks.py ``make``). Killed at any point, the daemon reads again exactly
the events whose deliveries it had not written. Deliveries in the store that are still pending
when the daemon starts are resumed.

It looks at the log when the store's generation moved (any write), at most every ``POLL``
seconds: the look is skipped without a worker thread when nothing was written.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

import httpx
import structlog
import trio

from mariposa.errors import StoreUnavailable
from mariposa.manifest import ManifestError
from mariposa.model import WebhookSpec
from mariposa.store import webhooks as webhook_store
from mariposa.store.db import new_id
from mariposa.webhooks.events import payload, wanted, webhook_event
from mariposa.webhooks.sender import TIMEOUT, USER_AGENT, Sender

if TYPE_CHECKING:
    from mariposa.context import Context
    from mariposa.model import ProjectSpec

log = structlog.get_logger()

POLL = 0.5  # seconds between looks at the log
PAGE = 500  # events per transaction
PRUNE_EVERY = 3600.0


def hooks_for(spec: ProjectSpec | None, service: str | None) -> tuple[WebhookSpec, ...]:
    """The webhooks an event of ``service`` (None: of the project) goes to."""
    if spec is None:
        return ()
    svc = spec.service(service) if service else None
    if svc is not None:
        return svc.webhooks
    for any_service in spec.services:  # the project's are copied into every service: any has them
        return tuple(h for h in any_service.webhooks if h.scope == "project")
    return ()


class Dispatcher:
    def __init__(self, ctx: Context, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.ctx = ctx
        self.transport = transport  # None: the network (tests give an httpx.MockTransport)
        self.senders: dict[str, Sender] = {}
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self._seen = -1  # the store generation last looked at
        self._pruned = 0.0

    def wake(self, url: str) -> None:
        """A delivery of ``url`` is due now (a redelivery): its sender looks (and is started if
        idle). Before the dispatcher runs, or after it stopped, nothing: the delivery is pending
        in the store, and the next start resumes it."""
        if self._nursery is not None and self._client is not None:
            self._sender(url).wake()

    def _sender(self, url: str) -> Sender:
        sender = self.senders.get(url)
        if sender is None:
            assert self._nursery is not None and self._client is not None
            sender = Sender(self.ctx, url, self._client, self._idle)
            self._nursery.start_soon(sender.run, name=f"webhook {url}")
            self.senders[url] = sender
        return sender

    def _idle(self, sender: Sender) -> None:
        if self.senders.get(sender.url) is sender:
            del self.senders[sender.url]

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        timeout = httpx.Timeout(TIMEOUT)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT},
                                     transport=self.transport,
                                     limits=httpx.Limits(max_keepalive_connections=8)) as client, \
                trio.open_nursery() as nursery:
            self._client, self._nursery = client, nursery
            for url in await self._resume():
                self._sender(url)
            task_status.started()
            try:
                await self._follow()
            finally:  # a redelivery asked for from now on waits for the next start
                self._nursery = self._client = None
                self.senders.clear()

    async def _follow(self) -> None:
        while True:
            try:
                await self.step()
            except StoreUnavailable as exc:
                log.warning("webhooks: store unavailable", error=exc.message)
            except Exception as exc:  # a bug: logged, and the next look tries again (the cursor did not move)
                log.error("webhooks: dispatch failed", error=repr(exc), traceback=traceback.format_exc())
                self._seen = -1
            await self.ctx.clock.sleep(POLL)

    async def _resume(self) -> list[str]:
        while True:
            try:
                return await self.ctx.store.call(webhook_store.pending_urls)
            except StoreUnavailable as exc:
                log.warning("webhooks: store unavailable", error=exc.message)
                await self.ctx.clock.sleep(1.0)

    async def step(self) -> int:
        """Make the deliveries of every event written since the last look; how many were made."""
        made = 0
        while self.ctx.store.generation != self._seen:
            self._seen = self.ctx.store.generation  # taken before the read: a write after it is read next time
            start, found, end, projects, full = await self.ctx.store.call(webhook_store.page, PAGE)
            if end == start:
                break
            deliveries = await self._deliveries(found, projects)
            for url in await self.ctx.store.call(webhook_store.make, start, end, deliveries):
                self._sender(url).wake()
            made += len(deliveries)
            if full:
                self._seen = -1  # more behind it: read on at once
        now = self.ctx.clock.now()
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            await self.ctx.store.call(webhook_store.prune)
        return made

    async def _deliveries(self, found: list[dict], projects: dict[str, tuple]) -> list[webhook_store.NewDelivery]:
        specs: dict[str, ProjectSpec | None] = {}
        out = []
        for event in found:
            name = webhook_event(event["type"])
            project = projects.get(event["project_id"])
            if name is None or project is None:
                continue
            project_name, version = project
            if event["project_id"] not in specs:
                try:
                    specs[event["project_id"]] = await self.ctx.goals.spec_of(version)
                except ManifestError as exc:  # logged by the goal reader too; its events go nowhere
                    log.warning("webhooks: version unreadable", project=project_name, error=str(exc))
                    specs[event["project_id"]] = None
            for hook in wanted(hooks_for(specs[event["project_id"]], event["service"]), name):
                delivery_id = new_id()
                out.append(webhook_store.NewDelivery(
                    id=delivery_id, project_id=event["project_id"], event_id=event["id"], event=name, url=hook.url,
                    secret_from=hook.secret_from, body=payload(event, project_name, name, delivery_id).decode()))
        return out
