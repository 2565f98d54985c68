"""Exports: a project's current version as files another engine runs, with its conversion
report (mariposa/export/).

Reading a project is enough to export it (``project:read``), since the manifest it is made from is
readable with that already. Secret values are the exception: they leave only with
``with_secret_values``, which needs ``secret:reveal`` on the project (asked here, after the
operation's own check) and is refused to the daemon's own callers, as ``secret reveal`` is.
Without it secrets are references (a Secret without data, a Vault path, an external secret),
and any value that still reached the text is scrubbed by the one redaction point.
"""

from __future__ import annotations

import trio

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.control.redact import Revealed
from mariposa.errors import BadRequest, ExportRefused, Forbidden
from mariposa.export import TARGETS, export, refusal
from mariposa.export.common import secret_names
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store.secrets import PROJECT


class Exports(Area):
    @operation("project.export", target="ref")
    async def export(self, caller: Caller, ref: str, to: object, strict: object = False,
                     with_secret_values: object = False) -> dict:
        if not isinstance(to, str) or to not in TARGETS:
            raise BadRequest(f"'to' must be one of {', '.join(TARGETS)}, not {to!r}")
        for flag, value in (("strict", strict), ("with_secret_values", with_secret_values)):
            if not isinstance(value, bool):
                raise BadRequest(f"'{flag}' must be true or false")
        p = await self._project(ref)
        version = await self.ctx.store.call(goal_store.current_version, p)
        spec = await self.ctx.goals.spec_of(version)
        filename = version.filename or f"{p.name}.yaml"
        values: dict[str, str] | None = None
        if with_secret_values:
            values = await self._values(caller, p, secret_names(spec))
        result = await trio.to_thread.run_sync(
            lambda: export(to, spec, version.manifest, p.name, filename, values))
        if strict and result.unmapped:
            raise ExportRefused(refusal(result, filename),
                                details=[e.to_json() for e in result.unmapped])
        out = result.to_json(filename)
        out["project"] = p.name
        out["version"] = version.to_json()
        out["with_secret_values"] = values is not None
        if values is not None:
            out["files"] = {name: Revealed(text) for name, text in result.files.items()}
        return out

    async def _values(self, caller: Caller, p, names: list[str]) -> dict[str, str]:
        """The values of the secrets the project uses, for a caller allowed to reveal them."""
        from mariposa.control.authorize import authorize

        authorize(self.policy, caller, "secret.reveal", self.project_scope(caller, p), self.ctx.audit)
        if caller.name is not None:
            raise Forbidden(f"{caller.author} may not export secret values")
        values = {}
        for name in names:
            data = await self.ctx.vault.get(PROJECT, p.name, name)
            if data is None:
                continue  # not set: exported as a reference, as without the flag
            try:
                values[name] = data.decode()
            except UnicodeDecodeError:
                raise BadRequest(f"secret {name} is not text; export without --with-secret-values") from None
        await self.ctx.store.call(lambda db: event_store.record(
            db, "secret.reveal", f"secrets {', '.join(sorted(values)) or '(none set)'} of project {p.name} revealed "
            "in an export", project_id=p.id, author=caller.author))
        return values
