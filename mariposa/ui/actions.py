"""The dashboard's actions: each form posts to a route here that makes the same control-layer
call the CLI makes, as the signed-in user (audited with that user), then shows the result.

Every form works without JavaScript: a plain POST, then a 303 back to the page it came from.
With htmx (``HX-Request``) the answer is a small fragment instead (``actions/result.html``),
swapped into the form's ``.action-result``; a refusal is that fragment with ``role="alert"``
and the control layer's status (403 for a refusal), which app.js lets htmx swap in. Nothing
here decides who may do what: a page offers a control when ``can`` holds its action
(ui/allowed.py), and the control layer asks again, and audits, when it is pressed, so a forged
POST is refused there all the same. Stop, delete and queue stop ask first: the browser's own
dialog (``hx-confirm``, or ``data-confirm`` through app.js), or without JavaScript a page with
the question (``actions/confirm.html``) whose button posts again with ``confirmed=1``.

Adding and updating a project (``/ui/new``, ``/ui/p/{project}/edit``) take the manifest pasted
or uploaded; an invalid one comes back with every problem at its line and column, the text as
the user sent it, and its lines numbered with the bad ones marked. A manifest whose templates
use meta keys the project lacks (``{{ .meta.KEY }}``: the spec's "required meta", the
microsite story) is asked for them, one input each: set with the new project
(``project add --meta``), or with ``meta set`` before an update.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mariposa.control.caller import Caller
from mariposa.errors import BadRequest, Conflict, Forbidden, InvalidManifest, MariposaError
from mariposa.manifest.limits import MAX_BYTES

if TYPE_CHECKING:
    from mariposa.ui.app import Dashboard
    from mariposa.ui.sessions import Session

# How the manifest parser names a meta key a template uses that the project has not set
# (manifest/shapes.py: "undefined variable .meta.KEY: the project has no meta key 'KEY' ...")
MISSING_META = re.compile(r"the project has no meta key '([A-Za-z0-9_-]{1,128})'")
WHOLE = re.compile(r"[0-9]{1,9}")
RELATIVE = re.compile(r"[+-][0-9]{1,9}")
META_INPUT = "meta."  # the inputs of the required meta: meta.KEY


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def org_query(request: Request) -> str:
    """``?org=O`` of the request, kept on the way back (the caller's organisation comes from it)."""
    org = request.query_params.get("org")
    return f"?org={quote(org, safe='')}" if org else ""


def local_path(value: object, default: str) -> str:
    """A page of the dashboard to go back to: only a path under /ui/ of this site."""
    if isinstance(value, str) and value.startswith("/ui/") and "//" not in value and "\\" not in value \
            and not any(c in value for c in "\r\n\t "):
        return value
    return default


def text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def whole(form: FormData, key: str, what: str) -> int | None:
    """An optional whole number of at least 1 (rolling, canary); empty is None."""
    value = text(form, key)
    if not value:
        return None
    if not WHOLE.fullmatch(value) or int(value) < 1:
        raise BadRequest(f"{what} must be a whole number of at least 1, not '{value[:20]}'")
    return int(value)


def scale_amount(form: FormData) -> int | str:
    """A number, or +N / -N: what ``mariposa service scale`` takes."""
    value = text(form, "count")
    if WHOLE.fullmatch(value):
        return int(value)
    if RELATIVE.fullmatch(value):
        return value
    raise BadRequest(f"the scale is a whole number (or +N / -N), not '{value[:20]}'")


def tasks_said(result: object) -> str:
    tasks = result.get("tasks") if isinstance(result, dict) else None
    if not tasks:
        return ""
    ids = ", ".join(str(t.get("id", ""))[:8] for t in tasks)
    return f" (task{'s' if len(tasks) > 1 else ''} {ids})"


def routes(board: Dashboard) -> list[Route]:
    def fragment(request: Request, session: Session | None, ok: bool, message: str, status: int = 200) -> Response:
        return board.render(request, "actions/result.html", session, status=status, ok=ok, message=message)

    c = board.control

    async def offered(caller: Caller, action: str, project: str | None) -> bool:
        """Whether the page would offer ``action`` (ui/allowed.py): only then is a confirmation
        asked; a forged POST goes on to the control layer, which refuses it and audits that."""
        from mariposa.store import goal as goal_store
        from mariposa.ui.allowed import allowed

        if not project:
            return False
        try:
            row = await c.ctx.store.call(goal_store.get_project, project)
        except MariposaError:
            return False
        return action in allowed(c, caller, row)

    def route(path: str, action: str, call: Callable[[Request, Caller, FormData], Awaitable[Any]],
              done: Callable[[Request, FormData, Any], str], back: Callable[[Request], str], *,
              confirm: Callable[[Request], str] | None = None,
              redirect: Callable[[Request], str] | None = None) -> Route:
        """A POST route: ``call`` as the signed-in user, then back to the page (``back``, or the
        form's ``back`` when it is a dashboard path), or for htmx a fragment saying ``done``.
        ``confirm``: the question a destructive action asks first. The browser asks it
        (``hx-confirm``, or app.js for ``data-confirm``, which then sends ``confirmed=1``);
        without JavaScript this answers a page asking it, whose button posts again, confirmed.
        ``redirect``: where to go after it instead (a project deleted has no page to go back to)."""

        async def handler(request: Request) -> Response:
            session, caller = await board.signed_in(request)
            form = await request.form()
            if confirm is not None and not is_htmx(request) and form.get("confirmed") != "1" and \
                    await offered(caller, action, request.path_params.get("project") or text(form, "project")):
                fields = [(k, v) for k, v in form.multi_items()
                          if k not in ("csrf", "confirmed") and isinstance(v, str)]
                return board.render(request, "actions/confirm.html", session, question=confirm(request),
                                    target=request.url.path + org_query(request), fields=fields,
                                    back=local_path(form.get("back"), back(request)))
            try:
                result = await call(request, caller, form)
            except MariposaError as exc:
                if is_htmx(request):
                    return fragment(request, session, False, exc.message, status=exc.status)
                raise  # the error page, with the control layer's status
            if redirect is not None:
                target = redirect(request)
                if is_htmx(request):
                    return Response(status_code=204, headers={"HX-Redirect": target})
                return RedirectResponse(target, status_code=303)
            if is_htmx(request):
                return fragment(request, session, True, done(request, form, result))
            return RedirectResponse(local_path(form.get("back"), back(request)), status_code=303)

        return Route(path, handler, methods=["POST"])

    def p(request: Request) -> str:
        return str(request.path_params["project"])

    def s(request: Request) -> str:
        return str(request.path_params["service"])

    def project_page(request: Request) -> str:
        return f"/ui/p/{p(request)}{org_query(request)}"

    def service_page(request: Request) -> str:
        return f"/ui/p/{p(request)}/s/{s(request)}{org_query(request)}"

    def rollout(form: FormData) -> dict:
        return {"rolling": whole(form, "rolling", "rolling"), "count": whole(form, "canary", "the canary count")}

    def service_action(name: str, action: str, call: Callable[[Request, Caller, FormData], Awaitable[Any]],
                       done: Callable[[Request, FormData, Any], str],
                       confirm: Callable[[Request], str] | None = None) -> Route:
        return route(f"/ui/p/{{project}}/s/{{service}}/{name}", action, call, done, service_page, confirm=confirm)

    def project_action(name: str, action: str, call: Callable[[Request, Caller, FormData], Awaitable[Any]],
                       done: Callable[[Request, FormData, Any], str], confirm: Callable[[Request], str] | None = None,
                       redirect: Callable[[Request], str] | None = None) -> Route:
        return route(f"/ui/p/{{project}}/{name}", action, call, done, project_page, confirm=confirm,
                     redirect=redirect)

    def revert_done(q: Request, form: FormData, r: Any) -> str:
        if isinstance(r, dict) and not r.get("changed"):
            return "Already at that version: nothing changed"
        seq = r.get("version", {}).get("seq") if isinstance(r, dict) else None
        return f"Reverted: now version {seq}{tasks_said(r)}"

    def version_of(form: FormData) -> str:
        version = text(form, "version")
        if not version:
            raise BadRequest("choose the version to revert to")
        return version

    async def meta_set(request: Request, caller: Caller, form: FormData) -> Any:
        key = text(form, "key")
        if not key:
            raise BadRequest("the meta key is required")
        value = form.get("value")
        return await c.meta.set(caller, p(request), key, value if isinstance(value, str) else "")

    def task_of(request: Request) -> str:
        return str(request.path_params["task"])

    routes = [
        # --- services ---------------------------------------------------------------------
        service_action("scale", "service.scale",
                       lambda q, caller, form: c.services.scale(caller, p(q), s(q), scale_amount(form)),
                       lambda q, form, r: f"Scaling {s(q)} to {text(form, 'count')}{tasks_said(r)}"),
        service_action("start", "service.start", lambda q, caller, form: c.services.start(caller, p(q), s(q)),
                       lambda q, form, r: f"Starting {s(q)}{tasks_said(r)}"),
        service_action("stop", "service.stop", lambda q, caller, form: c.services.stop(caller, p(q), s(q)),
                       lambda q, form, r: f"Stopping {s(q)}{tasks_said(r)}",
                       confirm=lambda q: f"Stop service {s(q)} of project {p(q)}? Its instances are stopped "
                                         "until it is started again."),
        service_action("reprovision", "service.reprovision", lambda q, caller, form: c.services.reprovision(
            caller, p(q), s(q), version=text(form, "version") or None, **rollout(form)),
            lambda q, form, r: f"Reprovisioning {s(q)}{tasks_said(r)}"),
        service_action("revert", "service.revert", lambda q, caller, form: c.services.revert(
            caller, p(q), s(q), version_of(form), **rollout(form)), revert_done),
        service_action("run", "service.run", lambda q, caller, form: c.runs.start(caller, p(q), s(q)),
                       lambda q, form, r: f"Run {str(r.get('id', ''))[:8]} of {s(q)} asked for"
                       if isinstance(r, dict) else "Run asked for"),
        # --- projects ---------------------------------------------------------------------
        project_action("start", "project.start", lambda q, caller, form: c.projects.start(caller, p(q)),
                       lambda q, form, r: f"Starting {p(q)}{tasks_said(r)}"),
        project_action("stop", "project.stop", lambda q, caller, form: c.projects.stop(caller, p(q)),
                       lambda q, form, r: f"Stopping {p(q)}{tasks_said(r)}",
                       confirm=lambda q: f"Stop project {p(q)}? Every service's instances are stopped until it "
                                         "is started again."),
        project_action("revert", "project.revert", lambda q, caller, form: c.projects.revert(
            caller, p(q), version_of(form), **rollout(form)), revert_done),
        project_action("delete", "project.delete", lambda q, caller, form: c.projects.delete(caller, p(q)),
                       lambda q, form, r: f"Deleting {p(q)}{tasks_said(r)}",
                       confirm=lambda q: f"Delete project {p(q)}? Its instances are removed (named volumes "
                                         "are kept).",
                       redirect=lambda q: f"/ui/{org_query(q)}"),
        project_action("meta", "meta.set", meta_set,
                       lambda q, form, r: f"Meta {text(form, 'key')} set{tasks_said(r)}"),
        # --- the queue --------------------------------------------------------------------
        route("/ui/tasks/{task}/stop", "queue.stop",
              lambda q, caller, form: c.queue.stop(caller, task_of(q), text(form, "project") or None),
              lambda q, form, r: f"Task {task_of(q)[:8]} stopped", lambda q: f"/ui/feed{org_query(q)}",
              confirm=lambda q: f"Stop task {task_of(q)[:8]} now? What it was doing is frozen where it is."),
    ]

    # --- adding and updating a project ----------------------------------------------------
    async def new_form(request: Request) -> Response:
        session, _ = await board.signed_in(request)
        return manifest_page(request, session, None)

    async def new_post(request: Request) -> Response:
        session, caller = await board.signed_in(request)
        form = await request.form()
        name = text(form, "name")
        manifest, filename, problem = await manifest_of(form)
        given = meta_given(form)
        if problem is None:
            try:
                await c.projects.add(caller, name, manifest, filename,
                                     meta=json.dumps(given) if given else None)
            except MariposaError as exc:
                return failed(request, session, None, exc, name, manifest, given)
            return RedirectResponse(f"/ui/p/{name}{org_query(request)}", status_code=303)
        return manifest_page(request, session, None, name=name, manifest=manifest, problem=problem, status=400,
                             meta=given)

    async def edit_form(request: Request) -> Response:
        session, caller = await board.signed_in(request)
        project = await c.projects.get(caller, p(request))
        return manifest_page(request, session, project, name=project["name"],
                             manifest=project["version"].get("manifest") or "")

    async def edit_post(request: Request) -> Response:
        session, caller = await board.signed_in(request)
        form = await request.form()
        project = await c.projects.get(caller, p(request))
        manifest, filename, problem = await manifest_of(form)
        given = meta_given(form)
        loaded = text(form, "if_version") or None  # the version the user's text was read from
        if problem is not None:
            return manifest_page(request, session, project, name=project["name"], manifest=manifest,
                                 problem=problem, status=400, meta=given, if_version=loaded)
        try:
            for key, value in given.items():  # the required meta first: the manifest uses it
                await c.meta.set(caller, project["name"], key, value)
            await c.projects.update(caller, project["name"], manifest, filename,
                                    rolling=whole(form, "rolling", "rolling"),
                                    count=whole(form, "canary", "the canary count"),
                                    if_version=loaded)
        except MariposaError as exc:
            if isinstance(exc, Conflict) and loaded:  # changed meanwhile: a second submit replaces it knowingly
                exc = Conflict(f"{exc.message}. Your text is kept below: submit it again to replace that version")
                loaded = None
            return failed(request, session, project, exc, project["name"], manifest, given, loaded)
        return RedirectResponse(f"/ui/p/{project['name']}{org_query(request)}", status_code=303)

    def failed(request: Request, session: Session, project: dict | None, exc: MariposaError, name: str,
               manifest: str, given: dict[str, str], if_version: str | None = None) -> Response:
        """The form again, as the user sent it, with what is wrong; a refusal is the error page."""
        if isinstance(exc, Forbidden):
            raise exc
        problems: list[dict] = []
        missing: list[dict] = []
        if isinstance(exc, InvalidManifest):
            for d in exc.details:
                if not isinstance(d, dict):
                    continue
                found = MISSING_META.search(str(d.get("message", "")))
                if found:
                    missing.append({**d, "key": found.group(1)})
                else:
                    problems.append(d)
        # a meta key asked for once: one input, wherever the manifest uses it
        keys: dict[str, list[int]] = {}
        for m in missing:
            keys.setdefault(m["key"], []).append(int(m.get("line") or 0))
        message = exc.message
        if isinstance(exc, InvalidManifest) and (problems or keys):
            parts = [f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the manifest, each shown at "
                     "its line"] if problems else []
            if keys:
                parts.append(f"it uses meta the project does not have yet: give {', '.join(keys)} below")
            message = "; ".join(parts) + "; nothing was changed"
            message = message[0].upper() + message[1:]
        return manifest_page(request, session, project, name=name, manifest=manifest, problem=message,
                             problems=problems, missing=keys, meta=given, status=exc.status, if_version=if_version)

    def manifest_page(request: Request, session: Session, project: dict | None, *, name: str = "",
                      manifest: str = "", problem: str | None = None, problems: list[dict] | None = None,
                      missing: dict[str, list[int]] | None = None, meta: dict[str, str] | None = None,
                      status: int = 200, if_version: str | None = None) -> Response:
        problems = problems or []
        missing = missing or {}
        bad: dict[int, list[str]] = {}
        columns: dict[int, set[int]] = {}
        for d in problems:
            bad.setdefault(int(d.get("line") or 0), []).append(problem_text(d))
            columns.setdefault(int(d.get("line") or 0), set()).add(max(1, int(d.get("column") or 1)))
        needs = _by_line(missing)
        lines = [{"number": i, "text": line, "problems": bad.get(i, []), "needs": needs.get(i, []),
                  "caret": caret(columns.get(i, set()))}
                 for i, line in enumerate(manifest.splitlines(), start=1)] if (problems or missing) else []
        action = f"/ui/p/{project['name']}/edit" if project else "/ui/new"
        return board.render(request, "manifest_form.html", session, status=status, project=project, name=name,
                            manifest=manifest, problem=problem, problems=problems, missing=missing,
                            meta=meta or {}, lines=lines, action=action + org_query(request),
                            text_of=problem_text, if_version=if_version)

    routes += [
        Route("/ui/new", new_form, methods=["GET"]),
        Route("/ui/new", new_post, methods=["POST"]),
        Route("/ui/p/{project}/edit", edit_form, methods=["GET"]),
        Route("/ui/p/{project}/edit", edit_post, methods=["POST"]),
    ]
    return routes


def _by_line(missing: dict[str, list[int]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for key, lines in missing.items():
        for line in lines:
            out.setdefault(line, []).append(key)
    return out


def problem_text(d: dict) -> str:
    """``line L, column C: field: message``: how a problem reads next to the text."""
    field = d.get("field") or ""
    where = f"line {d.get('line', 0)}, column {d.get('column', 0)}: "
    return f"{where}{field + ': ' if field else ''}{d.get('message', '')}"


def caret(columns: set[int]) -> str:
    """A line of '^' under the columns a line's problems point at ('' when none)."""
    if not columns:
        return ""
    return "".join("^" if c in columns else " " for c in range(1, min(max(columns), 16 * 1024) + 1))


def meta_given(form: FormData) -> dict[str, str]:
    """The required meta the form asked for and the user filled in (an empty input is not given)."""
    out: dict[str, str] = {}
    for key, value in form.multi_items():
        if key.startswith(META_INPUT) and isinstance(value, str) and value != "":
            out[key[len(META_INPUT):]] = value
    return out


async def manifest_of(form: FormData) -> tuple[str, str, str | None]:
    """(the manifest's text, its file name, a problem): an uploaded file when one is given, else
    the textarea's text."""
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            return "", upload.filename, f"{upload.filename} is larger than {MAX_BYTES // 1024} KiB"
        try:
            return data.decode("utf-8"), upload.filename, None
        except UnicodeDecodeError:
            return "", upload.filename, f"{upload.filename} is not UTF-8 text"
    value = form.get("manifest")
    manifest = value if isinstance(value, str) else ""
    # a browser sends a textarea's line breaks as CRLF
    return manifest.replace("\r\n", "\n"), "<manifest>", None
