"""The watched manifest directory: ``NAME.yaml`` is project ``NAME`` (as kubelet's static pods
or systemd's unit directories work).

Only complete files are applied. A file counts as complete when its writer closed it
(``IN_CLOSE_WRITE``) or renamed it into place (``IN_MOVED_TO``) and nothing touched it for a
short quiet period; the periodic rescan, the safety net for lost events, only takes files left
alone for a few seconds. Editors' temporary files, dotfiles, ``~`` backups and swap files are
never looked at. A file that does not parse (or validate) leaves its project as it was and the
error is kept for ``mariposa project get`` and logged. Each content is applied once.

``NAME.meta.yaml`` (or ``.meta.yml``) beside ``NAME.yaml`` is the project's meta (a meta
manifest, what ``meta import`` reads). It is imported with the project when the project is made
from its file, so a manifest using ``{{ .meta.KEY }}`` starts in one step whichever file lands
first: a manifest refused for want of its meta is tried again when the meta file comes, and a
meta file waits (saying so once) for its manifest. A later edit sets the keys it names to its
values, like ``meta import --force``; only a value that differs counts, and rolls out as
``meta set`` does. Keys it does not name are left alone, and deleting it deletes no meta.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import structlog
import trio

from mariposa.clock import wall_clock
from mariposa.context import Context
from mariposa.control.caller import WATCHER
from mariposa.errors import MariposaError, StoreUnavailable, translate
from mariposa.inotify import IN_CLOSE_WRITE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, DirectoryWatch
from mariposa.manifest import ManifestError
from mariposa.manifest.env_files import MAX_ENV_FILE, read_beside
from mariposa.store import files as file_store
from mariposa.store import goal as goal_store

if TYPE_CHECKING:
    from mariposa.control import Control
    from mariposa.store.rows import ProjectRow

log = structlog.get_logger()

PROJECT_FILE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,62})\.ya?ml$")
META_FILE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,62})\.meta\.ya?ml$")
MAX_FILE = 1024 * 1024  # a hand-edited manifest is a few KiB; a bigger file is a mistake or an attack
QUIET = 0.3  # seconds without further events before a closed file is read
SETTLE = 3.0  # the rescan only takes files unmodified for this long


def _ignored(filename: str) -> bool:
    return filename.startswith(".") or filename.endswith(("~", ".swp", ".swx", ".tmp"))


def project_name(filename: str) -> str | None:
    """The project a manifest's file name stands for, or None for anything that is not a
    manifest of ours to read (``.x.yaml``, ``x.yaml~``, ``.x.yaml.swp``, ``x.meta.yaml``)."""
    if _ignored(filename) or ".meta." in filename:
        return None
    m = PROJECT_FILE.fullmatch(filename)
    return m.group("name") if m else None


def meta_project(filename: str) -> str | None:
    """The project whose meta file this is (``NAME.meta.yaml``, ``NAME.meta.yml``), or None."""
    if _ignored(filename):
        return None
    m = META_FILE.fullmatch(filename)
    return m.group("name") if m else None


def watched(filename: str) -> bool:
    """Whether the file is one of ours: a manifest or a project's meta file."""
    return project_name(filename) is not None or meta_project(filename) is not None


def manifest_names(name: str) -> tuple[str, str]:
    return f"{name}.yaml", f"{name}.yml"


def meta_names(name: str) -> tuple[str, str]:
    """The meta files a project may have, the one that counts when both are there first."""
    return f"{name}.meta.yaml", f"{name}.meta.yml"


@attrs.frozen
class MetaFile:
    """A project's meta file as read: its text, or why it cannot be imported (unreadable, not
    a meta manifest: the problems carry file:line:column)."""

    full: str
    digest: str
    text: str = ""
    error: MariposaError | None = None


@attrs.define
class ManifestDirectory:
    """Applies the directory's files through the control layer, as the caller ``WATCHER``."""

    ctx: Context
    control: Control
    path: str
    rescan: float = 30.0
    delete_removed: bool = False
    applied: int = 0
    _pending: dict[str, float] = attrs.field(factory=dict)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _rescan_now: trio.Event = attrs.field(factory=trio.Event)
    # one project's files (its manifest and its meta file) are considered one at a time: the
    # inotify path and the rescan may meet on them, and each may act on the other
    _locks: dict[str, trio.Lock] = attrs.field(factory=dict)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await trio.Path(self.path).mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            with DirectoryWatch(self.path) as watch:
                await self.scan(settle=0.0)
                task_status.started()
                nursery.start_soon(self._apply_when_quiet)
                nursery.start_soon(self._periodic_rescan)
                async for event in watch.events():
                    if event.overflow:
                        self.request_rescan()
                    elif event.gone:
                        log.error("manifest directory went away; watching stops until restart", path=self.path)
                        return
                    elif watched(event.name) and event.mask & (
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM
                    ):
                        self._pending[event.name] = self.ctx.clock.now() + QUIET
                        self._wake.set()
                    elif watched(event.name) and event.name in self._pending:
                        # still being written: push the deadline back
                        self._pending[event.name] = self.ctx.clock.now() + QUIET

    def request_rescan(self) -> None:
        self._rescan_now.set()

    async def _periodic_rescan(self) -> None:
        while True:
            with trio.move_on_after(self.rescan):
                await self._rescan_now.wait()
            self._rescan_now = trio.Event()
            try:
                await self.scan(settle=SETTLE)
            except StoreUnavailable as exc:  # nothing was recorded, so the next rescan sees it all again
                log.warning("manifest directory not rescanned: store unavailable", error=exc.message)

    async def _apply_when_quiet(self) -> None:
        while True:
            if not self._pending:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            name, deadline = min(self._pending.items(), key=lambda kv: kv[1])
            delay = deadline - self.ctx.clock.now()
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._wake.wait()
                    self._wake = trio.Event()
                continue
            project = project_name(name)
            meta_later = [self._pending[m] for m in meta_names(project) if m in self._pending] if project else []
            if meta_later:  # its meta file is still being written: that one first (a manifest may need it)
                self._pending[name] = max(meta_later) + 0.001
                continue
            del self._pending[name]
            await self.consider(name)

    async def scan(self, settle: float) -> None:
        """Every project file present (settled ones only), and every known file now gone."""
        listing = await trio.to_thread.run_sync(_settled_files, self.path, settle)
        # meta files first: a new project's manifest may need its meta
        listing.sort(key=lambda item: (meta_project(item[0]) is None, item[0]))
        for entry, settled in listing:
            if settled:
                await self.consider(entry)
        present = {entry for entry, _ in listing}
        known = await self.ctx.store.call(file_store.known, self.path)
        for full, state in known.items():
            if os.path.basename(full) not in present and state != "removed":
                await self.consider(os.path.basename(full))

    async def consider(self, filename: str) -> None:
        name = project_name(filename) or meta_project(filename)
        if name is None:
            return
        lock = self._locks.setdefault(name, trio.Lock())
        try:
            async with lock:
                await self._consider(filename)
        except StoreUnavailable as exc:  # recorded nothing: the file is not seen, the next rescan retries it
            log.warning("manifest file not considered: store unavailable", file=filename, error=exc.message)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(name, None)

    async def _consider(self, filename: str, again: bool = False) -> None:
        """``again``: the file is applied even if its content was seen (its meta file came)."""
        name = project_name(filename)
        if name is None:
            name = meta_project(filename)
            if name is not None:
                await self._consider_meta(name, filename)
            return
        full = os.path.join(self.path, filename)
        try:
            text = await trio.to_thread.run_sync(read_manifest_file, self.path, full)
        except FileNotFoundError:
            await self._removed(name, full)
            return
        except (OSError, Unreadable) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            await self._record(full, name, "", "invalid", f"{full}: not read: {reason}", None)
            log.error("manifest file not read", file=full, project=name, reason=reason)
            return
        # its env files, read inside the directory only and under the same rules; a change to one
        # shows in the digest, so the next rescan applies it
        env_files = await trio.to_thread.run_sync(read_beside, text, Path(self.path), self._read_env_file)
        digest = hashlib.sha256((text + json.dumps(env_files, sort_keys=True)).encode()).hexdigest()
        if not again and await self.ctx.store.call(file_store.already_seen, full, digest):
            return
        try:
            await self._apply(name, full, text, env_files)
        except StoreUnavailable:
            raise  # not the file's fault: it must not be recorded as refused
        except Exception as exc:  # one bad file must never take the watcher (and the daemon) down
            await self._refused(name, full, digest, translate(exc, f"applying {full}"))
            return
        await self._record(full, name, digest, "applied", None, None)
        self.applied += 1

    def _read_env_file(self, path: Path) -> str:
        try:
            return read_manifest_file(self.path, str(path), MAX_ENV_FILE)
        except Unreadable as exc:
            raise ValueError(str(exc)) from None

    async def _project(self, name: str) -> ProjectRow | None:
        try:
            return await self.ctx.store.call(goal_store.get_project, name)
        except MariposaError:
            return None

    async def _apply(self, name: str, full: str, text: str, env_files: dict) -> None:
        project = await self._project(name)
        meta = await self._meta_file(name)
        if project is None:
            await self._create(name, full, text, env_files, meta)
            return
        if project.source != full:
            origin = "the API" if project.source in (None, "api") else project.source
            raise MariposaError(f"project '{name}' already exists and is managed through {origin}; "
                                f"{full} is ignored (delete one or rename the file)")
        if project.source_state == "orphaned":
            await self.ctx.store.call(file_store.adopt_again, project.id)
        if meta is not None and not await self.ctx.store.call(file_store.already_seen, meta.full, meta.digest):
            await self._import_meta(name, project, meta)  # an edit of both: the manifest may use its new keys
        result = await self.control.projects.update(WATCHER, project.id, text, full, env_files=env_files,
                                                    base_dir=os.path.realpath(self.path))
        if result["changed"]:
            log.info("project updated from file", project=name, file=full, version=result["version"]["seq"])

    async def _create(self, name: str, full: str, text: str, env_files: dict, meta: MetaFile | None) -> None:
        """The project, with its meta file's keys set in the same transaction (before the first
        version is made, so its templates may use them)."""
        if meta is not None and meta.error is not None:
            if not await self.ctx.store.call(file_store.already_seen, meta.full, meta.digest):
                await self._refused(name, meta.full, meta.digest, meta.error)
            raise MariposaError(f"project '{name}' was not made: its meta file {meta.full} is not valid "
                                f"({meta.error.message})", details=meta.error.details)
        try:
            await self.control.projects.add(WATCHER, name, text, full, source=full, env_files=env_files,
                                            base_dir=os.path.realpath(self.path),
                                            meta=meta.text if meta is not None else None)
        except Exception:
            if meta is not None:
                await self._waiting(name, meta, f"project '{name}' was not made from {full} (see its error); "
                                                 "the meta is imported with it")
            raise
        log.info("project created from file", project=name, file=full, meta=meta.full if meta else None)
        if meta is not None:
            await self._record(meta.full, name, meta.digest, "applied", None, None)

    async def _meta_file(self, name: str) -> MetaFile | None:
        """The project's meta file as it is now (None when there is none)."""
        for filename in meta_names(name):
            meta = await self._read_meta(os.path.join(self.path, filename))
            if meta is not None:
                return meta
        return None

    async def _read_meta(self, full: str) -> MetaFile | None:
        from mariposa.meta_manifest import parse_meta

        try:
            text = await trio.to_thread.run_sync(read_manifest_file, self.path, full)
        except FileNotFoundError:
            return None
        except (OSError, Unreadable) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            error = MariposaError(f"{full}: not read: {reason}")
            return MetaFile(full, _digest("unreadable: " + error.message), error=error)
        digest = _digest(text)
        try:
            await trio.to_thread.run_sync(parse_meta, text, full)
        except ManifestError as exc:
            return MetaFile(full, digest, text, translate(exc))
        return MetaFile(full, digest, text)

    async def _consider_meta(self, name: str, filename: str) -> None:
        full = os.path.join(self.path, filename)
        meta = await self._read_meta(full)
        if meta is None:
            await self._meta_removed(name, full)
            return
        if await self.ctx.store.call(file_store.already_seen, full, meta.digest):
            return
        first = os.path.join(self.path, meta_names(name)[0])
        if full != first and await trio.Path(first).exists():
            await self._refused(name, full, meta.digest, MariposaError(
                f"{full} is ignored: project '{name}' has its meta in {first} (remove one of them)"))
            return
        if meta.error is not None:
            await self._refused(name, full, meta.digest, meta.error)
            return
        project = await self._project(name)
        manifest = await self._manifest_beside(name)
        if project is None:
            if manifest is None:
                await self._waiting(name, meta, f"project '{name}' does not exist: {name}.yaml is not in "
                                                f"{self.path}; the meta is imported when it comes")
                return
            # the manifest may have been refused for want of this meta: make the project now
            await self._consider(manifest, again=True)
            if not await self.ctx.store.call(file_store.already_seen, full, meta.digest):
                await self._waiting(name, meta, f"project '{name}' was not made from {manifest} (see its "
                                                 "error); the meta is imported with it")
            return
        if project.source not in [os.path.join(self.path, m) for m in manifest_names(name)]:
            origin = "the API" if project.source in (None, "api") else project.source
            await self._refused(name, full, meta.digest, MariposaError(
                f"project '{name}' is managed through {origin}, not by a file beside {full}; the meta file "
                "is ignored (use 'mariposa meta import')"))
            return
        await self._import_meta(name, project, meta)
        status = await self.ctx.store.call(file_store.file_status, name)
        if manifest is not None and status is not None and status["state"] in ("invalid", "refused"):
            await self._consider(manifest, again=True)  # it may have been waiting for a key just set

    async def _import_meta(self, name: str, project: ProjectRow, meta: MetaFile) -> None:
        """The keys the file names set to its values (like ``meta import --force``): the ones
        whose value differs are changed, and roll out as ``meta set`` does."""
        if meta.error is not None:
            await self._refused(name, meta.full, meta.digest, meta.error)
            return
        try:
            result = await self.control.meta.import_(WATCHER, project.id, meta.text, meta.full, force=True)
        except StoreUnavailable:
            raise
        except Exception as exc:
            await self._refused(name, meta.full, meta.digest, translate(exc, f"importing {meta.full}"))
            return
        await self._record(meta.full, name, meta.digest, "applied", None, None)
        log.info("meta imported from file", project=name, file=meta.full, changed=result["imported"],
                 unchanged=len(result["unchanged"]), tasks=len(result["tasks"]))

    async def _waiting(self, name: str, meta: MetaFile, why: str) -> None:
        """Said once per content of the file (it is recorded with its digest)."""
        await self._record(meta.full, name, meta.digest, "waiting", why, None)
        log.warning("meta file not imported yet", file=meta.full, project=name, reason=why)

    async def _manifest_beside(self, name: str) -> str | None:
        for filename in manifest_names(name):
            if await trio.Path(os.path.join(self.path, filename)).exists():
                return filename
        return None

    async def _meta_removed(self, name: str, full: str) -> None:
        known = await self.ctx.store.call(file_store.known, self.path)
        if known.get(full) in (None, "removed"):
            return
        await self._record(full, name, "", "removed", None, None)
        log.info("meta file removed: the project's meta is kept (use 'mariposa meta rm' to remove keys)",
                 project=name, file=full)

    async def _refused(self, name: str, full: str, digest: str, err: MariposaError) -> None:
        state = "invalid" if err.kind == "invalid-manifest" else "refused"
        details = err.details or None
        await self._record(full, name, digest, state, err.message, details)
        lines = [f"{d['file']}:{d['line']}:{d['column']}: {d['field']}: {d['message']}" for d in details or []]
        log.error("manifest file not applied", file=full, project=name, error=err.message, problems=lines)

    async def _record(self, path: str, project: str, digest: str, state: str, error: str | None, details) -> None:
        await self.ctx.store.call(file_store.record, path, project, digest, state, error, details)

    async def _removed(self, name: str, full: str) -> None:
        known = await self.ctx.store.call(file_store.known, self.path)
        if known.get(full) in (None, "removed"):
            return
        try:
            project = await self.ctx.store.call(goal_store.get_project, name)
        except MariposaError:
            project = None
        await self._record(full, name, "", "removed", None, None)
        if project is None or project.source != full:
            return
        if self.delete_removed:
            await self.control.projects.delete(WATCHER, project.id)
            log.info("manifest file removed: project deleted", project=name, file=full)
        else:
            await self.ctx.store.call(file_store.orphan, project.id, full)
            log.warning("manifest file removed: project kept, now orphaned from its file", project=name, file=full)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _settled_files(directory: str, settle: float) -> list[tuple[str, bool]]:
    """(name, unmodified for ``settle`` seconds) of each project file: a worker-thread call."""
    found = []
    for entry in sorted(os.listdir(directory)):
        if not watched(entry):
            continue
        try:
            found.append((entry, wall_clock() - os.stat(os.path.join(directory, entry)).st_mtime >= settle))
        except FileNotFoundError:
            continue
    return found


class Unreadable(Exception):
    """A file in the directory that is not a manifest we may read; the message says why."""


def read_manifest_file(directory: str, full: str, limit: int = MAX_FILE) -> str:
    """The text of a project file, read from a worker thread, refusing what is not one: a
    symbolic link that leads out of the directory (``ln -s /etc/shadow x.yaml`` must not publish
    the shadow file in error messages), anything but a regular file (a FIFO would block the read
    for ever, ``/dev/zero`` would never end), more than ``limit`` bytes, text that is not UTF-8.
    Raises FileNotFoundError when the file is gone."""
    real = os.path.realpath(full)
    root = os.path.realpath(directory)
    if os.path.commonpath([real, root]) != root:
        raise Unreadable("it is a symbolic link that leads out of the directory")
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("it is not a regular file")
        if info.st_size > limit:
            raise Unreadable(f"it is larger than the {limit // 1024} KiB a manifest may be")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Unreadable(f"it is larger than the {limit // 1024} KiB a manifest may be")
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"it is not UTF-8 text (byte {exc.start})") from None
