"""One URL's queue: its pending deliveries POSTed oldest first, one at a time, at least once.

One task per URL, so a slow or dead receiver holds up its own deliveries and nothing else: not
the other URLs, not the dispatcher that makes deliveries (it only writes rows), not the daemon.

Retries use the project's one ``Backoff`` (converge/backoff.py), twice over:

* each delivery waits ``DELIVERY.delay(attempts)`` before its next attempt (1 s, 2 s, 4 s ... 5 min)
  and is given up (``failed``) once that would pass its deadline, 24 h after it was made;
* the URL waits ``DELIVERY.delay(failures in a row)`` after any failed attempt before it tries
  another delivery, so a dead receiver with a full outbox gets one attempt per back-off, not
  one per delivery. Its first 2xx after failures makes every waiting delivery of the URL due at
  once: the receiver is back.

A 2xx is delivered; any other status, a refused connection or no answer within ``TIMEOUT`` is a
failed attempt. The secret that signs a delivery is read from the vault at each attempt and is
never logged: a secret gone since the version was made fails the attempt (the POST is not sent
unsigned).
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

import httpx
import structlog
import trio
from cryptography.fernet import InvalidToken

from mariposa.converge.backoff import Backoff
from mariposa.errors import StoreUnavailable
from mariposa.store import webhooks as webhook_store
from mariposa.store.secrets import PROJECT
from mariposa.vault import SecretKeyError
from mariposa.wakeup import Wakeup
from mariposa.webhooks.events import signature

if TYPE_CHECKING:
    from mariposa.context import Context

log = structlog.get_logger()

DELIVERY = Backoff(base=1.0, factor=2.0, cap=300.0)
TIMEOUT = 10.0  # seconds for a receiver to answer
IDLE = 600.0  # an empty queue's task ends after this; the next delivery starts another
USER_AGENT = "mariposa-webhooks/1"


class Sender:
    def __init__(self, ctx: Context, url: str, client: httpx.AsyncClient, on_idle) -> None:
        self.ctx = ctx
        self.url = url
        self.client = client
        self.wakeup = Wakeup()
        self.on_idle = on_idle  # called (synchronously) when the task ends for want of work
        self.failures = 0  # attempts in a row that got no 2xx

    def wake(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            try:
                row, due_in = await self.ctx.store.call(webhook_store.next_due, self.url)
            except StoreUnavailable as exc:
                log.warning("webhook queue: store unavailable", url=self.url, error=exc.message)
                await self.ctx.clock.sleep(1.0)
                continue
            if row is None:
                if not await self.wakeup.wait(IDLE if due_in is None else due_in) and due_in is None:
                    self.on_idle(self)
                    return
                continue
            try:
                ok = await self.attempt(row)
            except StoreUnavailable as exc:  # the attempt's outcome is not recorded: it is made again
                log.warning("webhook attempt not recorded: store unavailable", url=self.url, error=exc.message)
                ok = False
            except Exception as exc:  # a bug must not end the queue (or, through the nursery, the daemon)
                log.error("webhook attempt failed unexpectedly", url=self.url, delivery=row.id[:12], error=repr(exc),
                          traceback=traceback.format_exc())
                self.failures += 1
                ok = False
            if not ok:
                await self.ctx.clock.sleep(DELIVERY.delay(self.failures))

    async def attempt(self, row: webhook_store.DeliveryRow) -> bool:
        """One POST of ``row``; its outcome recorded. True on a 2xx."""
        body = row.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Mariposa-Delivery": row.id, "X-Mariposa-Event": row.event}
        status: int | None = None
        error: str | None = None
        if row.secret_from is not None:
            secret, error = await self._secret(row)
            if secret is not None:
                headers["X-Mariposa-Signature"] = signature(secret, body)
        if error is None:
            status, error = await self._post(body, headers)
        ok = status is not None and 200 <= status < 300
        with trio.CancelScope(shield=True):  # the outcome of a POST that went out is recorded
            if ok:
                assert status is not None
                await self.ctx.store.call(webhook_store.delivered, row.id, status, self.failures > 0)
                self.failures = 0
                log.info("webhook delivered", url=self.url, delivery=row.id[:12], webhook_event=row.event,
                         status=status, attempts=row.attempts + 1)
                return True
            self.failures += 1
            retry_in = DELIVERY.delay(row.attempts + 1)
            state = await self.ctx.store.call(webhook_store.attempt_failed, row.id, status, error, retry_in)
        log.warning("webhook attempt failed", url=self.url, delivery=row.id[:12], webhook_event=row.event,
                    status=status, error=error, attempts=row.attempts + 1, state=state,
                    retry_in=retry_in if state == "pending" else None)
        return False

    async def _secret(self, row: webhook_store.DeliveryRow) -> tuple[bytes | None, str | None]:
        """(the value of the secret that signs ``row``, None) or (None, why there is none)."""
        name = row.secret_from or ""
        try:
            secret = await self.ctx.vault.get(PROJECT, row.project or "", name)
        except (SecretKeyError, InvalidToken):
            return None, f"secret {name!r} cannot be read (the key file?): not sent unsigned"
        if secret is None:
            return None, f"secret {name!r} of project {row.project} is not set: not sent unsigned"
        return secret, None

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """(status, None) for an answer, (None, why) for none."""
        try:
            with trio.fail_after(TIMEOUT + 1):  # httpx's own timeouts are per phase; this bounds the whole
                resp = await self.client.post(self.url, content=body, headers=headers)
            return resp.status_code, None if resp.is_success else f"HTTP {resp.status_code}"
        except trio.TooSlowError:
            return None, f"no answer in {TIMEOUT:g} s"
        except httpx.TimeoutException:
            return None, f"no answer in {TIMEOUT:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            return None, _short(exc)


def _short(exc: BaseException) -> str:
    """An exception as a line for listings: its type and first line (no URL credentials: URLs
    with any are refused by the manifest)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
