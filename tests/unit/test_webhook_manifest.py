"""The manifest's `webhooks:`, of a service and of the project (manifest/webhooks.py): every
problem at its line:column, and the project's entries copied into every service."""

from __future__ import annotations

import pytest

from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.rules import Rules
from mariposa.manifest.sections import check, read
from mariposa.model import WEBHOOK_EVENTS, WebhookSpec
from tests.unit.test_manifest import manifest, problem, problems, service, service_problem


def test_a_service_webhook_with_every_option():
    svc = service("""
        image: x
        webhooks:
          - url: http://127.0.0.1:9000/hook
            events: [start, down]
            secret_from: webhook_secret
    """, secrets=frozenset({"webhook_secret"}))
    assert svc.webhooks == (WebhookSpec("http://127.0.0.1:9000/hook", ("start", "down"), "webhook_secret"),)


def test_events_default_to_all_and_secret_to_none():
    svc = service("image: x\nwebhooks: [{url: 'https://hooks.example/a'}]")
    assert svc.webhooks == (WebhookSpec("https://hooks.example/a", WEBHOOK_EVENTS, None),)


def test_the_project_webhooks_apply_to_every_service_after_its_own():
    spec = parse_manifest(manifest("""
        webhooks:
          - url: http://relay.example/all
            events: [down]
        services:
          web:
            image: x
            webhooks:
              - url: http://web.example/h
          db:
            image: x
    """))
    project = WebhookSpec("http://relay.example/all", ("down",), None, scope="project")
    assert spec.service("web").webhooks == (WebhookSpec("http://web.example/h"), project)
    assert spec.service("db").webhooks == (project,)


def test_a_url_the_service_lists_itself_is_its_own():
    spec = parse_manifest(manifest("""
        services:
          web:
            image: x
            webhooks: [{url: 'http://a.example/h', events: [start]}]
        webhooks: [{url: 'http://a.example/h'}]
    """))
    assert spec.service("web").webhooks == (WebhookSpec("http://a.example/h", ("start",)),)


@pytest.mark.parametrize(("url", "line", "col", "start"), [
    ("ftp://x.example/h", 5, 14, "a webhook URL must be http:// or https://, not 'ftp://'"),
    ("mailto:ops@example.com", 5, 14, "a webhook URL must be http:// or https://, not 'mailto://'"),
    ("127.0.0.1:9000/hook", 5, 14, "a webhook URL must be http:// or https://"),
    ("/hook", 5, 14, "a webhook URL must be http:// or https://, not no scheme"),
    ("http:///hook", 5, 14, "invalid webhook URL 'http:///hook': expected http(s)://HOST[:PORT]/PATH"),
    ("http://x.example:99999/h", 5, 14, "invalid webhook URL 'http://x.example:99999/h': Port out of range"),
    ("http://u:pw@x.example/h", 5, 14, "a webhook URL must not carry credentials"),
    ("'http://x.example/{{ .meta.p }}'", 5, 14, "templates ({{ ... }}) are only allowed in"),
])
def test_bad_urls_are_refused_at_their_position(url, line, col, start):
    found = service_problem(f"image: x\nwebhooks:\n  - url: {url}")
    assert (found.line, found.column) == (line, col)
    assert found.message.startswith(start), found.message
    assert found.field == "services.web.webhooks[0].url"


def test_an_unknown_event_has_a_did_you_mean_at_its_position():
    found = service_problem("image: x\nwebhooks:\n  - url: http://a/h\n    events: [start, helth]")
    assert (found.line, found.column, found.field) == (6, 25, "services.web.webhooks[0].events[1]")
    assert found.message.startswith("unknown webhook event 'helth'; did you mean 'health'?")


def test_an_unknown_event_of_the_project_webhooks_is_at_its_position():
    found = problem(manifest("""
        services:
          web: {image: x}
        webhooks:
          - url: http://a/h
            events:
              - rollout-failed
    """))
    assert (found.line, found.column, found.field) == (6, 9, "webhooks[0].events[0]")
    assert "did you mean 'rollout_failed'?" in found.message


@pytest.mark.parametrize(("body", "field", "start"), [
    ("webhooks: http://a/h", "services.web.webhooks", "expected a list of webhooks"),
    ("webhooks: [http://a/h]", "services.web.webhooks[0]", "expected a webhook mapping"),
    ("webhooks: [{events: [start]}]", "services.web.webhooks[0]", "a webhook needs a 'url'"),
    ("webhooks: [{url: 'http://a/h', event: [start]}]", "services.web.webhooks[0].event",
     "unknown webhook option 'event'; did you mean 'events'?"),
    ("webhooks: [{url: 'http://a/h', events: []}]", "services.web.webhooks[0].events", "lists no events"),
    ("webhooks: [{url: 'http://a/h', events: start}]", "services.web.webhooks[0].events", "expected a list of strings"),
    ("webhooks: [{url: 'http://a/h', events: [stop, stop]}]", "services.web.webhooks[0].events[1]",
     "event 'stop' is listed twice"),
    ("webhooks: [{url: 'http://a/h'}, {url: 'http://a/h'}]", "services.web.webhooks[1]",
     "webhook 'http://a/h' is given twice"),
    ("webhooks: [{url: 'http://a/h', secret_from: 'a/b'}]", "services.web.webhooks[0].secret_from",
     "secret name 'a/b' must be"),
    ("webhooks: [{url: 3}]", "services.web.webhooks[0].url", "expected a string, got an integer"),
])
def test_shape_problems(body, field, start):
    found = service_problem("image: x\n" + body)
    assert found.field == field
    assert found.message.startswith(start), found.message


def test_a_secret_the_project_lacks_is_refused_when_the_version_is_made():
    text = "image: x\nwebhooks:\n  - url: http://a/h\n    secret_from: hook_key"
    found = service_problem(text, secrets=frozenset({"other"}))
    assert (found.line, found.column, found.field) == (6, 22, "services.web.webhooks[0].secret_from")
    assert found.message == "unknown secret 'hook_key': set it first with 'mariposa -j PROJECT secret set hook_key'"
    assert service(text, secrets=frozenset({"hook_key"})).webhooks[0].secret_from == "hook_key"
    assert service(text).webhooks[0].secret_from == "hook_key"  # a stored version: judged when it was made


def test_a_template_in_a_project_webhook_url_is_refused():
    found = problem(manifest("""
        services:
          web: {image: x}
        webhooks: [{url: 'http://{{ .meta.host }}/h'}]
    """))
    assert (found.line, found.field) == (3, "webhooks[0].url")
    assert found.message == "a webhook URL takes no templates ({{ ... }})"


def test_the_project_webhooks_are_checked_once_even_with_many_services():
    found = problems(manifest("""
        webhooks: [{url: 'gopher://a/h'}]
        services:
          a: {image: x}
          b: {image: x}
    """))
    assert [(p.line, p.field) for p in found] == [(1, "webhooks[0].url")]


def test_a_section_update_keeps_the_project_webhooks():
    """`service add|update` checks one section in the whole manifest: the project's webhooks still apply."""
    text = manifest("""
        webhooks: [{url: 'http://relay.example/h', events: [down]}]
        services:
          web: {image: x}
    """)
    section = read("image: y\nwebhooks: [{url: 'ftp://x/y'}]\n", "web.yaml", "web")
    with pytest.raises(ManifestError) as info:
        check(text, "<project p>", "web", section, "web.yaml", Rules())
    assert [(p.file, p.line, p.field) for p in info.value.problems] == [("web.yaml", 2, "services.web.webhooks[0].url")]
    check(text, "<project p>", "web", read("image: y\n", "web.yaml", "web"), "web.yaml", Rules())
