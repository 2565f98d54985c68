"""The dashboard's actions (ui/actions.py) through the ASGI bridge, on the in-process core: each
is the control-layer call the CLI makes, as the signed-in user and audited with that user;
CSRF and the control layer's own refusal guard every POST; the manifest form shows problems at
their line and column, and asks for the meta a manifest needs."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from mariposa.api.asgi import call
from mariposa.api.router import Request, Response
from mariposa.ui.app import build
from tests.unit.conftest import ROOT, Core

MANIFEST = "services:\n  web:\n    image: busybox\n    command: sleep 1000\n"
NEEDS_META = ('services:\n  web:\n    image: busybox\n    command: sleep 1000\n    environment:\n'
              '      TITLE: "{{ .meta.title }}"\n      OWNER: "{{ .meta.owner }}"\n')
FORM = b"application/x-www-form-urlencoded"


class Browser:
    """One signed-in user's requests to the dashboard, as the listener hands them over."""

    def __init__(self, core: Core, user: str = "root") -> None:
        self.core = core
        self.board = build(core.control, core.ctx.sessions, None)
        self.cookie, self.session = core.ctx.sessions.open(user)

    def headers(self, content_type: bytes | None, extra: tuple = ()) -> tuple:
        out = ((b"cookie", f"mariposa_session={self.cookie}".encode()),)
        return out + (((b"content-type", content_type),) if content_type else ()) + tuple(extra)

    async def get(self, path: str, query: str = "") -> Response:
        req = Request("GET", path, {}, b"", {}, ROOT, headers=self.headers(None), query_string=query.encode())
        assert self.board.app is not None
        return await call(self.board.app, req, "127.0.0.1")

    async def post(self, path: str, fields: dict | list | None = None, *, csrf: str | None = "session",
                   htmx: bool = False, body: bytes | None = None, content_type: bytes = FORM) -> Response:
        items = list(fields.items()) if isinstance(fields, dict) else list(fields or [])
        if csrf == "session":
            items.append(("csrf", self.session.csrf))
        elif csrf is not None:
            items.append(("csrf", csrf))
        extra = ((b"hx-request", b"true"),) if htmx else ()
        req = Request("POST", path, {}, urlencode(items).encode() if body is None else body, {}, ROOT,
                      headers=self.headers(content_type, extra))
        assert self.board.app is not None
        return await call(self.board.app, req, "127.0.0.1")


def page(r: Response) -> str:
    return r.body.decode() if isinstance(r.body, bytes) else str(r.body)


def header(r: Response, name: str) -> str | None:
    return next((v for k, v in r.headers if k.lower() == name), None)


async def scale_of(core: Core, project: str = "app", service: str = "web") -> int:
    return (await core.control.services.get(ROOT, project, service))["scale"]


async def test_scale_changes_the_scale_as_the_signed_in_user_audited_with_that_user(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    ui = Browser(core)
    r = await ui.post("/ui/p/app/s/web/scale", {"count": "3"})
    assert r.status == 303 and header(r, "location") == "/ui/p/app/s/web"  # back to the page, no JavaScript
    assert await scale_of(core) == 3
    # with htmx: a fragment saying so, and the same call
    r = await ui.post("/ui/p/app/s/web/scale", {"count": "+1"}, htmx=True)
    assert r.status == 200 and 'role="status"' in page(r) and "Scaling web" in page(r)
    assert await scale_of(core) == 4
    audit = await core.control.access.audit(ROOT, user="root")
    scaled = [e for e in audit if e.get("action") == "service.scale"]
    assert len(scaled) == 2 and all(e["user"] == "root" for e in scaled), audit[:3]
    events = await core.control.events.list(ROOT, project="app")
    assert any("scale" in e["type"] and e.get("author") and "root" in e["author"] for e in events), events[:3]


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    ui = Browser(core)
    for csrf in (None, "", "wrong", ui.session.csrf[:-1] + "x"):
        r = await ui.post("/ui/p/app/s/web/scale", {"count": "5"}, csrf=csrf)
        assert r.status == 403, (csrf, r.status)
        r = await ui.post("/ui/p/app/stop", {}, csrf=csrf, htmx=True)
        assert r.status == 403
    assert await scale_of(core) == 1
    assert (await core.control.projects.get(ROOT, "app"))["desired"] == "running"


async def test_a_viewers_forged_scale_is_refused_by_the_control_layer_and_changes_nothing(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    await core.control.access.user_add(ROOT, "ann", [1001])
    await core.control.access.grant(ROOT, "ann", "viewer", org="default")
    ann = Browser(core, "ann")
    r = await ann.post("/ui/p/app/s/web/scale", {"count": "7"})  # a valid CSRF token: only the role refuses
    assert r.status == 403 and "scale" in page(r)
    assert 'role="alert"' in page(r) and "Not allowed" in page(r) and "Error 403" in page(r)
    r = await ann.post("/ui/p/app/s/web/scale", {"count": "7"}, htmx=True)
    assert r.status == 403 and 'role="alert"' in page(r) and "<html" not in page(r)  # a fragment
    for path in ("/ui/p/app/stop", "/ui/p/app/s/web/stop", "/ui/p/app/delete"):
        assert (await ann.post(path, {})).status == 403
    assert await scale_of(core) == 1
    assert (await core.control.projects.get(ROOT, "app"))["desired"] == "running"
    denied = await core.control.access.audit(ROOT, user="ann", denied=True)
    assert any(e.get("action") == "service.scale" for e in denied)


async def test_the_partials_offer_only_what_can_holds_and_stop_asks_for_confirmation(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    ui = Browser(core)
    env = ui.board.templates.env
    service = await core.control.services.get(ROOT, "app", "web")
    project = await core.control.projects.get(ROOT, "app")

    class Req:  # what the partials read of the request
        query_params: dict = {}
        url = type("U", (), {"path": "/ui/p/app", "query": ""})()

    everything = frozenset({"service.scale", "service.start", "service.stop", "service.reprovision",
                            "service.revert", "project.start", "project.stop", "project.revert",
                            "project.update", "project.delete", "meta.set", "queue.stop", "service.run"})
    html = env.get_template("actions/service.html").render(service=service, can=everything, csrf="t", request=Req)
    for id_ in ('id="scale-form"', 'id="scale-count"', 'name="count"', 'id="scale-submit"', 'id="action-stop"',
                'id="action-start"', 'id="action-reprovision"'):
        assert id_ in html
    stop = re.search(r'<form id="action-stop"[^>]*>', html, re.S)
    assert stop and "hx-confirm=" in stop.group(0)
    assert 'id="action-run-now"' not in html  # a continuous service does not run
    assert env.get_template("actions/service.html").render(
        service=service, can=frozenset({"service.read"}), csrf="t", request=Req).strip().count("<form") == 0
    html = env.get_template("actions/project.html").render(project=project, can=everything, csrf="t", request=Req)
    stop = re.search(r'<form id="action-stop"[^>]*>', html, re.S)
    delete = re.search(r'<form id="action-delete"[^>]*>', html, re.S)
    assert stop and "hx-confirm=" in stop.group(0) and delete and "data-confirm=" in delete.group(0)
    assert 'id="action-meta-set"' in html and 'id="action-revert"' not in html  # one version: nothing to revert to
    html = env.get_template("actions/project.html").render(project=project, can=frozenset(), csrf="t", request=Req)
    assert "<form" not in html
    task = {"id": "abcdef0123456789", "state": "active", "kind": "scale", "target": "default.app.web",
            "project_name": "app"}
    html = env.get_template("actions/task.html").render(task=task, can=everything, csrf="t", request=Req)
    assert 'id="action-queue-stop-abcdef0123456789"' in html and "hx-confirm=" in html


async def test_start_stop_meta_set_revert_and_reprovision(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    ui = Browser(core)
    r = await ui.post("/ui/p/app/s/web/stop", {})  # without JavaScript: a page asks first, nothing stops yet
    assert r.status == 200 and 'id="action-confirm"' in page(r) and "Stop service web" in page(r)
    assert 'name="confirmed" value="1"' in page(r) and 'action="/ui/p/app/s/web/stop"' in page(r)
    assert (await core.control.services.get(ROOT, "app", "web"))["desired"] == "running"
    r = await ui.post("/ui/p/app/s/web/stop", {"confirmed": "1"})  # its button
    assert r.status == 303
    assert (await core.control.services.get(ROOT, "app", "web"))["desired"] == "stopped"
    r = await ui.post("/ui/p/app/s/web/start", {}, htmx=True)
    assert r.status == 200 and "Starting web" in page(r)
    r = await ui.post("/ui/p/app/meta", {"key": "colour", "value": "blue"})
    assert r.status == 303 and header(r, "location") == "/ui/p/app"
    assert [(m["key"], m["value"]) for m in await core.control.meta.list(ROOT, "app")] == [("colour", "blue")]
    r = await ui.post("/ui/p/app/meta", {"key": "bad key!", "value": "x"}, htmx=True)
    assert r.status == 400 and 'role="alert"' in page(r)
    await core.settle(await core.control.projects.update(ROOT, "app", MANIFEST.replace("1000", "2000")))
    r = await ui.post("/ui/p/app/s/web/reprovision", {"rolling": "1", "canary": ""})
    assert r.status == 303
    r = await ui.post("/ui/p/app/revert", {"version": "1", "rolling": "1"})
    assert r.status == 303
    assert (await core.control.projects.get(ROOT, "app"))["version"]["seq"] == 3
    r = await ui.post("/ui/p/app/revert", {"version": ""}, htmx=True)
    assert r.status == 400 and "version" in page(r)
    r = await ui.post("/ui/p/app/s/web/scale", {"count": "three"}, htmx=True)
    assert r.status == 400
    r = await ui.post("/ui/p/app/s/web/run", {}, htmx=True)  # a continuous service: refused, said
    assert r.status == 400 and "continuous" in page(r)
    r = await ui.post("/ui/p/app/stop", {}, htmx=True)
    assert r.status == 200
    assert (await core.control.projects.get(ROOT, "app"))["desired"] == "stopped"


async def test_back_goes_only_to_a_dashboard_page(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    ui = Browser(core)
    for back, where in (("/ui/feed?type=x", "/ui/feed?type=x"), ("https://evil.example/", "/ui/p/app"),
                        ("//evil.example/ui/", "/ui/p/app"), ("/ui//evil", "/ui/p/app")):
        r = await ui.post("/ui/p/app/meta", {"key": "k", "value": "v", "back": back})
        assert header(r, "location") == where


async def test_a_manifest_with_errors_shows_each_at_its_line_and_column_and_adds_nothing(core: Core):
    ui = Browser(core)
    r = await ui.get("/ui/new")
    assert r.status == 200
    for part in ('id="manifest-form"', 'id="project-name"', 'name="name"', 'id="manifest"', 'name="manifest"',
                 'type="file"', 'name="file"', 'id="manifest-submit"', 'enctype="multipart/form-data"'):
        assert part in page(r)
    bad = "services:\n  web:\n    image: busybox\n    scale: lots\n    restart: sometimes\n"
    r = await ui.post("/ui/new", {"name": "broken", "manifest": bad})
    html = page(r)
    assert r.status == 422
    errors = re.search(r'<ul id="manifest-errors"[^>]*>(.*?)</ul>', html, re.S)
    assert errors
    items = re.findall(r'<li data-line="(\d+)" data-column="(\d+)">(.*?)</li>', errors.group(1), re.S)
    assert {int(line) for line, _, _ in items} == {4, 5}
    for line, column, text in items:
        assert re.sub(r"<[^>]+>", "", text).startswith(f"line {line}, column {column}: ")
    assert "scale: lots" in html and ">\nservices:\n  web:" in html  # the user's text is kept in the textarea
    assert re.search(r'<li id="line-4" value="4" class="bad', html) and 'id="line-3" value="3" class="">' in html
    assert re.search(r'<code class="caret" aria-hidden="true"> {11}\^</code>', html)  # under column 12
    assert [p["name"] for p in await core.control.projects.list(ROOT)] == []
    # a YAML syntax error too, with its position
    r = await ui.post("/ui/new", {"name": "broken", "manifest": "services:\n  web: [\n"})
    assert r.status == 422 and re.search(r'<li data-line="\d+" data-column="\d+">', page(r))
    # a name the control layer refuses: said, the text kept
    r = await ui.post("/ui/new", {"name": "Bad Name", "manifest": MANIFEST})
    assert r.status == 400 and "project name" in page(r) and "sleep 1000" in page(r)


async def test_a_pasted_manifest_adds_the_project_and_an_uploaded_one_updates_it(core: Core):
    ui = Browser(core)
    r = await ui.post("/ui/new", {"name": "app", "manifest": MANIFEST.replace("\n", "\r\n")})
    assert r.status == 303 and header(r, "location") == "/ui/p/app"
    assert (await core.control.projects.get(ROOT, "app"))["version"]["seq"] == 1
    r = await ui.get("/ui/p/app/edit")
    assert r.status == 200 and "sleep 1000" in page(r) and 'id="manifest-form"' in page(r)
    boundary = "----mariposa-test"
    new = MANIFEST.replace("1000", "3000")

    def part(name: str, value: str, filename: str | None = None) -> str:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: application/yaml\r\n" if filename else ""
        return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n{value}\r\n"

    body = (part("csrf", ui.session.csrf) + part("name", "app") + part("manifest", "")
            + part("file", new, "app.yaml") + f"--{boundary}--\r\n").encode()
    r = await ui.post("/ui/p/app/edit", body=body, content_type=f"multipart/form-data; boundary={boundary}".encode(),
                      csrf=None)
    assert r.status == 303, page(r)[:2000]
    got = await core.control.projects.get(ROOT, "app")
    assert got["version"]["seq"] == 2 and "sleep 3000" in got["version"]["manifest"]
    assert got["version"]["filename"] == "app.yaml"
    # an uploaded file with an error: shown at its line, the file's text in the textarea
    body = (part("csrf", ui.session.csrf) + part("name", "second") + part("manifest", "")
            + part("file", "services:\n  web:\n    image: busybox\n    scale: -1\n", "bad.yaml")
            + f"--{boundary}--\r\n").encode()
    r = await ui.post("/ui/new", body=body, content_type=f"multipart/form-data; boundary={boundary}".encode(),
                      csrf=None)
    assert r.status == 422 and '<li data-line="4"' in page(r) and "scale: -1" in page(r)
    # a multipart POST without the CSRF token: refused before anything
    body = (part("name", "third") + part("manifest", MANIFEST) + f"--{boundary}--\r\n").encode()
    r = await ui.post("/ui/new", body=body, content_type=f"multipart/form-data; boundary={boundary}".encode(),
                      csrf=None)
    assert r.status == 403
    assert sorted(p["name"] for p in await core.control.projects.list(ROOT)) == ["app"]


async def test_required_meta_that_is_missing_is_asked_for_then_set_with_the_project(core: Core):
    ui = Browser(core)
    r = await ui.post("/ui/new", {"name": "microsite", "manifest": NEEDS_META})
    html = page(r)
    assert r.status == 422
    assert 'id="required-meta"' in html
    assert re.search(r'<input id="meta-title" name="meta.title"', html)
    assert re.search(r'<input id="meta-owner" name="meta.owner"', html)
    assert 'id="manifest-errors"' not in html  # nothing else is wrong
    assert "{{ .meta.title }}" in html.replace("&#34;", '"').replace("&quot;", '"') or ".meta.title" in html
    assert [p["name"] for p in await core.control.projects.list(ROOT)] == []
    # one given, one not: asked again for the other, the first kept in its input
    r = await ui.post("/ui/new", {"name": "microsite", "manifest": NEEDS_META, "meta.title": "Jupiter"})
    assert r.status == 422 and 'name="meta.owner"' in page(r) and 'name="meta.title"' not in page(r)
    r = await ui.post("/ui/new", {"name": "microsite", "manifest": NEEDS_META, "meta.title": "Jupiter",
                                  "meta.owner": "events team"})
    assert r.status == 303 and header(r, "location") == "/ui/p/microsite"
    meta = {m["key"]: m["value"] for m in await core.control.meta.list(ROOT, "microsite")}
    assert meta == {"title": "Jupiter", "owner": "events team"}
    # an update that uses a new key: asked for, then set with meta set before the update
    newer = NEEDS_META + '      EVENT: "{{ .meta.event }}"\n'
    r = await ui.post("/ui/p/microsite/edit", {"name": "microsite", "manifest": newer})
    assert r.status == 422 and 'name="meta.event"' in page(r) and 'name="meta.title"' not in page(r)
    assert (await core.control.projects.get(ROOT, "microsite"))["version"]["seq"] == 1
    r = await ui.post("/ui/p/microsite/edit", {"name": "microsite", "manifest": newer, "meta.event": "launch"})
    assert r.status == 303
    assert (await core.control.projects.get(ROOT, "microsite"))["version"]["seq"] == 2
    assert {m["key"] for m in await core.control.meta.list(ROOT, "microsite")} == {"title", "owner", "event"}
    audit = await core.control.access.audit(ROOT, user="root")
    assert any(e.get("action") == "meta.set" for e in audit)


@pytest.mark.parametrize("path", ["/ui/new", "/ui/p/app/s/web/scale", "/ui/p/app/meta", "/ui/tasks/abc/stop"])
async def test_not_signed_in_is_sent_to_sign_in(core: Core, path: str):
    board = build(core.control, core.ctx.sessions, None)
    assert board.app is not None
    req = Request("POST", path, {}, b"count=1", {}, ROOT, headers=((b"content-type", FORM),))
    r = await call(board.app, req, "127.0.0.1")
    assert r.status == 303 and header(r, "location") == "/ui/signin"


async def test_queue_stop_ends_the_task_as_the_signed_in_user(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    core.driver.latency = 5.0  # every instance operation takes 5 s of virtual time
    [task] = (await core.control.services.scale(ROOT, "app", "web", "6"))["tasks"]
    ui = Browser(core)
    r = await ui.post(f"/ui/tasks/{task['id']}/stop", {"project": "app", "back": "/ui/p/app"})
    assert r.status == 200 and 'id="action-confirm"' in page(r)  # asked first, without JavaScript
    assert 'name="back" value="/ui/p/app"' in page(r) and 'href="/ui/p/app"' in page(r)
    r = await ui.post(f"/ui/tasks/{task['id']}/stop", {"project": "app", "back": "/ui/p/app", "confirmed": "1"})
    assert r.status == 303 and header(r, "location") == "/ui/p/app"
    stopped = await core.control.queue.get(ROOT, task["id"])
    assert stopped["state"] == "terminated" and "root" in stopped["message"]
    [task] = (await core.control.services.scale(ROOT, "app", "web", "0"))["tasks"]
    await core.control.access.user_add(ROOT, "ann", [1001])
    await core.control.access.grant(ROOT, "ann", "viewer", org="default")
    r = await Browser(core, "ann").post(f"/ui/tasks/{task['id']}/stop", {"project": "app"}, htmx=True)
    assert r.status == 403 and 'role="alert"' in page(r)
    assert (await core.control.queue.get(ROOT, task["id"]))["state"] in ("queued", "active")


async def test_run_now_asks_for_a_run_of_a_scheduled_service(core: Core):
    scheduled = ("services:\n  job:\n    image: busybox\n    command: echo hi\n    service_type: scheduled\n"
                 "    schedule: '0 3 * * *'\n")
    await core.settle(await core.control.projects.add(ROOT, "cron", scheduled))
    ui = Browser(core)
    service = await core.control.services.get(ROOT, "cron", "job")
    html = ui.board.templates.env.get_template("actions/service.html").render(
        service=service, can=frozenset({"service.run"}), csrf="t",
        request=type("R", (), {"query_params": {}})())
    assert 'id="action-run-now"' in html and 'action="/ui/p/cron/s/job/run"' in html
    r = await ui.post("/ui/p/cron/s/job/run", {}, htmx=True)
    assert r.status == 200 and "Run" in page(r), page(r)
    runs = await core.control.runs.list(ROOT, "cron", "job")
    assert len(runs) == 1


async def test_an_update_made_meanwhile_is_not_overwritten_unknowingly(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "app", MANIFEST))
    ui = Browser(core)
    r = await ui.get("/ui/p/app/edit")
    loaded = re.search(r'name="if_version" value="([0-9a-f]+)"', page(r))
    assert loaded
    await core.control.projects.update(ROOT, "app", MANIFEST.replace("1000", "2000"))  # someone else, meanwhile
    mine = MANIFEST.replace("1000", "3000")
    r = await ui.post("/ui/p/app/edit", {"name": "app", "manifest": mine, "if_version": loaded.group(1)})
    assert r.status == 409 and "sleep 3000" in page(r) and "submit it again" in page(r)
    assert (await core.control.projects.get(ROOT, "app"))["version"]["seq"] == 2
    now = re.search(r'name="if_version" value="([0-9a-f]+)"', page(r))
    assert now and now.group(1) != loaded.group(1)
    r = await ui.post("/ui/p/app/edit", {"name": "app", "manifest": mine, "if_version": now.group(1)})
    assert r.status == 303
    got = (await core.control.projects.get(ROOT, "app"))["version"]
    assert got["seq"] == 3 and "sleep 3000" in got["manifest"]
