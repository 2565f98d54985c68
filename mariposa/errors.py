"""Errors a user can act on, and the one place every other exception is translated into them.

Each ``MariposaError`` carries the HTTP status the API answers with and the CLI exit code that
scripts can test, so both ends agree on what went wrong. The tree::

    MariposaError (400, exit 1)       bad input: refused, nothing changed
    ├── BadRequest
    ├── InvalidManifest (422)          ← ManifestError (details: file, line, column, field)
    ├── ExportRefused (422)            export --strict: fields the target cannot represent (details)
    ├── ConfigError (mariposa.config)
    ├── Unauthorized (401, exit 9)     a remote caller's token is missing, wrong, expired or revoked
    ├── Forbidden (403)                the caller may not do this
    ├── NotFound (404, exit 4)         ← ImageNotFound
    ├── Conflict (409, exit 5)
    ├── RequestTimeout (408), PayloadTooLarge (413)   the control socket's bounds (api/http.py)
    ├── Busy (503, exit 3)             the control socket is at a bound shared by all: try again
    ├── TooManyFailures (429, exit 3)  an address with too many bad tokens: refused for a while
    ├── CertificateChanged (exit 10)   the CLI: a remote daemon's certificate is not the pinned one
    ├── StateDirLocked (409)           another daemon owns the state directory
    ├── TaskFailed (409, exit 6)       a task could not reach its goal (or a waited-for one did not)
    ├── DaemonUnreachable (503, exit 3) the CLI cannot reach the daemon
    ├── RegistryRefused (502, exit 1)  ← PullFailed, AuthFailed: the registry said no (its words)
    ├── RuntimeUnavailable (503, exit 7) ← drivers' DriverError / RuntimeUnavailable
    ├── StoreUnavailable (503, exit 8) ← SQLite's I/O errors (store/db.py): the store cannot be
    │   ├── StoreFull (507)              ← SQLITE_FULL: its disk is full        written just now;
    │   └── StoreBusy (503)              ← SQLITE_BUSY: another process holds   nothing was changed
    │                                      its lock past the busy timeout
    ├── TimedOut (504, exit 1)         ← trio.TooSlowError
    └── InternalError (500, exit 1)    ← anything else: a bug; the message carries an error id
                                         that the daemon's log line carries too

``translate`` is the boundary (after httpx's ``map_httpcore_exceptions``): the control layer
passes every exception through it, so no traceback and no runtime's raw exception ever reaches
a caller.
"""

from __future__ import annotations

# uuid, trio and structlog are imported where they are used (``translate`` runs in the daemon
# only): the CLI imports this module on every command and should not pay for them.


class MariposaError(Exception):
    status = 400
    exit_code = 1
    kind = "bad-request"

    def __init__(self, message: str, *, details: list | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict:
        return {"error": self.kind, "message": self.message, "details": self.details}


class BadRequest(MariposaError):
    pass


class InvalidManifest(MariposaError):
    status = 422
    kind = "invalid-manifest"


class ExportRefused(MariposaError):
    """``export --strict`` and a field the target cannot represent: nothing was exported."""

    status = 422
    kind = "export-refused"


class Unauthorized(MariposaError):
    """A remote call without a valid token (missing, malformed, wrong, expired or revoked): the
    message never says which, nor repeats the token."""

    status = 401
    exit_code = 9
    kind = "unauthorized"


class Forbidden(MariposaError):
    status = 403
    kind = "forbidden"


class NotFound(MariposaError):
    status = 404
    exit_code = 4
    kind = "not-found"


class Conflict(MariposaError):
    status = 409
    exit_code = 5
    kind = "conflict"


class RequestTimeout(MariposaError):
    status = 408
    kind = "request-timeout"


class PayloadTooLarge(MariposaError):
    status = 413
    kind = "too-large"


class Busy(MariposaError):
    status = 503
    exit_code = 3  # as DaemonUnreachable: scripts that retry when the daemon is away retry this too
    kind = "busy"


class TooManyFailures(MariposaError):
    """An address that showed too many bad tokens is refused for a while (``retry_after`` s),
    right tokens included: the remote API's answer to guessing (api/remote.py)."""

    status = 429
    exit_code = 3
    kind = "too-many-requests"

    def __init__(self, message: str, *, details: list | None = None, retry_after: int = 60):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class CertificateChanged(MariposaError):
    """The CLI: a remote daemon shows another certificate than the one pinned for it."""

    exit_code = 10
    kind = "certificate-changed"


class StateDirLocked(MariposaError):
    status = 409
    kind = "state-dir-locked"


class TaskFailed(MariposaError):
    """The task cannot reach its goal; the message says why, for the user."""

    status = 409
    exit_code = 6
    kind = "task-failed"


class DaemonUnreachable(MariposaError):
    status = 503
    exit_code = 3
    kind = "unreachable"


class RegistryRefused(MariposaError):
    """A registry refused a pull or a login; the message is the registry's own. Nothing was
    changed."""

    status = 502
    kind = "registry-refused"


class RuntimeUnavailable(MariposaError):
    status = 503
    exit_code = 7
    kind = "runtime-unavailable"


class StoreUnavailable(MariposaError):
    """The daemon's own store cannot be read or written just now. Nothing was changed, what was
    stored is intact, and the same request succeeds once the cause is gone: the background loops
    (reconciler, executor, health, watched directory) wait and retry instead of stopping."""

    status = 503
    exit_code = 8
    kind = "store-unavailable"


class StoreFull(StoreUnavailable):
    status = 507  # Insufficient Storage
    kind = "store-full"


class StoreBusy(StoreUnavailable):
    kind = "store-busy"


class TimedOut(MariposaError):
    status = 504
    kind = "timed-out"


class InternalError(MariposaError):
    status = 500
    kind = "internal"


ERROR_KINDS = {cls.kind: cls for cls in (
    MariposaError, BadRequest, InvalidManifest, Unauthorized, Forbidden, TooManyFailures, CertificateChanged,
    NotFound, Conflict, RequestTimeout, PayloadTooLarge, Busy,
    StateDirLocked, TaskFailed,
    DaemonUnreachable, RegistryRefused, RuntimeUnavailable, StoreUnavailable, StoreFull, StoreBusy, TimedOut,
    InternalError,
)}


def translate(exc: BaseException, doing: str = "") -> MariposaError:
    """The ``MariposaError`` for any exception. Unexpected ones are logged here, with their
    traceback and an error id, and leave as an ``InternalError`` naming only that id: an
    exception's text can hold anything (an environment value, a path), so it stays in the log."""
    if isinstance(exc, MariposaError):  # the common case, before the imports (every 404 comes here twice)
        return exc
    import uuid

    import structlog
    import trio

    from mariposa.drivers.base import AuthFailed, DriverError, ImageNotFound, PullFailed, VolumeInUse
    from mariposa.manifest.errors import ManifestError

    if isinstance(exc, ManifestError):
        problems = [p.to_json() for p in exc.problems]
        file = exc.problems[0].file if exc.problems else "<manifest>"
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        return InvalidManifest(f"{file}: {count} in the manifest; nothing was changed", details=problems)
    if isinstance(exc, ImageNotFound):
        return NotFound(str(exc))
    if isinstance(exc, PullFailed | AuthFailed):
        return RegistryRefused(str(exc))
    if isinstance(exc, VolumeInUse):
        return Conflict(str(exc))
    if isinstance(exc, DriverError):  # the runtime refused, or does not answer at all
        return RuntimeUnavailable(f"runtime unavailable: {exc}")
    if isinstance(exc, trio.TooSlowError):
        return TimedOut(f"{doing or 'the operation'} timed out")
    error_id = uuid.uuid4().hex[:12]
    structlog.get_logger().error("unexpected error", error_id=error_id, doing=doing, error_type=type(exc).__name__,
                                 exc_info=exc)
    return InternalError(f"internal error {error_id} ({type(exc).__name__}) while {doing or 'serving a request'}; "
                         f"the daemon's log has the details under error_id={error_id}")
