"""The ``mariposa`` command: a client of the control API, plus ``mariposa daemon``.

Exit codes: 0 done; 1 refused (bad input, invalid manifest); 2 usage; 3 daemon unreachable;
4 not found; 5 conflict; 6 a waited-for task failed or was terminated; 9 a remote call's token
was refused (401); 10 a remote daemon's certificate is not the one pinned.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

from mariposa.cli import logs as log_output
from mariposa.cli.client import Client, TaskDidNotComplete, socket_path
from mariposa.cli.output import ago, fields, print_json, short, table
from mariposa.clock import wall_clock
from mariposa.errors import MariposaError

CONTEXT = {"help_option_names": ["-h", "--help"]}
NUMBER_ARGS = {"ignore_unknown_options": True, **CONTEXT}  # so "scale web -2" is a number, not a flag


class AliasedGroup(click.Group):
    """Accepts the spec's synonyms (``project create|new``, ``service show``, ``svcs`` ...)."""

    aliases: dict[str, str] = {}

    def get_command(self, ctx: click.Context, name: str):
        return super().get_command(ctx, self.aliases.get(name, name))


class TopGroup(AliasedGroup):
    aliases = {"svcs": "services", "svc": "service"}


class ProjectGroup(AliasedGroup):
    aliases = {"ls": "list", "create": "add", "new": "add", "show": "get", "rollback": "revert", "set": "revert",
               "set-current": "revert"}


class ServiceGroup(AliasedGroup):
    aliases = {"ls": "list", "show": "get", "restart": "reprovision", "rollback": "revert", "set": "revert",
               "set-current": "revert", "create": "add", "new": "add", "rm": "delete"}


class State:
    def __init__(self, socket: str | None, project: str | None, host: str | None = None, token: str | None = None,
                 profile: str | None = None, org: str | None = None):
        self.socket_given = socket is not None
        self.socket = socket_path(socket)
        self.project_ref = project
        self.host, self.token, self.profile = host, token, profile
        self.org = org  # -o ORG rides on every request (a profile's org when not given)
        self._client: Client | None = None
        if profile:  # its project is the default of -j (its host and token are read with the client)
            from mariposa.cli.profiles import profile as read_profile

            self.project_ref = project or read_profile(profile).get("project")

    @property
    def remote(self) -> bool:
        return bool(self.host or self.profile)

    @property
    def client(self) -> Client:
        if self._client is None:
            remote, defaults = None, dict[str, str]()
            if self.remote:
                from mariposa.cli.profiles import resolve

                remote, defaults = resolve(self.host, self.token, self.profile)
            self._client = Client(self.socket, remote=remote, org=self.org or defaults.get("org"))
        return self._client

    def project(self) -> str:
        if not self.project_ref:
            raise click.UsageError("this command needs a project: mariposa -j PROJECT ...")
        return self.project_ref


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
wait_option = click.option("--wait", is_flag=True,
                           help="Follow the task(s) until they end; exit 6 unless all complete.")


@click.group(cls=TopGroup, context_settings=CONTEXT)
@click.option("--socket", envvar="MARIPOSA_SOCKET", help="Control socket (default /run/mariposa/mariposa.sock).")
@click.option("-j", "--project", "project", help="Project name or id for service and queue commands.")
@click.option("--host", envvar="MARIPOSA_HOST", help="A remote daemon's API, https://HOST:PORT (default: the socket).")
@click.option("--token", envvar="MARIPOSA_TOKEN", help="The API token for --host (mariposa token create).")
@click.option("-p", "--profile", envvar="MARIPOSA_PROFILE",
              help="A named profile of ~/.config/mariposa/profiles.toml (host, token, org, project).")
@click.option("-o", "--org", "org",
              help="Organisation: new projects go in it, and only its projects are named and listed.")
@click.version_option(package_name="mariposa")
@click.pass_context
def cli(ctx: click.Context, socket: str | None, project: str | None, host: str | None, token: str | None,
        profile: str | None, org: str | None) -> None:
    """Mariposa: keep the services of your projects running on this host."""
    ctx.obj = State(socket, project, host, token, profile, org)


@cli.command(context_settings=CONTEXT)
@click.option("--config", "config_path", help="Configuration file (default /etc/mariposa/mariposa.toml if it exists).")
@click.option("--state-dir", help="Where the store lives [/var/lib/mariposa].")
@click.option("--socket", "daemon_socket", help="Control socket path (default: the global --socket).")
@click.option("--socket-group", help="Group allowed to use the control socket (name or gid).")
@click.option("--socket-mode", help="Control socket mode, octal [0660].")
@click.option("--manifest-dir", help="Watched directory of NAME.yaml projects [/etc/mariposa/projects]; '' for none.")
@click.option("--secret-key-file", help="Key file that encrypts secrets at rest [/etc/mariposa/secret.key].")
@click.option("--run-dir", help="Directory on a tmpfs for instances' secret files [/run/mariposa].")
@click.option("--triggers-listen", help="HOST:PORT of the public triggers' HTTP listener [none].")
@click.option("--metrics-interval", type=float, help="Seconds between two samples of every instance's numbers [10].")
@click.option("--metrics-listen", help="HOST:PORT of a TCP listener serving GET /metrics only [none].")
@click.option("--listen", help="HOST:PORT of the remote API over HTTPS, for callers with a token [none].")
@click.option("--tls-cert", help="The remote API's certificate (PEM) [a self-signed one in the state dir].")
@click.option("--tls-key", help="The remote API's private key (PEM), with --tls-cert.")
@click.option("--delete-removed-projects/--keep-removed-projects", default=None,
              help="Whether deleting NAME.yaml deletes the project [keep].")
@click.option("--docker-host", help="Docker Engine socket (default: DOCKER_HOST or /var/run/docker.sock).")
@click.option("--cluster", type=click.Choice(["none", "swarm"]),
              help="'swarm': the engine at --docker-host must be a Swarm manager [none].")
@click.option("--resync", type=float, help="Seconds between full reconcile passes [10].")
@click.option("--rescan", type=float, help="Seconds between full rescans of the manifest directory [30].")
@click.option("--parallelism", type=int, help="Instance operations run at once per task [8].")
@click.option("--stop-instances-on-exit", is_flag=True, default=None, help="Stop every instance when the daemon exits.")
@click.option("--allow-privileged/--no-allow-privileged", default=None,
              help="Admit privileged, network_mode: host, devices and SYS_ADMIN-class cap_add in new versions [no].")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), help="[auto: json unless on a terminal]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[info]")
@pass_state
def daemon(state: State, config_path, daemon_socket, **flags) -> None:
    """Run the daemon in the foreground."""
    import trio

    from mariposa import config as configuration
    from mariposa import logs
    from mariposa.daemon import run_daemon

    if daemon_socket or state.socket_given:
        flags["socket"] = daemon_socket or state.socket
    overrides = {k: v for k, v in flags.items() if v is not None}
    config = configuration.load(config_path, overrides)
    logs.configure(config.log_format, config.log_level)
    try:
        trio.run(run_daemon, config, None, config_path, overrides)
    except KeyboardInterrupt:
        pass


# ---- helpers ----------------------------------------------------------------------------------


def _read_manifest(path: str) -> tuple[str, str, dict]:
    """(text, name for messages, env files): the env files it names are read here, beside it
    (stdin: beside the current directory), with the caller's own rights, never the daemon's."""
    if path == "-":
        text, filename, base = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        p = Path(path)
        try:
            text, filename, base = p.read_text(), str(p), p.parent
        except OSError as exc:
            raise MariposaError(f"cannot read manifest {path}: {exc.strerror}") from None
    from mariposa.manifest.env_files import read_beside

    return text, filename, read_beside(text, base)


def _manifest_body(path: str) -> dict:
    """The manifest and its env files, read here (on a remote daemon's client too: it never reads
    the client's disk). Its directory goes along only to the local daemon, for relative bind
    paths: a remote daemon's host has no such directory, so there they are refused."""
    text, filename, env_files = _read_manifest(path)
    body = {"manifest": text, "filename": filename, **({"env_files": env_files} if env_files else {})}
    state = click.get_current_context().find_object(State)
    if state is None or not state.remote:
        body["base_dir"] = str((Path.cwd() if path == "-" else Path(path).parent).resolve())
    return body


def _change(state: State, method: str, path: str, body: dict, wait: bool, as_json: bool) -> dict:
    """A change that makes a version: images it pulls show their progress with --wait."""

    def shown(p: dict) -> None:
        layer = f"{p['layer']}: " if p.get("layer") else ""
        click.echo(f"pull {p['image']}: {layer}{p['status']}" + (f" {p['detail']}" if p.get("detail") else ""))

    return state.client.change(method, path, {k: v for k, v in body.items() if v is not None},
                               shown if wait and not as_json else None)


def _task_line(task: dict) -> str:
    return f"task {short(task['id'])} {task['kind']} {task['target']}: {task['state']}"


def _report_version(project: str, result: dict, as_json: bool) -> None:
    """The answer of every change of a manifest: the version it made, or that nothing changed."""
    if as_json:
        return
    v = result["version"]
    click.echo(f"project {project} now at version {v['seq']}: {v['summary']}" if result["changed"]
               else f"project {project} unchanged (version {v['seq']})")


def _report_tasks(state: State, tasks: list[dict], wait: bool, as_json: bool = False) -> None:
    if not wait:
        if as_json:
            print_json(tasks)
        for task in tasks if not as_json else []:
            click.echo(_task_line(task))
        return
    seen: dict[str, str] = {}

    def progress(task: dict) -> None:
        prog = task.get("progress") or {}
        step = prog.get("step")
        counts = f"{prog.get('done', 0)} done, {prog.get('todo', 0)} to do: " if "todo" in prog else ""
        line = f"{_task_line(task)}" + (f" ({counts}{step})" if step and task["state"] == "active" else "")
        if seen.get(task["id"]) != line and not as_json:
            click.echo(line + (f": {task['message']}" if task["state"] != "active" and task.get("message") else ""))
            seen[task["id"]] = line

    done = state.client.wait_for([t["id"] for t in tasks], progress)
    if as_json:
        print_json(done)
    bad = [t for t in done if t["state"] != "completed"]
    if bad:
        raise TaskDidNotComplete("; ".join(f"{_task_line(t)}: {t.get('message') or ''}" for t in bad))


# ---- projects ---------------------------------------------------------------------------------


@cli.group(cls=ProjectGroup, context_settings=CONTEXT)
def project() -> None:
    """Projects: named sets of services described by one manifest."""


@project.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def project_list(state: State, as_json: bool) -> None:
    """List projects."""
    rows = state.client.get("/v1/projects")
    if as_json:
        return print_json(rows)
    table(rows, [
        ("ID", lambda r: short(r["id"])), ("NAME", lambda r: r["name"]), ("ORG", lambda r: r.get("org") or "-"),
        ("VERSION", lambda r: r["version"]), ("STATE", lambda r: r["desired"]), ("SERVICES", lambda r: r["services"]),
        ("RUNNING", lambda r: "?" if r["instances"] is None else f"{r['running']}/{r['instances']}"),
        ("SOURCE", lambda r: (r["source"] or "-") + (" (orphaned)" if r.get("source_state") == "orphaned" else "")),
        ("CREATED", lambda r: ago(r["created"])),
        *([("LAST RUN", lambda r: f"{r['last_run']['service']} {_last_run_text(r)}" if r.get("last_run") else "-"),
           ("NEXT RUN", lambda r: _when(r["next_run"]) if r.get("next_run") else "-")]
          if any(r.get("last_run") or r.get("next_run") for r in rows) else []),
    ])
    if any(r["instances"] is None for r in rows):
        click.echo("mariposa: the runtime is unavailable: instance counts are unknown ('?')", err=True)


cli.add_command(project_list, "projects")


@project.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.argument("manifest")
@click.option("--meta", "meta_file", metavar="FILE", help="The project's meta (a YAML map of KEY: VALUE), set with it.")
@wait_option
@json_option
@pass_state
def project_add(state: State, name: str, manifest: str, meta_file: str | None, wait: bool, as_json: bool) -> None:
    """Add project NAME from MANIFEST (a file, or - for stdin) and start its services."""
    body = {"name": name, **_manifest_body(manifest)}
    if meta_file is not None:
        try:
            body["meta"] = Path(meta_file).read_text()
        except OSError as exc:
            raise MariposaError(f"cannot read {meta_file}: {exc.strerror}") from None
    result = _change(state, "POST", "/v1/projects", body, wait, as_json)
    if not as_json:
        click.echo(f"project {name} added ({short(result['project']['id'])})")
    _report_tasks(state, result["tasks"], wait, as_json)


@project.command("move", context_settings=CONTEXT)
@click.argument("name")
@click.option("--to-org", "to_org", required=True, metavar="ORG", help="The organisation to move it to.")
@json_option
@pass_state
def project_move(state: State, name: str, to_org: str, as_json: bool) -> None:
    """Move project NAME to organisation ORG, with its meta and secrets (admin of both; root or a fresh token)."""
    r = state.client.post(f"/v1/projects/{name}/move", {"to_org": to_org})
    if as_json:
        return print_json(r)
    click.echo(f"project {r['project']} moved from organisation {r['from']} to {r['to']}: {r['note']}")
    for b in r["bindings_dropped"]:
        click.echo(f"  dropped: {b['text']}")



@project.command("copy", context_settings=CONTEXT)
@click.argument("src")
@click.argument("dst")
@click.option("--with-meta", is_flag=True, help="Copy SRC's meta too (else DST has none).")
@click.option("--with-secrets", is_flag=True, help="Copy SRC's secrets too (encrypted as stored; never shown).")
@wait_option
@json_option
@pass_state
def project_copy(state: State, src: str, dst: str, with_meta: bool, with_secrets: bool, wait: bool,
                 as_json: bool) -> None:
    """Make project DST with SRC's current manifest (and meta, with --with-meta; and secrets, with
    --with-secrets) and start it."""
    result = state.client.post(f"/v1/projects/{src}/copy",
                               {"name": dst, "with_meta": with_meta, "with_secrets": with_secrets})
    if not as_json:
        click.echo(f"project {dst} copied from {result['from']} ({short(result['project']['id'])})")
    _report_tasks(state, result["tasks"], wait, as_json)


@project.command("import-compose", context_settings=CONTEXT)
@click.argument("name")
@click.argument("compose_file", metavar="COMPOSE_FILE")
@click.option("--dry-run", is_flag=True, help="Print the manifest (and check it here); add nothing.")
@click.option("--out", "out", metavar="FILE", help="Also write the manifest to FILE; the project is added from it.")
@click.option("--strict", is_flag=True, help="Refuse a file with fields that are not mapped; nothing is added.")
@wait_option
@json_option
@pass_state
def project_import_compose(state: State, name: str, compose_file: str, dry_run: bool, out: str | None,
                           strict: bool, wait: bool, as_json: bool) -> None:
    """Convert a docker compose file (formats 2 and 3, or without version) into a manifest and add
    project NAME from it. The conversion report (every field: mapped, mapped with a change, or
    not mapped and why) goes to stderr; with --dry-run the manifest goes to stdout."""
    from mariposa.cli import compose

    conversion, body = compose.prepare(name, compose_file, out, strict)
    if as_json:
        result: dict = {"manifest": conversion.text, "report": [e.to_json() for e in conversion.entries]}
    else:
        click.echo(conversion.report(), err=True)
    if dry_run:
        if as_json:
            print_json(result)
        else:
            click.echo(conversion.text, nl=False)
        compose.check_here(conversion, body)
        return
    added = compose.add(state.client, conversion, body)
    if as_json:
        if wait:
            added["tasks"] = state.client.wait_for([t["id"] for t in added["tasks"]], lambda task: None)
        print_json({**result, **added})
        bad = [t for t in added["tasks"] if t["state"] != "completed"] if wait else []
        if bad:
            raise TaskDidNotComplete("; ".join(f"{_task_line(t)}: {t.get('message') or ''}" for t in bad))
        return
    click.echo(f"project {name} added ({short(added['project']['id'])}) from {body['filename']}")
    _report_tasks(state, added["tasks"], wait, as_json)


@project.command("get", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def project_get(state: State, ref: str, as_json: bool) -> None:
    """Show a project: details, services and its current manifest."""
    p = state.client.get(f"/v1/projects/{ref}")
    if as_json:
        return print_json(p)
    v = p["version"]
    orphaned = " (orphaned: the file was removed)" if p.get("source_state") == "orphaned" else ""
    rows = [("name", p["name"]), ("id", p["id"]), ("org", p.get("org") or "-"), ("state", p["desired"]),
            ("version", f"{v['seq']} ({short(v['id'])}, {ago(v['created'])})"),
            ("source", (p["source"] or "-") + orphaned),
            ("services", ", ".join(f"{s['name']} {s['running']}/{s['scale']}" for s in p["services"]))]
    if p.get("networks"):  # name=runtime name: what another project joins as external
        rows.append(("networks", ", ".join(f"{n['name']}={n['runtime_name']}" + " (external)" * n["external"]
                                           for n in p["networks"])))
    fields(rows)
    for label, f in (("file:   ", p.get("file")), ("meta file:", p.get("meta_file"))):
        if f and f["state"] in ("invalid", "refused"):
            click.echo(f"{label} NOT APPLIED ({ago(f['seen'])}): {f['error']}")
            for d in f.get("details") or []:
                click.echo(f"  {d['file']}:{d['line']}:{d['column']}: {d['field']}: {d['message']}")
    click.echo("---")
    click.echo(v["manifest"].rstrip("\n"))


@project.command("instances", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def project_instances(state: State, ref: str, as_json: bool) -> None:
    """List all instances of a project, stopped ones included."""
    _instances(state.client.get(f"/v1/projects/{ref}/instances"), as_json)


def _instances(rows: list[dict], as_json: bool) -> None:
    if as_json:
        return print_json(rows)
    table(rows, [
        ("ID", lambda r: short(r["id"])), ("NAME", lambda r: r["name"]), ("SERVICE", lambda r: r["service"]),
        ("STATE", _instance_state), ("HEALTH", _instance_health),
        ("ADDRESS", lambda r: r["address"] or "-"), ("PORTS", lambda r: ", ".join(r["ports"]) or "-"),
        ("VERSION", lambda r: short(r["version_id"], 8)), ("CREATED", lambda r: ago(r["created"])),
    ])


def _instance_state(r: dict) -> str:
    state = r["state"] + (f" ({r['exit_code']})" if r.get("exit_code") not in (None, 0) else "")
    if r.get("retired"):
        state += " retired"
    if r.get("restarts"):
        state += f", {r['restarts']} restarts"
    return state


def _instance_health(r: dict) -> str:
    if not r.get("health"):
        return "-"
    when = f" ({ago(r['health_checked'])})" if r.get("health_checked") else ""
    return (f"{r['health']}: {r['health_detail']}" if r.get("health_detail") else r["health"]) + when


def rollout_options(fn):
    fn = click.option("--canary", "--count", "count", type=click.IntRange(1),
                      help="Replace only N instances, then stop.")(fn)
    return click.option("--rolling", type=click.IntRange(1), help="New instances at a time [1].")(fn)


@project.command("update", context_settings=CONTEXT)
@click.argument("ref")
@click.argument("manifest")
@rollout_options
@click.option("--if-version", help="Refuse unless the project is at this version (id, id prefix or number).")
@wait_option
@json_option
@pass_state
def project_update(
    state: State, ref: str, manifest: str, rolling, count, if_version, wait: bool, as_json: bool
) -> None:
    """Make MANIFEST the project's new version and converge to it."""
    body = {**_manifest_body(manifest), "rolling": rolling, "count": count, "if_version": if_version}
    result = _change(state, "PUT", f"/v1/projects/{ref}", body, wait, as_json)
    _report_version(ref, result, as_json)
    _report_tasks(state, result["tasks"], wait, as_json)


def _project_action(action: str, doc: str):
    @project.command(action, context_settings=CONTEXT, help=doc)
    @click.argument("ref")
    @wait_option
    @json_option
    @pass_state
    def command(state: State, ref: str, wait: bool, as_json: bool) -> None:
        result = state.client.post(f"/v1/projects/{ref}/{action}")
        _report_tasks(state, result["tasks"], wait, as_json)

    return command


@project.command("delete", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--purge-volumes", is_flag=True, help="Remove the project's named volumes and their data too.")
@wait_option
@json_option
@pass_state
def project_delete(state: State, ref: str, purge_volumes: bool, wait: bool, as_json: bool) -> None:
    """Delete the project: every instance, its network and all its versions. Its named volumes are
    kept (a project added again under the same name finds them) unless --purge-volumes."""
    params = {"purge_volumes": "1"} if purge_volumes else None
    result = state.client.request("DELETE", f"/v1/projects/{ref}", params=params)
    if result.get("volumes_kept") and not as_json:
        click.echo(f"keeping volumes: {', '.join(result['volumes_kept'])} (--purge-volumes removes them)", err=True)
    _report_tasks(state, result["tasks"], wait, as_json)


@project.command("versions", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def project_versions(state: State, ref: str, as_json: bool) -> None:
    """The project's versions, newest first: what changed, when, by whom."""
    rows = state.client.get(f"/v1/projects/{ref}/versions")
    if as_json:
        return print_json(rows)
    table(rows, [("VERSION", lambda r: r["seq"]), ("ID", lambda r: short(r["id"])),
                 ("CREATED", lambda r: ago(r["created"])), ("HASH", lambda r: short(r["hash"], 12)),
                 ("BY", lambda r: r["author"] or "-"),
                 ("WHAT CHANGED", lambda r: r["summary"] or "")])


@project.command("version", context_settings=CONTEXT)
@click.argument("version")
@json_option
@pass_state
def project_version(state: State, version: str, as_json: bool) -> None:
    """A version's manifest, verbatim (VERSION: id or prefix; a number with -j PROJECT)."""
    path = f"/v1/projects/{state.project_ref}/versions/{version}" if state.project_ref else f"/v1/versions/{version}"
    v = state.client.get(path)
    if as_json:
        return print_json(v)
    sys.stdout.write(v["manifest"] if v["manifest"].endswith("\n") else v["manifest"] + "\n")


@project.command("revert", context_settings=CONTEXT)
@click.argument("ref")
@click.argument("version")
@rollout_options
@wait_option
@json_option
@pass_state
def project_revert(state: State, ref: str, version: str, rolling, count, wait: bool, as_json: bool) -> None:
    """Put VERSION back: a new version with its manifest and pinned images, rolled out."""
    body = {"version": version, "rolling": rolling, "count": count}
    result = state.client.post(f"/v1/projects/{ref}/revert", {k: v for k, v in body.items() if v is not None})
    if not as_json:
        click.echo(f"project {ref} now at version {result['version']['seq']}: {result['version']['summary']}")
    _report_tasks(state, result["tasks"], wait, as_json)


@project.command("diff", context_settings=CONTEXT)
@click.argument("ref")
@click.argument("manifest")
@click.option("--rolling", type=click.IntRange(1))
@json_option
@pass_state
def project_diff(state: State, ref: str, manifest: str, rolling, as_json: bool) -> None:
    """What updating to MANIFEST would do, per service; changes nothing."""
    body = {**_manifest_body(manifest), **({"rolling": rolling} if rolling else {})}
    d = state.client.post(f"/v1/projects/{ref}/diff", body)
    if as_json:
        return print_json(d)
    click.echo(f"project {d['project']} at version {d['from_version']}: "
               + ("a new version would be made" if d["new_version"] else "no new version (same text and images)"))
    table(d["services"], [("SERVICE", lambda r: r["service"]), ("CHANGE", lambda r: r["change"]),
                          ("INSTANCES",
                           lambda r: f"{r['instances']} -> {r['scale'] if r['change'] != 'removed' else 0}"),
                          ("CREATE", lambda r: r["create"]), ("REPLACE", lambda r: r["replace"]),
                          ("REMOVE", lambda r: r["remove"]), ("START", lambda r: r["start"])])


_project_action("start", "Start every service of the project.")
# What `stop` does with the instances it stops (plan.py: Remove, failed when the exit was bad).
STOP_KEEPS = ("unless stop.preservestopped keeps them, stopped and retired, for inspection ('always': all of them; "
              "the default 'on-failure': those that had already failed)")
_project_action("stop", f"Stop every instance of the project and remove them, {STOP_KEEPS}.")


# ---- exports --------------------------------------------------------------------------------


@cli.command("export", context_settings=CONTEXT)
@click.option("--to", "to", required=True, type=click.Choice(["compose", "swarm-stack", "nomad", "kubernetes"]),
              help="What to write: a compose file, a stack file for docker stack deploy, Nomad jobs (JSON), "
                   "or Kubernetes objects (YAML).")
@click.option("--out", "out", metavar="DIR", help="Write the files and report.txt into DIR (made if missing); "
                                                  "without it the files go to stdout and the report to stderr.")
@click.option("--strict", is_flag=True, help="Refuse the export if any field is not representable; nothing is written.")
@click.option("--with-secret-values", is_flag=True,
              help="Put the secrets' values in the files (needs secret:reveal); else they are references.")
@json_option
@pass_state
def export(state: State, to: str, out: str | None, strict: bool, with_secret_values: bool, as_json: bool) -> None:
    """Export the project (-j) to another engine, with a conversion report: every field of the
    manifest mapped, mapped with a change, or not representable and why."""
    from mariposa.cli import exporting

    result = state.client.post(f"/v1/projects/{state.project()}/export",
                               {"to": to, "strict": strict, "with_secret_values": with_secret_values})
    if as_json:
        if out is not None:
            result["written"] = exporting.write(result, out)
        return print_json(result)
    if out is None:
        exporting.write(result, None)
        click.echo(result["report"], err=True)
        return
    written = exporting.write(result, out)
    click.echo(result["report"])
    click.echo(f"wrote {', '.join(written)}")


# ---- metrics --------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("-j", "--project", "project", help="Only this project's instances (as the global -j).")
@click.option("--service", help="Only this service's instances (with -j).")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@json_option
@pass_state
def top(state: State, project: str | None, service: str | None, once: bool, as_json: bool) -> None:
    """A live table of every instance: CPU (percent of one core), memory, network and block
    rates, health, restarts and age, refreshed every 2 s (Ctrl-C ends it). --json prints the
    rows with their latest samples once."""
    from mariposa.cli import top as shown

    project = project or state.project_ref
    if service and not project:
        raise click.UsageError("--service needs a project: mariposa top -j PROJECT --service NAME")

    def rows() -> list[dict]:
        return state.client.get("/v1/top", project=project, service=service)

    if as_json:
        return print_json(rows())
    from mariposa.cli.output import console

    if once:
        return console().print(shown.top_table(rows()))
    from rich.live import Live

    try:
        with Live(shown.top_table(rows()), console=console(), auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(2)
                live.update(shown.top_table(rows()), refresh=True)
    except KeyboardInterrupt:
        pass


# ---- services ---------------------------------------------------------------------------------


@cli.group(cls=ServiceGroup, context_settings=CONTEXT)
def service() -> None:
    """Services of the project given with -j."""


@service.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def service_list(state: State, as_json: bool) -> None:
    """List the project's services."""
    rows = state.client.get(f"/v1/projects/{state.project()}/services")
    if as_json:
        return print_json(rows)
    table(rows, [
        ("ID", lambda r: short(r["id"])), ("NAME", lambda r: r["name"]), ("IMAGE", lambda r: r["image"]),
        ("STATE", lambda r: r["desired"] + (" (frozen)" if r["frozen"] else "")
         + (" (waiting for dependencies)" if r.get("waiting") else "")),
        ("RUNNING", lambda r: f"{r['running']}/{r['scale']}"), ("INSTANCES", lambda r: r["instances"]),
        ("TASK", lambda r: f"{r['task']['kind']} {r['task']['state']}" if r["task"] else "-"),
        *([("LAST RUN", _last_run_text), ("NEXT RUN", lambda r: _when(r["next_run"]) if r.get("next_run") else "-")]
          if any(r.get("service_type") not in (None, "continuous") for r in rows) else []),
    ])


def _last_run_text(r: dict) -> str:
    run = r.get("last_run")
    if not run:
        return "-"
    return f"{run['state']} ({_when(run['started'] or run['scheduled'])})"


cli.add_command(service_list, "services")


@service.command("get", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def service_get(state: State, ref: str, as_json: bool) -> None:
    """Show one service: goal, actual state and its spec."""
    s = state.client.get(f"/v1/projects/{state.project()}/services/{ref}")
    if as_json:
        return print_json(s)
    spec = s["spec"] or {}
    pairs = [("name", s["name"]), ("id", s["id"]), ("project", s["project"]), ("state", s["desired"]),
             ("scale", s["scale"]), ("running", s["running"]), ("instances", s["instances"]),
             ("image", s["image"]), ("version", s["version"]), ("spec hash", s["spec_hash"])]
    if s["frozen"]:
        thaw = f"mariposa -j {s['project']} service thaw {s['name']}"
        pairs.append(("frozen", f"yes: {s['frozen_reason']} (thaw: {thaw})"))
    if s["task"]:
        step = (s["task"].get("progress") or {}).get("step")
        pairs.append(("task",
                      _task_line(s["task"]) + (f" ({step})" if step and s["task"]["state"] == "active" else "")))
    if s.get("waiting"):
        pairs.append(("depends_on", s["waiting"]))
    if s.get("replace_after"):
        pairs.append(("back-off", f"{s['replacements']} failed instances replaced lately; next replacement not before "
                                  f"{max(0, s['replace_after'] - wall_clock()):.0f}s from now"))
    if s.get("retired"):
        pairs.append(("retired", f"{s['retired']} stopped instances kept (mariposa instance rm ID)"))
    if spec.get("restart"):
        pairs.append(("restart", spec["restart"]))
    if spec.get("healthchecks"):
        pairs.append(("checks", "; ".join(_check_label(c) for c in spec["healthchecks"])))
    if spec.get("command"):
        pairs.append(("command", shlex.join(spec["command"])))
    if spec.get("ports"):
        pairs.append(("ports", ", ".join(str(p["container"]) + (f"<-{p['host']}" if p["host"] else "")
                                         for p in spec["ports"])))
    if spec.get("environment"):
        pairs.append(("environment", ", ".join(k for k, _ in spec["environment"]) + " (values hidden)"))
    fields(pairs)


SECTION = ("SECTION is a file (or - for stdin) with the service's options ('image: ...'), or with them under "
           "'NAME:' or 'services: {NAME: ...}'; the other services keep their images and package sizes.")


@service.command("add", context_settings=CONTEXT, help=f"""Add service NAME from SECTION: a new project
version with that service in the manifest (comments kept), started at its scale. {SECTION}""")
@click.argument("name")
@click.argument("section")
@wait_option
@json_option
@pass_state
def service_add(state: State, name: str, section: str, wait: bool, as_json: bool) -> None:
    text, filename, _ = _read_manifest(section)  # env files: the project version's (see README)
    result = _change(state, "POST", f"/v1/projects/{state.project()}/services",
                     {"name": name, "manifest": text, "filename": filename}, wait, as_json)
    _report_version(state.project(), result, as_json)
    _report_tasks(state, result["tasks"], wait, as_json)


@service.command("update", context_settings=CONTEXT, help=f"""Replace service REF's section with SECTION: a
new project version (comments kept), rolled out as 'project update' does. {SECTION}""")
@click.argument("ref")
@click.argument("section")
@rollout_options
@wait_option
@json_option
@pass_state
def service_update(state: State, ref: str, section: str, rolling, count, wait: bool, as_json: bool) -> None:
    text, filename, _ = _read_manifest(section)
    body = {"manifest": text, "filename": filename, "rolling": rolling, "count": count}
    result = _change(state, "PUT", f"/v1/projects/{state.project()}/services/{ref}", body, wait, as_json)
    _report_version(state.project(), result, as_json)
    _report_tasks(state, result["tasks"], wait, as_json)


@service.command("delete", context_settings=CONTEXT)
@click.argument("ref")
@wait_option
@json_option
@pass_state
def service_delete(state: State, ref: str, wait: bool, as_json: bool) -> None:
    """A new project version without service REF: its instances are removed (the last service of a
    project goes with 'project delete')."""
    result = state.client.request("DELETE", f"/v1/projects/{state.project()}/services/{ref}")
    _report_version(state.project(), result, as_json)
    _report_tasks(state, result["tasks"], wait, as_json)


@service.command("instances", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def service_instances(state: State, ref: str, as_json: bool) -> None:
    """List the service's instances, stopped ones included."""
    _instances(state.client.get(f"/v1/projects/{state.project()}/services/{ref}/instances"), as_json)


@service.command("scale", context_settings=NUMBER_ARGS)
@click.argument("ref")
@click.argument("amount")
@wait_option
@json_option
@pass_state
def service_scale(state: State, ref: str, amount: str, wait: bool, as_json: bool) -> None:
    """Scale to AMOUNT instances, or by +N / -N."""
    result = state.client.post(f"/v1/projects/{state.project()}/services/{ref}/scale", {"scale": amount})
    _report_tasks(state, result["tasks"], wait, as_json)


def _service_action(action: str, doc: str):
    @service.command(action, context_settings=CONTEXT, help=doc)
    @click.argument("ref")
    @wait_option
    @json_option
    @pass_state
    def command(state: State, ref: str, wait: bool, as_json: bool) -> None:
        result = state.client.post(f"/v1/projects/{state.project()}/services/{ref}/{action}")
        _report_tasks(state, result["tasks"], wait, as_json)

    return command


@service.command("reprovision", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--version", help="Only instances of this version (id, prefix or number).")
@click.option("--image", help="Only instances of this image.")
@click.option("--instance", help="Only this instance.")
@rollout_options
@wait_option
@json_option
@pass_state
def service_reprovision(
    state: State, ref: str, version, image, instance, rolling, count, wait: bool, as_json: bool
) -> None:
    """Replace instances with new ones of the current version (older versions first)."""
    body = {"version": version, "image": image, "instance": instance, "rolling": rolling, "count": count}
    result = state.client.post(f"/v1/projects/{state.project()}/services/{ref}/reprovision",
                               {k: v for k, v in body.items() if v is not None})
    _report_tasks(state, result["tasks"], wait, as_json)


@service.command("versions", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def service_versions(state: State, ref: str, as_json: bool) -> None:
    """The service's versions (its slice of each project version), newest first."""
    rows = state.client.get(f"/v1/projects/{state.project()}/services/{ref}/versions")
    if as_json:
        return print_json(rows)
    table(rows, [("VERSION", lambda r: f"{ref}@{r['version']}"), ("PROJECT VERSION", lambda r: short(r["id"])),
                 ("CREATED", lambda r: ago(r["created"])), ("SPEC", lambda r: r["spec_hash"] or "(absent)"),
                 ("IMAGE", lambda r: r["image"] or "-"), ("CHANGED", lambda r: "yes" if r["changed"] else ""),
                 ("BY", lambda r: r["author"] or "-")])


def _service_version_ref(parts: tuple[str, ...]) -> tuple[str, str]:
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) == 1 and "@" in parts[0]:
        service, _, version = parts[0].partition("@")
        return service, version
    raise click.UsageError("give SERVICE@VERSION (as 'service versions' prints it) or SERVICE VERSION")


@service.command("version", context_settings=CONTEXT)
@click.argument("ref", nargs=-1, required=True)
@json_option
@pass_state
def service_version(state: State, ref: tuple[str, ...], as_json: bool) -> None:
    """One service version's manifest section: SERVICE@VERSION or SERVICE VERSION."""
    service, version = _service_version_ref(ref)
    v = state.client.get(f"/v1/projects/{state.project()}/services/{service}/versions/{version}")
    if as_json:
        return print_json(v)
    sys.stdout.write(v["manifest"])


@service.command("revert", context_settings=CONTEXT)
@click.argument("ref")
@click.argument("version")
@rollout_options
@wait_option
@json_option
@pass_state
def service_revert(state: State, ref: str, version: str, rolling, count, wait: bool, as_json: bool) -> None:
    """Put the service's section (and image) of VERSION back, as a new project version."""
    version = version.split("@", 1)[1] if "@" in version else version
    body = {"version": version, "rolling": rolling, "count": count}
    result = state.client.post(f"/v1/projects/{state.project()}/services/{ref}/revert",
                               {k: v for k, v in body.items() if v is not None})
    if not as_json:
        click.echo(f"project now at version {result['version']['seq']}: {result['version']['summary']}")
    _report_tasks(state, result["tasks"], wait, as_json)


_service_action("start", "Start the service back at its scale (an error if it already runs).")
_service_action("stop", f"Stop every instance of the service and remove them, {STOP_KEEPS}.")
_service_action("thaw", "Let the reconciler manage a service again after 'queue stop' froze it.")


def _check_label(c: dict) -> str:
    target = f" :{c['port']}" if c.get("port") else ""
    what = c["path"] if c["type"] in ("http", "https") else (" ".join(c["command"]) if c.get("command") else "")
    return f"{c['type']}{target} {what} every {c['poll']:g}s, unhealthy after {max(1, c['retries'])}".replace("  ", " ")


@service.command("health", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def service_health(state: State, ref: str, as_json: bool) -> None:
    """Health of each instance of the service, per check."""
    rows = state.client.get(f"/v1/projects/{state.project()}/services/{ref}/health")
    if as_json:
        return print_json(rows)
    flat = []
    for r in rows:
        for c in r["checks"] or [None]:
            flat.append({**r, "check": c})
    table(flat, [
        ("INSTANCE", lambda r: short(r["instance"])), ("NAME", lambda r: r["name"]),
        ("STATUS", lambda r: r["status"] + (f" ({ago(r['since'])})" if r.get("since") else "")),
        ("CHECK", lambda r: r["check"]["check"] if r["check"] else "-"),
        ("LAST RESULT", lambda r: (r["check"]["detail"] if r["check"] else r["detail"]) or "-"),
        ("WHEN", lambda r: ago(r["check"]["at"]) if r["check"] and r["check"]["at"] else "-"),
        ("FAILURES", lambda r: f"{r['check']['failures']}/{r['check']['retries']}" if r["check"] else "-"),
    ])


@service.command("logs", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--instance", help="Only this instance (id, id prefix or name).")
@click.option("--no-log-prefix", is_flag=True, help="Print the lines without their instance's name.")
@log_output.with_logs_options
@pass_state
def service_logs(state: State, ref: str, instance: str | None, no_log_prefix: bool, follow: bool, since, tail,
                 timestamps: bool, no_color: bool, as_json: bool) -> None:
    """The output of the service's instances, merged, each line after its instance's name (as
    docker compose logs). Stopped and retired instances are included until removed."""
    params = {"follow": "1" if follow else None, "since": since, "tail": tail, "instance": instance}
    records = state.client.follow(f"/v1/projects/{state.project()}/services/{ref}/logs", params)
    log_output.show(records, prefix=not no_log_prefix, follow=follow, timestamps=timestamps, no_color=no_color,
                    as_json=as_json)


@service.command("stats", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--since", default="1h", show_default=True,
              help="The window: a duration back from now (90s, 30m, 6h), at most 24h.")
@json_option
@pass_state
def service_stats(state: State, ref: str, since: str, as_json: bool) -> None:
    """The service's instances over the window (CPU as percent of one core, memory, network and
    block rates a second: averages, and the most), then their sum. The last hour is at full
    resolution; beyond it, one-minute averages. --json gives the samples too."""
    from mariposa.cli import top as shown

    result = state.client.get(f"/v1/projects/{state.project()}/services/{ref}/stats", since=since)
    if as_json:
        return print_json(result)
    if not result["instances"]:
        sys.stdout.write(f"no samples of {result['service']} in the last {since} "
                         f"(one every {result['interval'] or '-'} s once an instance runs)\n")
        return
    total = result["total"]
    rows = [*result["instances"], {"instance": f"total ({total['instances']})", "count": "",
                                   "cpu_max": None, **total}]
    table(rows, shown.STATS_COLUMNS)
    sys.stdout.write(f"average CPU per instance: {shown.percent(total['cpu_average'])} "
                     f"({'one-minute rows' if result['source'] == 'minutes' else 'full resolution'})\n")


# ---- runs of scheduled and event services ----------------------------------------------------


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(r: dict) -> str:
    if r["started"] is None:
        return "-"
    from mariposa.clock import wall_clock

    end = r["ended"] if r["ended"] is not None else wall_clock()
    return f"{end - r['started']:.1f}s" + ("" if r["ended"] is not None else " so far")


def _run_table(rows: list[dict]) -> None:
    table(rows, [
        ("ID", lambda r: short(r["id"])), ("TRIGGER", lambda r: r["trigger"] + (f" (retry {r['attempt']})"
                                                                               if r["attempt"] else "")),
        ("SCHEDULED", lambda r: _when(r["scheduled"])), ("STARTED", lambda r: _when(r["started"])),
        ("DURATION", _duration), ("EXIT", lambda r: "-" if r["exit_code"] is None else r["exit_code"]),
        ("STATE", lambda r: r["state"] + (f" ({r['reason']})" if r.get("reason") else "")),
    ])


def _run_exit(run: dict) -> int:
    """A run's exit code as the CLI's: the job's own, else 0 for succeeded and 1 otherwise."""
    if run["exit_code"] is not None:
        return int(run["exit_code"]) & 0xFF
    return 0 if run["state"] == "succeeded" else 1


@service.command("run", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--env", "-e", "env", multiple=True, metavar="K=V", help="Set a variable for this run (repeatable).")
@click.option("--wait", is_flag=True, help="Print the run's output as it comes and exit with its exit code.")
@click.option("--idempotency-key", help="A key: the same key again within 24 h gives the first run, not a new one.")
@json_option
@pass_state
def service_run(state: State, ref: str, env: tuple[str, ...], wait: bool, idempotency_key: str | None,
                as_json: bool) -> None:
    """Run a scheduled or event service now (a manual run; a schedule is left alone)."""
    for item in env:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--env")
    body = {"env": list(env), "idempotency_key": idempotency_key}
    run = state.client.post(f"/v1/projects/{state.project()}/services/{ref}/runs", body)
    if not wait:
        if as_json:
            return print_json(run)
        click.echo(f"run {run['id']} {'queued' if run['created'] else 'already asked for with this key'} "
                   f"({run['state']})")
        return
    if not run["created"]:
        click.echo(f"run {run['id']} was already asked for with this key ({run['state']})", err=True)
    for record in state.client.follow(f"/v1/runs/{run['id']}/logs", {"follow": "1"}):
        click.echo(record["line"])
    done = state.client.get(f"/v1/runs/{run['id']}")
    if as_json:
        print_json(done)
    if done["state"] != "succeeded":
        click.echo(f"run {short(done['id'])} {done['state']}" + (f": {done['reason']}" if done.get("reason") else "")
                   + (f" (exit code {done['exit_code']})" if done["exit_code"] is not None else ""), err=True)
    sys.exit(_run_exit(done))


@service.command("runs", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--state", "run_state", help="Only runs in this state (queued, running, succeeded, failed, missed, "
                                           "skipped, stopped; comma-separated).")
@click.option("--limit", type=int, default=20, show_default=True, help="The newest N runs.")
@json_option
@pass_state
def service_runs(state: State, ref: str, run_state: str | None, limit: int, as_json: bool) -> None:
    """The service's runs, newest firing first."""
    rows = state.client.get(f"/v1/projects/{state.project()}/services/{ref}/runs", state=run_state, limit=limit)
    if as_json:
        return print_json([{k: r[k] for k in ("id", "trigger", "scheduled", "started", "ended", "exit_code", "state",
                                              "attempt", "reason", "instance_id")} for r in rows])
    _run_table(rows)


@service.command("next", context_settings=CONTEXT)
@click.argument("ref")
@click.option("--count", type=int, default=5, show_default=True, help="How many firings.")
@json_option
@pass_state
def service_next(state: State, ref: str, count: int, as_json: bool) -> None:
    """When the schedule fires next, in the service's time zone and in UTC."""
    d = state.client.get(f"/v1/projects/{state.project()}/services/{ref}/next", count=count)
    if as_json:
        return print_json(d)
    if d["suspended"]:
        click.echo(f"{d['service']} is stopped: nothing fires until 'service start' (then catch_up applies)",
                   err=True)
    table(d["next"], [(d["time_zone"].upper(), lambda r: r["local"]), ("UTC", lambda r: r["utc"])])


# ---- public triggers ----------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
def trigger() -> None:
    """Public trigger URLs (a service's `triggers:`): POST on one runs, starts, stops or scales it."""


def _trigger_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        return print_json(rows)
    table(rows, [("NAME", lambda r: r["name"]), ("SERVICE", lambda r: r["service"]),
                 ("ACTION", lambda r: r["action"] + (f" {r['scale']}" if r["scale"] else "")),
                 ("URL", lambda r: r["url"] or r["path"] + "  (no triggers_listen)")])


@trigger.command("list", context_settings=CONTEXT)
@click.option("--reveal", is_flag=True, help="Show in full the URLs whose token was never shown (each only once).")
@json_option
@pass_state
def trigger_list(state: State, reveal: bool, as_json: bool) -> None:
    """The project's triggers: name, service, action and URL (its token masked, unless --reveal)."""
    path = f"/v1/projects/{state.project()}/triggers"
    rows = state.client.post(path + "/reveal") if reveal else state.client.get(path)
    _trigger_table(rows, as_json)
    if reveal and not as_json and any(r["url"] and "<hidden>" in r["url"] for r in rows):
        click.echo("URLs still <hidden> were shown before: 'mariposa -j PROJECT trigger rotate NAME' makes a new one",
                   err=True)


@trigger.command("rotate", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def trigger_rotate(state: State, name: str, as_json: bool) -> None:
    """Replace trigger NAME's token: the old URL stops working now; the new one is printed once."""
    r = state.client.post(f"/v1/projects/{state.project()}/triggers/{name}/rotate")
    if as_json:
        return print_json(r)
    click.echo(r["url"] or r["path"])


# ---- outgoing webhooks --------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
def webhook() -> None:
    """Outgoing webhooks (`webhooks:` of a service or the project): their deliveries."""


def _last(r: dict) -> str:
    if r["last_error"] and not (r["last_status"] and r["last_error"] == f"HTTP {r['last_status']}"):
        return r["last_error"]
    return str(r["last_status"]) if r["last_status"] is not None else "-"


def _until(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    delta = stamp - wall_clock()
    return "now" if delta <= 0 else f"in {delta:.0f}s" if delta < 120 else _when(stamp)


@webhook.command("deliveries", context_settings=CONTEXT)
@click.option("--failed", is_flag=True, help="Only deliveries given up (after 24 h) or dropped (outbox full).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Newest N.")
@json_option
@pass_state
def webhook_deliveries(state: State, failed: bool, limit: int, as_json: bool) -> None:
    """The project's webhook deliveries, newest first: state, attempts, the last answer."""
    rows = state.client.get(f"/v1/projects/{state.project()}/webhooks/deliveries", failed="1" if failed else "",
                            limit=limit)
    if as_json:
        return print_json(rows)
    table(rows, [("ID", lambda r: short(r["id"])), ("TIME", lambda r: _when(r["created"])),
                 ("URL", lambda r: r["url"]), ("EVENT", lambda r: r["event"]), ("STATE", lambda r: r["state"]),
                 ("ATTEMPTS", lambda r: r["attempts"]), ("LAST", _last),
                 ("NEXT", lambda r: _until(r["next_attempt"]))])


@webhook.command("redeliver", context_settings=CONTEXT)
@click.argument("delivery")
@json_option
@pass_state
def webhook_redeliver(state: State, delivery: str, as_json: bool) -> None:
    """Send delivery DELIVERY (id or prefix) again, under the same id: a receiver that has it drops it."""
    r = state.client.post(f"/v1/projects/{state.project()}/webhooks/deliveries/{delivery}/redeliver")
    if as_json:
        return print_json(r)
    click.echo(f"delivery {short(r['id'])} ({r['event']} to {r['url']}) queued again")


@cli.group(context_settings=CONTEXT)
def run() -> None:
    """Runs of scheduled and event services, by id or id prefix."""


@run.command("get", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def run_get(state: State, ref: str, as_json: bool) -> None:
    """Show one run."""
    r = state.client.get(f"/v1/runs/{ref}")
    if as_json:
        return print_json(r)
    fields([("id", r["id"]), ("service", r["service"]), ("trigger", r["trigger"]), ("attempt", r["attempt"]),
            ("state", r["state"]), ("reason", r["reason"] or "-"), ("scheduled", _when(r["scheduled"])),
            ("started", _when(r["started"])), ("ended", _when(r["ended"])), ("duration", _duration(r)),
            ("exit code", "-" if r["exit_code"] is None else r["exit_code"]),
            ("instance", r["instance_id"] or "-")])


@run.command("logs", context_settings=CONTEXT)
@click.argument("ref")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends (waiting for a queued one).")
@pass_state
def run_logs(state: State, ref: str, follow: bool) -> None:
    """A run's output: its instance's while it runs, what was kept with it once it ended."""
    records = state.client.follow(f"/v1/runs/{ref}/logs", {"follow": "1" if follow else None})
    log_output.show(records, prefix=False, follow=follow, timestamps=False, no_color=True, as_json=False)


@run.command("stop", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def run_stop(state: State, ref: str, as_json: bool) -> None:
    """Stop a run (its instance is stopped and removed; the run is recorded stopped)."""
    r = state.client.post(f"/v1/runs/{ref}/stop")
    if as_json:
        return print_json(r)
    click.echo(f"run {short(r['id'])} {'stopping' if r['state'] == 'running' else r['state']}")


# ---- instances --------------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
def instance() -> None:
    """Single instances, by id, id prefix or name."""


@instance.command("get", context_settings=CONTEXT)
@click.argument("ref")
@json_option
@pass_state
def instance_get(state: State, ref: str, as_json: bool) -> None:
    """Show one instance: runtime state, health, restarts, why it was retired."""
    i = state.client.get(f"/v1/instances/{ref}")
    if as_json:
        return print_json(i)
    pairs = [("id", i["id"]), ("name", i["name"]), ("project", i["project_name"]), ("service", i["service"]),
             ("state", _instance_state(i)), ("health", _instance_health(i)), ("address", i["address"] or "-"),
             ("ports", ", ".join(i["ports"]) or "-"), ("image", i["image"]), ("version", i["version_id"]),
             ("runtime id", i["runtime_id"]), ("created", ago(i["created"]))]
    if i.get("retired_reason"):
        pairs.append(("retired", i["retired_reason"]))
    if i.get("last_exit_code") is not None:
        pairs.append(("last exit", i["last_exit_code"]))
    for c in i.get("checks") or []:
        pairs.append((f"check {c['check']}",
                      f"{c['detail']} ({ago(c['at'])}, {c['failures']}/{c['retries']} failures)"))
    fields(pairs)


@instance.command("logs", context_settings=CONTEXT)
@click.argument("ref")
@log_output.with_logs_options
@pass_state
def instance_logs(state: State, ref: str, follow: bool, since, tail, timestamps: bool, no_color: bool,
                  as_json: bool) -> None:
    """One instance's output (a retired one's too, until it is removed); --follow goes on through
    its restarts and ends when it is removed or retired."""
    params = {"follow": "1" if follow else None, "since": since, "tail": tail}
    records = state.client.follow(f"/v1/instances/{ref}/logs", params)
    log_output.show(records, prefix=False, follow=follow, timestamps=timestamps, no_color=no_color,
                    as_json=as_json)


@instance.command("rm", context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True)
@pass_state
def instance_rm(state: State, refs: tuple[str, ...]) -> None:
    """Remove instances (e.g. stopped ones kept for inspection); one still in service is replaced."""
    for ref in refs:
        r = state.client.request("DELETE", f"/v1/instances/{ref}")
        click.echo(f"removed {r['name']} ({short(r['removed'])}, was {r['was']})")


# ---- queue and events -------------------------------------------------------------------------


class MetaGroup(AliasedGroup):
    aliases = {"ls": "list", "add": "set", "create": "set", "new": "set", "update": "set", "delete": "rm",
               "del": "rm", "incr": "increment", "decr": "decrement"}


@cli.group(cls=MetaGroup, context_settings=CONTEXT)
def meta() -> None:
    """Project meta of the project given with -j: KEY VALUE pairs its manifest uses as {{ .meta.KEY }}."""


def _meta_path(state: State, key: str | None = None) -> str:
    from urllib.parse import quote

    base = f"/v1/projects/{state.project()}/meta"
    return base if key is None else f"{base}/{quote(key, safe='')}"


def _meta_tasks(state: State, result: dict, as_json: bool, wait: bool = False) -> None:
    if as_json and not (wait and result.get("tasks")):
        return print_json(result)
    for run_id in result.get("runs") or ():
        click.echo(f"run {run_id[:12]} queued (an event service watches this key: on: meta)", err=True)
    if result.get("tasks"):
        _report_tasks(state, result["tasks"], wait, as_json)


@meta.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def meta_list(state: State, as_json: bool) -> None:
    """Every key with its value and CAS id."""
    rows = state.client.get(_meta_path(state))
    if as_json:
        return print_json(rows)
    table(rows, [("KEY", lambda r: r["key"]), ("VALUE", lambda r: "null" if r["value"] is None else r["value"]),
                 ("CAS ID", lambda r: r["cas"])])


@meta.command("get", context_settings=CONTEXT)
@click.argument("key")
@json_option
@pass_state
def meta_get(state: State, key: str, as_json: bool) -> None:
    """The value alone (for scripts); a null value prints nothing."""
    row = state.client.get(_meta_path(state, key))
    if as_json:
        return print_json(row)
    if row["value"] is not None:
        sys.stdout.write(row["value"] + "\n")


@meta.command("set", context_settings=NUMBER_ARGS)
@click.argument("key")
@click.argument("value")
@click.argument("cas_arg", metavar="[CAS]", required=False)
@click.option("--cas", help="Only if the key's CAS id is still this one (exit 5 if not).")
@wait_option
@json_option
@pass_state
def meta_set(state: State, key: str, value: str, cas_arg: str | None, cas: str | None, wait: bool,
             as_json: bool) -> None:
    """Set KEY to VALUE ('-' reads it from stdin); services whose instances use it roll out."""
    if value == "-":
        value = sys.stdin.read()
    result = state.client.request("PUT", _meta_path(state, key), json={"value": value, "cas": cas or cas_arg})
    if not as_json:
        click.echo(f"meta {key} set (CAS id {result['cas']})", err=True)
    _meta_tasks(state, result, as_json, wait)


@meta.command("rm", context_settings=CONTEXT)
@click.argument("key")
@click.argument("cas_arg", metavar="[CAS]", required=False)
@click.option("--cas", help="Only if the key's CAS id is still this one (exit 5 if not).")
@wait_option
@json_option
@pass_state
def meta_rm(state: State, key: str, cas_arg: str | None, cas: str | None, wait: bool, as_json: bool) -> None:
    """Remove KEY. A version that uses it keeps running; the next one is refused until it is set."""
    given = cas or cas_arg
    result = state.client.request("DELETE", _meta_path(state, key), params={"cas": given} if given else None)
    if not as_json:
        click.echo(f"meta {key} removed", err=True)
    _meta_tasks(state, result, as_json, wait)


def _meta_step(sign: int, doc: str):
    @click.argument("key")
    @click.argument("amount", metavar="[N]", type=click.IntRange(min=1), default=1)
    @wait_option
    @json_option
    @pass_state
    def command(state: State, key: str, amount: int, wait: bool, as_json: bool) -> None:
        result = state.client.post(_meta_path(state, key) + "/increment", {"by": sign * amount})
        if not as_json:
            click.echo(result["value"])
        _meta_tasks(state, result, as_json, wait)

    command.__doc__ = doc
    return command


meta.command("increment", context_settings=CONTEXT)(_meta_step(
    1, "Add N (1) to KEY atomically; a missing key or null counts as 0. Prints the new value."))
meta.command("decrement", context_settings=CONTEXT)(_meta_step(
    -1, "Take N (1) from KEY atomically; a missing key or null counts as 0. Prints the new value."))


@meta.command("import", context_settings=CONTEXT)
@click.argument("file")
@click.option("-f", "--force", is_flag=True, help="Overwrite keys already set (default: keep them, with a warning).")
@wait_option
@json_option
@pass_state
def meta_import(state: State, file: str, force: bool, wait: bool, as_json: bool) -> None:
    """Import a meta manifest (a YAML map of KEY: VALUE) in one transaction ('-' reads stdin)."""
    try:
        text, name = (sys.stdin.read(), "<stdin>") if file == "-" else (Path(file).read_text(), file)
    except OSError as exc:
        raise MariposaError(f"cannot read {file}: {exc.strerror}") from None
    result = state.client.post(_meta_path(state), {"manifest": text, "filename": name, "force": force})
    for key in result["kept"]:
        click.echo(f"warning: meta {key} is already set: kept (--force overwrites it)", err=True)
    if not as_json:
        click.echo(f"imported {len(result['imported'])} key(s), kept {len(result['kept'])}", err=True)
    _meta_tasks(state, result, as_json, wait)


@cli.group(context_settings=CONTEXT)
def volume() -> None:
    """Named volumes of the project given with -j: its data, kept until removed here or purged."""


@volume.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def volume_list(state: State, as_json: bool) -> None:
    """The project's named volumes: size when the runtime tells it, and who mounts them."""
    rows = state.client.get(f"/v1/projects/{state.project()}/volumes")
    if as_json:
        return print_json(rows)
    from mariposa.manifest.units import format_size  # not at the top: the manifest package is slow to import
    table(rows, [("NAME", lambda r: r["name"]), ("RUNTIME NAME", lambda r: r["runtime_name"]),
                 ("SIZE", lambda r: "-" if r["size"] is None else format_size(r["size"])),
                 ("USED BY", lambda r: ", ".join(r["used_by"]) or "-")])


@volume.command("rm", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def volume_rm(state: State, name: str, as_json: bool) -> None:
    """Remove a named volume and its data (refused while an instance mounts it)."""
    result = state.client.request("DELETE", f"/v1/projects/{state.project()}/volumes/{name}")
    if as_json:
        return print_json(result)
    click.echo(f"volume {name} removed")


class SecretGroup(AliasedGroup):
    aliases = {"ls": "list", "delete": "rm", "del": "rm", "add": "set", "create": "set", "update": "set"}


@cli.group(cls=SecretGroup, context_settings=CONTEXT)
def secret() -> None:
    """Secrets of the project given with -j, encrypted at rest and delivered to the services that
    list them as /run/secrets/NAME. A value is read from stdin or a file, never from the command
    line (which every user of the host can read in the process list), and never printed (except
    by `secret reveal`, for root)."""


@secret.command("set", context_settings=CONTEXT)
@click.argument("name")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, allow_dash=False),
              help="Read the value from this file (else from stdin).")
@wait_option
@json_option
@pass_state
def secret_set(state: State, name: str, from_file: str | None, wait: bool, as_json: bool) -> None:
    """Set secret NAME to what stdin (or --from-file F) holds, byte for byte (asked for without
    echo on a terminal). Running instances that use it as a file see the new file at once;
    services that read it into their environment (secret_env) roll out, as for a meta change."""
    if from_file is not None:
        try:
            with open(from_file, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise click.UsageError(f"cannot read {from_file}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        import getpass

        data = getpass.getpass(f"Value of {name}: ").encode()
    else:
        data = sys.stdin.buffer.read()
    try:
        value = data.decode()
    except UnicodeDecodeError:
        raise click.UsageError("the value must be UTF-8 text") from None
    if not value:
        raise click.UsageError("the value is empty")
    result = state.client.request("PUT", f"/v1/projects/{state.project()}/secrets/{name}", json={"value": value})
    if not as_json:
        click.echo(f"secret {result['name']} set (version {result['version']})")
    _meta_tasks(state, result, as_json, wait)


@secret.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def secret_list(state: State, as_json: bool) -> None:
    """Names, versions and who changed them when: never values."""
    rows = state.client.get(f"/v1/projects/{state.project()}/secrets")
    if as_json:
        return print_json(rows)
    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))  # noqa: E731
    table(rows, [("NAME", lambda r: r["name"]), ("VERSION", lambda r: str(r["version"])),
                 ("UPDATED", lambda r: stamp(r["updated"])), ("BY", lambda r: r["updated_by"] or "-")])


@secret.command("rm", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def secret_rm(state: State, name: str, as_json: bool) -> None:
    """Remove secret NAME (refused while a service of the current version lists it)."""
    result = state.client.request("DELETE", f"/v1/projects/{state.project()}/secrets/{name}")
    if as_json:
        return print_json(result)
    click.echo(f"secret {name} removed")


@secret.command("reveal", context_settings=CONTEXT)
@click.argument("name")
@pass_state
def secret_reveal(state: State, name: str) -> None:
    """Print secret NAME's value (root only; audited)."""
    result = state.client.post(f"/v1/projects/{state.project()}/secrets/{name}/reveal", {})
    sys.stdout.write(result["value"])
    if sys.stdout.isatty() and not result["value"].endswith("\n"):
        sys.stdout.write("\n")


@secret.command("rotate-key", context_settings=CONTEXT)
@json_option
@pass_state
def secret_rotate_key(state: State, as_json: bool) -> None:
    """Add a new key, re-encrypt every secret with it in one transaction, then drop the old key."""
    result = state.client.post("/v1/secrets/rotate-key", {})
    if as_json:
        return print_json(result)
    click.echo(f"key rotated: {result['reencrypted']} secrets re-encrypted under key {result['key']}")


@cli.group(context_settings=CONTEXT)
def network() -> None:
    """Networks the services of the project given with -j join besides the project's own."""


@network.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def network_list(state: State, as_json: bool) -> None:
    """Each network with its runtime name (what another project joins as external: true, name: ...)."""
    rows = state.client.get(f"/v1/projects/{state.project()}/networks")
    if as_json:
        return print_json(rows)
    table(rows, [("NAME", lambda r: r["name"]), ("RUNTIME NAME", lambda r: r["runtime_name"]),
                 ("KIND", lambda r: "external" if r["external"] else "the project's"),
                 ("EXISTS", lambda r: "yes" if r["exists"] else "no"),
                 ("SERVICES", lambda r: ", ".join(r["services"]))])


@cli.group(context_settings=CONTEXT)
def queue() -> None:
    """The task queue: every long action, cancellable."""


@queue.command("list", context_settings=CONTEXT)
@click.option("--open", "only_open", is_flag=True, help="Only queued and active tasks.")
@click.option("--limit", default=50, show_default=True)
@json_option
@pass_state
def queue_list(state: State, only_open: bool, limit: int, as_json: bool) -> None:
    """List tasks, newest first (of the project given with -j, or all)."""
    rows = state.client.get("/v1/queue", project=state.project_ref, state="queued,active" if only_open else None,
                            limit=limit)
    if as_json:
        return print_json(rows)
    table(rows, [
        ("UUID", lambda r: short(r["id"])), ("COMPONENT", lambda r: "service" if r["service"] else "project"),
        ("TASK", lambda r: r["kind"]), ("STATE", lambda r: r["state"]), ("TARGET", lambda r: r["target"]),
        ("PROGRESS", lambda r: (r.get("progress") or {}).get("step", "-") if r["state"] == "active" else "-"),
        ("CREATED", lambda r: ago(r["created"])),
        ("MESSAGE", lambda r: r["message"] or (r.get("params") or {}).get("reason") or ""),  # an autoscale's why
    ])


@queue.command("get", context_settings=CONTEXT)
@click.argument("task")
@json_option
@pass_state
def queue_get(state: State, task: str, as_json: bool) -> None:
    """Show one task."""
    t = state.client.get(f"/v1/queue/{task}")
    if as_json:
        return print_json(t)
    fields([("id", t["id"]), ("task", t["kind"]), ("target", t["target"]), ("state", t["state"]),
            ("created", ago(t["created"])), ("started", ago(t["started"])), ("ended", ago(t["ended"])),
            ("progress", t.get("progress") or "-"), ("by", t.get("author") or "-"),
            *([("reason", t["params"]["reason"])] if (t.get("params") or {}).get("reason") else []),
            ("message", t["message"] or "-")])


@queue.command("stop", context_settings=CONTEXT)
@click.argument("task")
@json_option
@pass_state
def queue_stop(state: State, task: str, as_json: bool) -> None:
    """Terminate a task; its service stays as it is (frozen) until you change or thaw it."""
    t = state.client.request("DELETE", f"/v1/queue/{task}", params={"project": state.project_ref})
    if as_json:
        return print_json(t)
    click.echo(f"{_task_line(t)}" + (f": {t['message']}" if t.get("message") else ""))


@cli.command(context_settings=CONTEXT)
@click.option("--service", help="Only this service's events.")
@click.option("--type", "types", multiple=True,
              help="Only events of this type or family (task, health.unhealthy, ...).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they happen.")
@json_option
@pass_state
def events(state: State, service: str | None, types: tuple[str, ...], follow: bool, as_json: bool) -> None:
    """The event log and audit trail (of the project given with -j, or all): who changed what."""
    params = {"project": state.project_ref, "service": service, "type": ",".join(types) or None}
    if not follow:
        rows = state.client.get("/v1/events", **params)
        if as_json:
            return print_json(rows)
        table(rows, [("TIME", lambda r: ago(r["time"])), ("TYPE", lambda r: r["type"]),
                     ("BY", lambda r: r["author"] or "-"), ("MESSAGE", lambda r: r["message"])])
        return
    for event in state.client.follow("/v1/events", {**params, "follow": "1"}):
        if as_json:
            click.echo(json.dumps(event))
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
            click.echo(f"{stamp}  {event['type']:<18} {event['author'] or '-':<10} {event['message']}")


@cli.group(context_settings=CONTEXT)
def registry() -> None:
    """Registry logins the daemon pulls images with (kept under its state dir, never printed)."""


def _password(from_stdin: bool) -> str:
    """--password-stdin, or a prompt that does not echo on a terminal, or else stdin: never an
    argument, which every user of the host could read in the process list."""
    if not from_stdin and sys.stdin.isatty():
        import getpass

        return getpass.getpass("Password: ")
    return sys.stdin.read().rstrip("\r\n")


@registry.command("login", context_settings=CONTEXT)
@click.argument("host")
@click.option("-u", "--username", help="The registry user (asked for on a terminal when left out).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@json_option
@pass_state
def registry_login(state: State, host: str, username: str | None, password_stdin: bool, as_json: bool) -> None:
    """Log in to registry HOST: the registry checks the credentials now, and the daemon keeps them
    for its pulls of HOST's images. Without --password-stdin the password is asked for (without
    echo) on a terminal, else read from stdin."""
    if not username:
        if not sys.stdin.isatty() or password_stdin:
            raise click.UsageError("give --username when stdin is not a terminal (or carries the password)")
        username = click.prompt("Username")
    password = _password(password_stdin)
    if not password:
        raise click.UsageError("the password is empty")
    result = state.client.post("/v1/registries", {"host": host, "username": username, "password": password})
    if as_json:
        return print_json(result)
    click.echo(f"logged in to {result['host']} as {result['username']}")


@registry.command("logout", context_settings=CONTEXT)
@click.argument("host")
@pass_state
def registry_logout(state: State, host: str) -> None:
    """Forget the credentials of registry HOST."""
    result = state.client.request("DELETE", f"/v1/registries/{host}")
    click.echo(f"logged out of {result['host']}")


@registry.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def registry_list(state: State, as_json: bool) -> None:
    """Registries the daemon has credentials for: hosts and usernames (never passwords)."""
    rows = state.client.get("/v1/registries")
    if as_json:
        return print_json(rows)
    table(rows, [("HOST", lambda r: r["host"]), ("USERNAME", lambda r: r["username"])])


@cli.command(context_settings=CONTEXT)
@click.option("--config", "config_path", help="Configuration file to check (default /etc/mariposa/mariposa.toml).")
@click.option("--state-dir", help="State directory to check.")
@json_option
@pass_state
def doctor(state: State, config_path: str | None, state_dir: str | None, as_json: bool) -> None:
    """Check this host for what Mariposa needs, and say what to fix."""
    from mariposa.doctor import run_checks

    results = run_checks(config_path, state_dir, state.socket)
    if as_json:
        print_json(results)
    else:
        table(results, [("CHECK", lambda r: r["check"]),
                        ("", lambda r: {"ok": "ok", "warn": "WARN", "fail": "FAIL"}[r["status"]]),
                        ("DETAIL", lambda r: r["detail"]), ("FIX", lambda r: r.get("fix") or "")])
    if any(r["status"] == "fail" for r in results):
        sys.exit(1)


# ---- users, organisations, roles and bindings (control/access.py) ------------------------------


class UserGroup(AliasedGroup):
    aliases = {"ls": "list", "show": "get", "remove": "rm", "delete": "rm"}


@cli.group(cls=UserGroup, context_settings=CONTEXT)
def user() -> None:
    """Users: names that unix uids (and tokens) act as; root (uid 0) is built in."""


@user.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.option("--uid", "uids", type=int, multiple=True, help="A unix uid that acts as NAME (repeatable).")
@json_option
@pass_state
def user_add(state: State, name: str, uids: tuple[int, ...], as_json: bool) -> None:
    """Add user NAME, mapping the unix uids given with --uid to it."""
    r = state.client.post("/v1/users", {"name": name, "uids": list(uids)})
    if as_json:
        return print_json(r)
    click.echo(f"user {r['name']} added" + (f" (uid {', '.join(map(str, r['uids']))})" if r["uids"] else ""))


@user.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def user_list(state: State, as_json: bool) -> None:
    """List users, their uids and how many bindings each has."""
    rows = state.client.get("/v1/users")
    if as_json:
        return print_json(rows)
    table(rows, [("NAME", lambda r: r["name"]), ("UIDS", lambda r: ", ".join(map(str, r["uids"])) or "-"),
                 ("BINDINGS", lambda r: r["bindings"]), ("CREATED", lambda r: ago(r["created"]))])


def _binding_text(b: dict) -> str:
    return b["text"]


@user.command("get", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def user_get(state: State, name: str, as_json: bool) -> None:
    """Show user NAME: its uids and its bindings."""
    r = state.client.get(f"/v1/users/{name}")
    if as_json:
        return print_json(r)
    fields([("name", r["name"]), ("uids", ", ".join(map(str, r["uids"])) or "-")]
           + ([("note", r["note"])] if r.get("note") else []))
    for b in r["bindings"]:
        click.echo(f"  {short(b['id'])} {b['effect']} {b['role'] or b['capability']} on {_on(b)}")


def _on(b: dict) -> str:
    where = "*" if b["org"] == "*" else b["org"]
    return f"{where}.{b['project']}" if b.get("project_id") else where


@user.command("rm", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def user_rm(state: State, name: str, as_json: bool) -> None:
    """Remove user NAME (its uids, bindings and tokens go with it)."""
    r = state.client.request("DELETE", f"/v1/users/{name}")
    if as_json:
        return print_json(r)
    click.echo(f"user {name} removed ({r['bindings_removed']} binding(s))")


class OrgGroup(AliasedGroup):
    aliases = {"ls": "list", "remove": "rm", "delete": "rm", "create": "add"}


@cli.group(cls=OrgGroup, context_settings=CONTEXT)
def org() -> None:
    """Organisations: every project belongs to one (default: 'default')."""


@org.command("add", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def org_add(state: State, name: str, as_json: bool) -> None:
    """Add organisation NAME."""
    r = state.client.post("/v1/orgs", {"name": name})
    if as_json:
        return print_json(r)
    click.echo(f"organisation {r['name']} added")


@org.command("list", context_settings=CONTEXT)
@json_option
@pass_state
def org_list(state: State, as_json: bool) -> None:
    """List organisations and how many projects each has."""
    rows = state.client.get("/v1/orgs")
    if as_json:
        return print_json(rows)
    table(rows, [("NAME", lambda r: r["name"]), ("PROJECTS", lambda r: r["projects"]),
                 ("CREATED", lambda r: ago(r["created"]))])


@org.command("rm", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def org_rm(state: State, name: str, as_json: bool) -> None:
    """Remove organisation NAME (refused while it has projects; 'default' always stays)."""
    r = state.client.request("DELETE", f"/v1/orgs/{name}")
    if as_json:
        return print_json(r)
    click.echo(f"organisation {name} removed")


class RoleGroup(AliasedGroup):
    aliases = {"ls": "list", "show": "get"}


@cli.group(cls=RoleGroup, context_settings=CONTEXT)
def role() -> None:
    """Roles: viewer, operator, developer and admin built in, and custom ones (role define)."""


@role.command("list", context_settings=CONTEXT)
@click.option("--capabilities", "capabilities", is_flag=True, help="List the capabilities a role may name instead.")
@json_option
@pass_state
def role_list(state: State, capabilities: bool, as_json: bool) -> None:
    """List roles (or, with --capabilities, every capability and what it allows)."""
    if capabilities:
        from mariposa.access.capabilities import CAPABILITIES, NAMED_ONLY

        rows = [{"capability": c, "allows": text, "named_only": c in NAMED_ONLY} for c, text in CAPABILITIES.items()]
        if as_json:
            return print_json(rows)
        return table(rows, [("CAPABILITY", lambda r: r["capability"] + (" *" if r["named_only"] else "")),
                            ("ALLOWS", lambda r: r["allows"])])
    rows = state.client.get("/v1/roles")
    if as_json:
        return print_json(rows)
    table(rows, [("NAME", lambda r: r["name"]), ("BUILT IN", lambda r: "yes" if r["builtin"] else "no"),
                 ("DESCRIPTION", lambda r: r["description"] or "-")])


@role.command("get", context_settings=CONTEXT)
@click.argument("name")
@json_option
@pass_state
def role_get(state: State, name: str, as_json: bool) -> None:
    """Show role NAME and its capabilities."""
    r = state.client.get(f"/v1/roles/{name}")
    if as_json:
        return print_json(r)
    fields([("name", r["name"]), ("description", r["description"] or "-"),
            ("built in", "yes" if r["builtin"] else "no"), ("capabilities", ", ".join(r["capabilities"]))])


@role.command("define", context_settings=CONTEXT)
@click.argument("file")
@json_option
@pass_state
def role_define(state: State, file: str, as_json: bool) -> None:
    """Add or replace a custom role from FILE (TOML or YAML: name, description, capabilities)."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise MariposaError(f"cannot read {file}: {exc.strerror}") from None
    r = state.client.post("/v1/roles", {"text": text, "filename": "<stdin>" if file == "-" else file})
    if as_json:
        return print_json(r)
    click.echo(f"role {r['name']} {'replaced' if r['replaced'] else 'defined'}: {', '.join(r['capabilities'])}")


def _where(state: State, org_name: str | None, project_ref: str | None) -> dict:
    """--org O or -j P (given after the command, or before it as the global options)."""
    project_ref = project_ref or (None if org_name else state.project_ref)
    org_name = org_name or (None if project_ref else state.org)
    if bool(org_name) == bool(project_ref):
        raise click.UsageError("say where: --org ORG (or '*', every organisation and the host) or -j PROJECT")
    return {"org": org_name, "project": project_ref}


where_options = [click.option("--org", "org_name", metavar="ORG", help="On organisation ORG ('*': all, and the host)."),
                 click.option("-j", "--project", "project_ref", metavar="PROJECT", help="On project PROJECT only.")]


def _with_where(fn):
    for option in reversed(where_options):
        fn = option(fn)
    return fn


@cli.command(context_settings=CONTEXT)
@click.argument("user_name", metavar="USER")
@click.argument("role_name", metavar="ROLE")
@_with_where
@json_option
@pass_state
def grant(state: State, user_name: str, role_name: str, org_name: str | None, project_ref: str | None,
          as_json: bool) -> None:
    """Grant ROLE to USER on an organisation (--org) or one project (-j)."""
    _bind(state, "/v1/grants", {"user": user_name, "role": role_name}, org_name, project_ref, as_json, "granted")


def _bind(state: State, path: str, body: dict, org_name: str | None, project_ref: str | None, as_json: bool,
          done: str) -> None:
    """A grant or a deny, made and said."""
    r = state.client.post(path, {**body, **_where(state, org_name, project_ref)})
    if as_json:
        return print_json(r)
    click.echo(f"{done}: {r['binding']['text']}")


@cli.command(context_settings=CONTEXT)
@click.argument("user_name", metavar="USER")
@click.argument("capability")
@_with_where
@json_option
@pass_state
def deny(state: State, user_name: str, capability: str, org_name: str | None, project_ref: str | None,
         as_json: bool) -> None:
    """Deny USER a CAPABILITY (service:scale, area:*, or *) on --org or -j: a deny beats every grant."""
    _bind(state, "/v1/denies", {"user": user_name, "capability": capability}, org_name, project_ref, as_json,
          "denied")


@cli.command(context_settings=CONTEXT)
@click.argument("user_name", metavar="USER", required=False)
@click.argument("what", metavar="ROLE|CAPABILITY", required=False)
@_with_where
@click.option("--id", "binding_id", metavar="ID", help="The binding's id (user get shows it) instead.")
@json_option
@pass_state
def revoke(state: State, user_name: str | None, what: str | None, org_name: str | None, project_ref: str | None,
           binding_id: str | None, as_json: bool) -> None:
    """Take back a grant (USER ROLE) or a deny (USER CAPABILITY) on --org or -j, or a binding by --id."""
    if binding_id:
        body: dict = {"id": binding_id}
    elif user_name and what:
        body = {"user": user_name, "what": what, **_where(state, org_name, project_ref)}
    else:
        raise click.UsageError("say what to revoke: USER ROLE (or USER CAPABILITY) with --org or -j, or --id ID")
    r = state.client.post("/v1/revoke", body)
    if as_json:
        return print_json(r)
    for b in r["removed"]:
        click.echo(f"revoked: {b['text']}")


@cli.command("can-i", context_settings=CONTEXT)
@click.argument("action")
@click.option("-j", "--project", "project_ref", metavar="PROJECT", help="On project PROJECT.")
@click.option("--as", "as_user", metavar="USER", help="Ask for another user (needs user:admin).")
@json_option
@pass_state
def can_i(state: State, action: str, project_ref: str | None, as_user: str | None, as_json: bool) -> None:
    """Whether you (or USER) may do ACTION (service.scale, or a capability: service:scale): yes or no and the
    binding that decided. Exit 0 for yes, 1 for no."""
    r = state.client.get("/v1/can-i", action=action, project=project_ref or state.project_ref, **{"as": as_user})
    if as_json:
        print_json(r)
    else:
        click.echo(f"{'yes' if r['allowed'] else 'no'}: {r['why']}")
    sys.exit(0 if r["allowed"] else 1)


@cli.command("who-can", context_settings=CONTEXT)
@click.argument("action")
@click.option("-j", "--project", "project_ref", metavar="PROJECT", help="On project PROJECT.")
@json_option
@pass_state
def who_can(state: State, action: str, project_ref: str | None, as_json: bool) -> None:
    """The users who may do ACTION on a project, with the bindings that allow, and the denies that block."""
    project_ref = project_ref or state.project_ref
    if not project_ref:
        raise click.UsageError("who-can needs a project: mariposa who-can ACTION -j PROJECT")
    r = state.client.get("/v1/who-can", action=action, project=project_ref)
    if as_json:
        return print_json(r)
    click.echo(f"{r['capability'] or r['action']} on {r['on']}:")
    for a in r["allowed"]:
        click.echo(f"  {a['user']}: yes, {a['why']}")
    for d in r["denied"]:
        click.echo(f"  {d['user']}: no, {d['why']}")


@cli.command(context_settings=CONTEXT)
@json_option
@pass_state
def whoami(state: State, as_json: bool) -> None:
    """Who the daemon takes you for, and your bindings."""
    r = state.client.get("/v1/whoami")
    if as_json:
        return print_json(r)
    click.echo(f"{r['user']}" + (f" (uid {r['uid']})" if r.get("uid") is not None else "") + f" via {r['via']}"
               + (f", organisation {r['org']}" if r.get("org") else ""))
    for b in r["bindings"]:
        click.echo(f"  {b['text']}")


@cli.command("ui", context_settings=CONTEXT)
@json_option
@pass_state
def ui_command(state: State, as_json: bool) -> None:
    """Print a one-time link that signs you in to the web dashboard (good for 5 minutes, once)."""
    r = state.client.post("/v1/ui/signin", {})
    if as_json:
        return print_json(r)
    click.echo(r["url"])
    click.echo(f"Signs in {r['user']} once, within {r['expires_in'] // 60} minutes. Open it in a browser.", err=True)


@cli.command(context_settings=CONTEXT)
@click.option("--user", "user_name", metavar="USER", help="Only USER's.")
@click.option("--denied", is_flag=True, help="Only refusals.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest N.")
@json_option
@pass_state
def audit(state: State, user_name: str | None, denied: bool, limit: int, as_json: bool) -> None:
    """The audit trail, newest first: who asked for what, on what, and why it was allowed or refused."""
    rows = state.client.get("/v1/audit", user=user_name, denied="1" if denied else None, limit=limit)
    if as_json:
        return print_json(rows)
    table(rows, [("TIME", lambda r: _when(r["time"])), ("USER", lambda r: r["user"] or f"uid={r['uid']}"),
                 ("ACTION", lambda r: r["action"]), ("TARGET", lambda r: r["target"] or "-"),
                 ("", lambda r: "allowed" if r["allowed"] else "DENIED"), ("WHY", lambda r: r["why"])])

from mariposa.cli.tokens import token  # noqa: E402 - its commands, registered on the group above

cli.add_command(token)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MariposaError as exc:
        click.echo(f"mariposa: error: {exc.message}", err=True)
        for d in exc.details or []:
            if isinstance(d, dict) and d.get("message"):
                where = f"{d.get('file')}:{d.get('line')}:{d.get('column')}"
                click.echo(f"  {where}: {d.get('field') or ''}: {d['message']}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)
