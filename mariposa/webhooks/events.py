"""Which event of the log is which webhook event, which webhooks want it, and the bytes sent.

Pure (no I/O, no clock): the dispatcher (dispatcher.py) reads the log and the specs, this
decides, the store writes. The mapping, from the types the daemon records:

    start           instance.create (made and started: drivers/base.py ``create``), instance.start
                    (a restart, or the start of one made but not started)
    stop            instance.stop (stopped by the daemon), instance.exit (exited by itself),
                    instance.remove (taken out: scale down, replaced, service stopped)
    health          health.unhealthy (a health check failed past its retries)
    down            service.down (the restart policy gave up)
    rollout_failed  rollout.failed
    autoscale       autoscale.* (autoscale.scale, autoscale.notify)
    run_failed      run.failed (a run of a scheduled or event service ended failed)

A receiver tells these apart by ``type``, which is the log's own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable

from mariposa.model import WebhookSpec

_BY_TYPE = {
    "instance.create": "start",
    "instance.start": "start",
    "instance.stop": "stop",
    "instance.exit": "stop",
    "instance.remove": "stop",
    "health.unhealthy": "health",
    "service.down": "down",
    "rollout.failed": "rollout_failed",
    "run.failed": "run_failed",
}
_BY_PREFIX = {"autoscale.": "autoscale"}


def webhook_event(event_type: str) -> str | None:
    """The webhook event an event of the log is, or None (not announced)."""
    found = _BY_TYPE.get(event_type)
    if found is None:
        found = next((name for prefix, name in _BY_PREFIX.items() if event_type.startswith(prefix)), None)
    return found


def wanted(hooks: Iterable[WebhookSpec], name: str) -> list[WebhookSpec]:
    """The webhooks that want webhook event ``name``, one per URL (the first listed wins: a
    service's own entry comes before the project's copy)."""
    out: dict[str, WebhookSpec] = {}
    for hook in hooks:
        if name in hook.events:
            out.setdefault(hook.url, hook)
    return list(out.values())


def payload(event: dict, project: str | None, name: str, delivery_id: str) -> bytes:
    """The JSON body of one delivery: the event's fields, the webhook event's name and the
    delivery id (also in the X-Mariposa-Delivery header). Written once: every attempt sends
    these bytes, so a signature and a receiver's duplicate check hold across retries."""
    body = {
        "delivery": delivery_id,
        "event": name,
        "id": event["id"],
        "type": event["type"],
        "time": event["time"],
        "project": project,
        "project_id": event.get("project_id"),
        "service": event.get("service"),
        "instance": event.get("instance"),
        "message": event.get("message"),
        "task_id": event.get("task_id"),
        "author": event.get("author"),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: bytes, body: bytes) -> str:
    """X-Mariposa-Signature: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
