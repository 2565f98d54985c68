"""Outgoing webhooks (``webhooks:``), of a service or of the whole project (a top-level key that
applies to every service): each a URL, the events it wants and the project secret that signs
its POSTs (mariposa/webhooks/).

A ``secret_from`` naming no secret of the project is refused when the version is made, as a
service's ``secrets:`` entry is: the mistake shows where it was written, and a version never
sends unsigned what its author meant signed. A secret removed afterwards is found when a
delivery is sent: that attempt fails (and is retried) rather than going out unsigned.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

import attrs

from mariposa.manifest.report import _At, _did_you_mean, _Report
from mariposa.manifest.rules import Rules
from mariposa.manifest.shapes import _Shapes
from mariposa.model import WEBHOOK_EVENTS, WebhookSpec

MAX_WEBHOOKS = 20  # per list: each is a queue of its own in the daemon
MAX_URL = 2048
_SECRET_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # as manifest/container.py's secrets
SHAPE = "webhooks ({url: http://..., events: [...], secret_from: NAME})"


class _WebhookChecks(_Shapes):
    def webhooks(self, at: _At) -> None:
        found = self.webhook_list(at)
        if found is not None:
            self.fields["webhooks"] = found

    def webhook_list(self, at: _At, scope: str = "service") -> tuple[WebhookSpec, ...] | None:
        items = self.list_of(at, SHAPE)
        if items is None:
            return None
        if len(items) > MAX_WEBHOOKS:
            self.problem(at, f"lists {len(items)} webhooks; at most {MAX_WEBHOOKS}")
            return None
        found: list[WebhookSpec] = []
        for item in items:
            if not isinstance(item.value, Mapping):
                self.wrong_type(item, "a webhook mapping ({url: ..., events: [...]})")
                continue
            hook = self.webhook(item, scope)
            if hook is None:
                continue
            if any(h.url == hook.url for h in found):
                self.problem(item, f"webhook {hook.url!r} is given twice: list its events in one entry")
                continue
            found.append(hook)
        return tuple(found)

    def webhook(self, at: _At, scope: str) -> WebhookSpec | None:
        opts = self.options(at, ("url", "events", "secret_from"), "webhook") or {}
        failed_before, self.failed = self.failed, False
        url = secret = None
        events: tuple[str, ...] = WEBHOOK_EVENTS
        if "url" not in opts:
            self.problem(at, "a webhook needs a 'url' (http:// or https://)")
        else:
            url = self.webhook_url(opts["url"], scope)
        if "events" in opts and opts["events"].value is not None:
            events = self.webhook_events(opts["events"]) or WEBHOOK_EVENTS
        if "secret_from" in opts and opts["secret_from"].value is not None:
            secret = self.secret_name(opts["secret_from"])
        ok = not self.failed
        self.failed = failed_before or self.failed
        if not ok or url is None:
            return None
        return WebhookSpec(url=url, events=events, secret_from=secret, scope=scope)

    def webhook_url(self, at: _At, scope: str) -> str | None:
        text = self.string(at)
        if text is None:
            return None
        if len(text) > MAX_URL:
            self.problem(at, f"a webhook URL is at most {MAX_URL:,} characters")
            return None
        if "{{" in text:  # a service's options are checked for templates with the others (no_templates)
            if scope == "project":
                self.problem(at, "a webhook URL takes no templates ({{ ... }})")
            return None
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port  # raises on a port that is not a number in range
        except ValueError as exc:
            self.problem(at, f"invalid webhook URL {text!r}: {exc}")
            return None
        if parts.scheme not in ("http", "https"):
            shown = f"'{parts.scheme}://'" if parts.scheme else "no scheme"
            self.problem(at, f"a webhook URL must be http:// or https://, not {shown} ({text!r})")
            return None
        if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in text) or port == 0:
            self.problem(at, f"invalid webhook URL {text!r}: expected http(s)://HOST[:PORT]/PATH")
            return None
        if parts.username is not None or parts.password is not None:
            self.problem(at, "a webhook URL must not carry credentials (user:password@): it is shown in "
                             "listings; sign the POSTs with secret_from instead")
            return None
        return text

    def webhook_events(self, at: _At) -> tuple[str, ...] | None:
        names = self.strings(at)
        if names is None:
            return None
        if not names and not self.failed:
            self.problem(at, f"lists no events; leave 'events' out for all ({', '.join(WEBHOOK_EVENTS)})")
            return None
        out: list[str] = []
        for name, where in names:
            if name not in WEBHOOK_EVENTS:
                self.problem(where, f"unknown webhook event {name!r}{_did_you_mean(name, WEBHOOK_EVENTS)} "
                                    f"(expected some of {', '.join(WEBHOOK_EVENTS)})")
            elif name in out:
                self.problem(where, f"event {name!r} is listed twice")
            else:
                out.append(name)
        return tuple(out)

    def secret_name(self, at: _At) -> str | None:
        name = self.string(at)
        if name is None:
            return None
        if not _SECRET_RE.fullmatch(name):
            self.problem(at, f"secret name {name!r} must be letters, digits, '_', '.' or '-'")
            return None
        if self.rules.secrets is not None and name not in self.rules.secrets:
            self.problem(at, f"unknown secret {name!r}: set it first with 'mariposa -j PROJECT secret set {name}'")
            return None
        return name


def project_webhooks(at: _At, report: _Report, rules: Rules) -> tuple[WebhookSpec, ...]:
    """The top-level ``webhooks:`` (every problem in ``report``), each marked as the project's:
    they are copied into every service, and the events of no service go to them."""
    if at.value is None:
        return ()
    checks = _WebhookChecks(report, rules, attrs.evolve(at, field="webhooks"))
    return checks.webhook_list(at, scope="project") or ()


def with_project_webhooks(own: tuple[WebhookSpec, ...], project: tuple[WebhookSpec, ...]) -> tuple[WebhookSpec, ...]:
    """A service's webhooks: its own, then the project's (a URL it lists itself is its own)."""
    urls = {h.url for h in own}
    return own + tuple(h for h in project if h.url not in urls)
