"""A project's secrets: set (the value comes in the request body, from the CLI's stdin), list
(names, versions, who and when), remove, reveal (root only), and the daemon-wide key rotation.

Secrets belong to a project *name*, as its named volumes do: they can be set before the project
is added (its first version may already use them) and outlive `project delete`.

Every change is an event carrying an HMAC-SHA256 of the value under the daemon's salt, never the
value: whoever reads the audit trail can tell whether two changes set the same value, and nothing
more. A change is written in place into the files of the project's running instances that use
the secret (``vault/delivery.py``), without a restart.
"""

from __future__ import annotations

import builtins
import re

import trio

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.control.redact import Revealed
from mariposa.errors import BadRequest, Conflict, Forbidden, NotFound
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store import secrets as secret_store
from mariposa.store.secrets import PROJECT

SECRET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # a file name in /run/secrets
# What a new secret may be called: also a template's path, so ``db.password`` is
# {{ .secret.db.password }}; parts are never empty and never start with '-' (the template
# grammar's names, manifest/interpolate.py), so every secret can be named in a template.
_PART = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
NEW_SECRET_NAME = re.compile(rf"{_PART}(?:\.{_PART})*")
MAX_NAME = 128
MAX_VALUE = 512 * 1024  # a secret is a password, key or certificate chain, not a data set


def secret_name(name: object) -> str:
    """A name to look up (rm, reveal): the older, looser rule, so what was stored can still go."""
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise BadRequest("a secret name is 1-128 letters, digits, '_', '.' or '-' (not starting with '.' or '-')")
    return name


def new_secret_name(name: object) -> str:
    """A name to set: dot-separated parts of letters, digits, '_' and '-', as templates read them."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not NEW_SECRET_NAME.fullmatch(name):
        raise BadRequest(f"secret name {str(name)[:MAX_NAME + 1]!r} must be 1-{MAX_NAME} letters, digits, '_', '-' "
                         "or '.', in parts separated by single dots, each starting with a letter, digit or '_' "
                         "(db.password is used as {{ .secret.db.password }})")
    return name


def secret_value(value: object) -> bytes:
    if not isinstance(value, str):
        raise BadRequest("'value' (the secret's value) is required")
    data = value.encode()
    if not data:
        raise BadRequest("the secret's value is empty")
    if len(data) > MAX_VALUE:
        raise BadRequest(f"a secret's value is at most {MAX_VALUE // 1024} KiB")
    return data


class Secrets(Area):
    async def _scope(self, project: str, must_exist: bool = False) -> tuple[str, str | None]:
        """(the project's name, its id when it exists): a ref that names no project is taken as
        the name of one yet to be added."""
        from mariposa.control.projects import PROJECT_NAME

        try:
            p = await self._project(project)
            return p.name, p.id
        except NotFound:
            if must_exist or not isinstance(project, str) or not PROJECT_NAME.fullmatch(project):
                raise
            return project, None

    async def _audit(self, caller: Caller, project_id: str | None, type: str, message: str) -> None:
        await self.ctx.store.call(lambda db: event_store.record(
            db, type, message, project_id=project_id, author=caller.author))

    @operation("secret.set", target="project", kind="new-project")
    async def set(self, caller: Caller, project: str, name: object, value: object) -> dict:
        key = new_secret_name(name)
        data = secret_value(value)
        scope, project_id = await self._scope(project)
        version = await self.ctx.vault.put(PROJECT, scope, key, data, caller.author)
        digest = await self.ctx.vault.digest(data)
        refreshed = await trio.to_thread.run_sync(self.ctx.secret_files.refresh, scope, key, data)
        await self._audit(caller, project_id, "secret.set",
                          f"secret {key} of project {scope} set to version {version} (hmac-sha256 {digest})")
        tasks: builtins.list[dict] = []
        if project_id is not None:
            tasks = await self._changed(caller, project_id, key)
        return {"project": scope, "name": key, "version": version, "hmac": digest, "instances_updated": refreshed,
                "tasks": tasks}

    async def _changed(self, caller: Caller, project_id: str, key: str) -> builtins.list[dict]:
        """Services that read the secret into their environment get a new version, rolled out
        like a meta change (control/meta_rollout.py); files were rewritten in place above."""
        from mariposa.control.meta_rollout import roll_out
        from mariposa.converge.goals import secret_key

        return await roll_out(self.ctx, await self._project(project_id), frozenset({secret_key(key)}), caller.author)

    @operation("secret.list", target="project", kind="new-project")
    async def list(self, caller: Caller, project: str) -> builtins.list[dict]:
        scope, _ = await self._scope(project)
        return await self.ctx.store.call(secret_store.listing, PROJECT, scope)

    @operation("secret.remove", target="project", kind="new-project")
    async def remove(self, caller: Caller, project: str, name: object) -> dict:
        key = secret_name(name)
        scope, project_id = await self._scope(project)
        if project_id is not None:
            users = await self._users(project_id, key)
            if users:
                raise Conflict(f"secret {key} is used by service{'s' if len(users) > 1 else ''} "
                               f"{', '.join(users)} of project {scope}: remove it from the manifest first")
        if not await self.ctx.store.call(secret_store.remove, PROJECT, scope, key):
            raise NotFound(f"project {scope} has no secret {key}")
        await self._audit(caller, project_id, "secret.remove", f"secret {key} of project {scope} removed")
        return {"project": scope, "name": key, "removed": True}

    async def _users(self, project_id: str, key: str) -> builtins.list[str]:
        """Services of the project's current version that name the secret (as a file, in
        environment as {{ .secret.NAME }}, or to sign a webhook's POSTs)."""
        from mariposa.converge.render import env_secrets

        p = await self._project(project_id)
        version = await self.ctx.store.call(goal_store.current_version, p)
        spec = await self.ctx.goals.spec_of(version)
        return [s.name for s in (spec.services if spec else ()) if key in s.secrets or key in env_secrets(s)
                or any(h.secret_from == key for h in s.webhooks)]

    @operation("secret.reveal", target="project", kind="new-project")
    async def reveal(self, caller: Caller, project: str, name: object) -> dict:
        """The value itself: ``secret:reveal``, which no wildcard gives (access/capabilities.py),
        and never to the daemon's own callers (the watched directory has no use for a value)."""
        if caller.name is not None:
            raise Forbidden(f"{caller.author} may not reveal a secret")
        key = secret_name(name)
        scope, project_id = await self._scope(project)
        data = await self.ctx.vault.get(PROJECT, scope, key)
        if data is None:
            raise NotFound(f"project {scope} has no secret {key}")
        await self._audit(caller, project_id, "secret.reveal", f"secret {key} of project {scope} revealed")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise BadRequest(f"secret {key} is not text; it can only be delivered as a file") from None
        return {"project": scope, "name": key, "value": Revealed(text)}

    @operation("secret.rotate-key", kind="host")
    async def rotate_key(self, caller: Caller) -> dict:
        result = await self.ctx.vault.rotate()
        await self._audit(caller, None, "secret.rotate-key",
                          f"secret key rotated: {result['reencrypted']} secrets re-encrypted under key "
                          f"{result['key']}; keys {', '.join(result['old_keys'])} dropped")
        return result
