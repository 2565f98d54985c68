"""The one protocol every compute driver implements: Docker, LXC, QEMU and the in-memory fake.

Why one protocol: the daemon never talks to a runtime except through this, so the planner, the
queue, the health checks and the tests work the same on every runtime, and a new runtime is one
module plus a green run of the contract suite (``tests/contract/``), which is written against
this protocol only.

What a driver owes the rest of Mariposa:

- **States in one vocabulary.** Each driver maps its runtime's own states into
  ``InstanceState``; no runtime's strings ("created", "dead", "RUNNING", ...) leave the driver.
- **Identity on the instance.** Every instance carries the labels of ``CreateRequest.labels``
  (owner, project, service, instance id, version, spec hash) on the runtime itself, so a new
  driver object (a daemon restart) rebuilds the same inventory from the runtime alone.
- **``compute_type`` stamped** on every ``Instance`` the driver reports, so whatever acts on an
  instance later finds its driver from the instance, never from a default.
- **Idempotent operations by instance id**, because a step is replayed after a crash.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from mariposa.model import (
    LABEL_CREATED,
    LABEL_IMAGE,
    LABEL_INSTANCE,
    LABEL_PROJECT,
    LABEL_PROJECT_NAME,
    LABEL_RUN,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    CreateRequest,
    Instance,
    InstanceState,
    InstanceStats,
    VolumeInfo,
)

__all__ = [
    "AuthFailed", "Driver", "DriverError", "DriverEvent", "ImageNotFound", "InstanceState", "LogLine", "MAX_LOG_LINE",
    "PullFailed", "PullProgress", "RegistryAuth", "RuntimeUnavailable", "VolumeInUse", "identity_from_labels",
]

# A line longer than this comes out in pieces of this size: a follower holds at most one piece
# of each instance's output, whatever a program prints without a newline.
MAX_LOG_LINE = 64 * 1024


def identity_from_labels(labels: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``Instance`` fields an instance's labels carry (``CreateRequest.labels``); None for
    something that has no instance label (not Mariposa's). Every driver rebuilds identity this
    way, from the runtime alone, which is why it survives a daemon restart."""
    instance_id = labels.get(LABEL_INSTANCE)
    if not instance_id:
        return None
    fields: dict[str, Any] = {
        "id": instance_id,
        "project_id": labels.get(LABEL_PROJECT, ""),
        "project_name": labels.get(LABEL_PROJECT_NAME, ""),
        "service": labels.get(LABEL_SERVICE, ""),
        "spec_hash": labels.get(LABEL_SPEC_HASH, ""),
        "version_id": labels.get(LABEL_VERSION, ""),
        "image": labels.get(LABEL_IMAGE, ""),
        "run_id": labels.get(LABEL_RUN) or None,
    }
    try:
        fields["created"] = float(labels[LABEL_CREATED])
    except (KeyError, ValueError):
        pass  # the driver knows when the runtime made it
    return fields


class DriverError(Exception):
    """A runtime refused or failed an operation; the message is shown to the user as is."""


class ImageNotFound(DriverError):
    """The image (or VM template) is not on this host."""


class PullFailed(DriverError):
    """The registry (or the runtime on its way there) refused a pull; the message is the
    registry's own, so the user sees what to fix (a name, a tag, credentials)."""


class AuthFailed(DriverError):
    """The registry refused the credentials of a login; the message is the registry's own."""


class VolumeInUse(DriverError):
    """A volume an instance still mounts was asked to go."""


class RuntimeUnavailable(DriverError):
    """The runtime does not answer at all (daemon down, socket missing)."""


@attrs.frozen
class DriverEvent:
    """Something changed on the runtime. The daemon uses events only as wake-up calls (it always
    plans from a full inventory), but they must still be exact: ``cursor`` lets a consumer
    resume after a reconnect with no event lost and none delivered twice.

    ``action`` is one vocabulary for all drivers: at least create | start | die | kill | stop |
    destroy (a runtime may add its own, such as Docker's exec_start; they wake the daemon too).
    A ``die`` carries the exit code when the runtime knows it.
    ``cursor`` is opaque: only the driver that made it may read it (pass it to ``events``).
    """

    action: str
    instance_id: str | None
    project_id: str | None
    service: str | None
    exit_code: int | None = None
    cursor: str | None = None
    time: float | None = None  # epoch seconds the runtime stamped it, when it does (the daemon's event lag)


@attrs.frozen
class RegistryAuth:
    """Credentials for one registry. The password is kept out of ``repr`` so that no log line,
    traceback or error message that shows the object shows it."""

    server: str  # the registry's host[:port], as in the image reference ("docker.io" for Docker Hub)
    username: str
    password: str = attrs.field(repr=False)


@attrs.frozen
class PullProgress:
    """One line of a pull's progress, as a runtime tells it: ``layer`` is the layer (or other
    part) it is about, None for the image as a whole; ``detail`` is e.g. "1.2MB/3.4MB"."""

    image: str
    status: str
    layer: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "status": self.status, "layer": self.layer, "detail": self.detail}


Progress = Callable[[PullProgress], Awaitable[None]]


@attrs.frozen
class LogLine:
    """One line of an instance's output (stdout and stderr alike), without its newline, and when
    the runtime took it (epoch seconds). Lines, not byte chunks, because whoever merges several
    instances' output must never cut one line in two, and the time because ``--timestamps`` shows
    it and a follower that re-attaches after a restart goes on from the last line it had."""

    when: float
    line: bytes


class Driver(Protocol):
    """One runtime. Every method that names an instance takes the ``Instance`` the driver itself
    reported (it carries the runtime's id); none of them keeps state that a new driver object over
    the same runtime would not rebuild from the runtime."""

    compute_type: str

    async def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` when the runtime does not answer; cheap, for start-up."""
        ...

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        """Make the project's network if it is missing (idempotent): one network per project
        across runtimes, so its instances reach each other by service name."""
        ...

    async def remove_network(self, project_id: str, project_name: str = "") -> list[str]:
        """Remove the project's network, and the networks the project called ``project_name``
        made for others to join (``spec.networks``, not external) that no instance uses any more;
        a network already gone is not an error. Never an external network. Returns one line per
        network kept because instances (of other projects) are still on it, naming them."""
        ...

    async def network_exists(self, name: str) -> bool:
        """Whether the runtime has a network of this name now (an external network a manifest
        names must, before a version is made with it)."""
        ...

    async def volumes(self, project_name: str) -> list[VolumeInfo]:
        """The named volumes of the project called ``project_name``, made by this owner. Volumes
        are created by ``create`` for the instances that mount them, labelled with the project's
        name and theirs, and kept through every instance change and ``remove_network``."""
        ...

    async def remove_volume(self, project_name: str, volume: str) -> None:
        """Remove one of the project's named volumes and its data. Raises ``VolumeInUse`` while
        an instance (running or stopped) mounts it; a volume that is not there is no error."""
        ...

    async def resolve_image(self, image: str) -> str:
        """The content id of ``image`` as the host has it now; a version records it so a tag
        moved later never changes what the version runs. Raises ``ImageNotFound``."""
        ...

    async def pull(self, image: str, auth: RegistryAuth | None, progress: Progress | None = None) -> None:
        """Fetch ``image`` from its registry onto the host (again, when it is there: a moved tag
        is picked up), with ``auth`` when given, calling ``progress`` with each line of progress.
        A reference without a tag or digest means ``:latest`` (never "every tag"). Raises
        ``PullFailed`` with the registry's message. Never blocks the caller's event loop, and a
        cancelled pull stops (what the runtime had already fetched may stay)."""
        ...

    async def login(self, auth: RegistryAuth) -> None:
        """Check ``auth`` against its registry; raises ``AuthFailed`` with the registry's message
        when it refuses them. Nothing is stored by the runtime: Mariposa keeps the credentials."""
        ...

    async def create(self, req: CreateRequest) -> Instance:
        """Create and start one instance, on its project's network and on each of
        ``req.spec.networks``: an external one must exist (``DriverError`` naming it otherwise), a
        project's own is made on first use (``shared_network_name``, labelled with the owner, the
        project's name and the network's), and on those the instance answers to
        SERVICE.PROJECT for every project's instances there. On failure leave nothing behind (a half-made instance
        would be adopted by nobody). Replaying a create with the same instance id returns the
        instance already made instead of a second one."""
        ...

    async def start(self, inst: Instance) -> None:
        """Start a stopped (or never started) instance; starting a running one is a no-op. An
        instance that no longer exists raises ``DriverError``."""
        ...

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        """Ask the instance to stop (SIGTERM or its runtime's equivalent) and kill it once
        ``timeout`` seconds have passed: None means the instance's own stop timeout (the spec's
        ``stop_timeout``, else the runtime's default), negative means wait for ever. Stopping a
        stopped or removed instance is a no-op."""
        ...

    async def signal(self, inst: Instance, name: str) -> None:
        """Send signal ``name`` (``SIGHUP``, or a number as text) to the instance's main process,
        leaving it running: live mdata tells a process its files changed (mdata/keeper.py). A
        stopped instance raises ``DriverError``; one that is gone is not an error."""
        ...

    async def remove(self, inst: Instance) -> None:
        """Remove, stopping first if needed; removing what is already gone is not an error."""
        ...

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        """Every instance this daemon (owner) has on the runtime, optionally one project's, in
        any state; rebuilt from the runtime and its labels alone."""
        ...

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        """Instance events of this owner, as they happen.

        ``since=None``: every event after this call (the subscription starts when ``events`` is
        called, not when it is first iterated, so a caller never races its own actions).
        ``since=cursor``: every event after the one that carried ``cursor``, each once, even
        those that happened while nobody listened (within what the runtime keeps).

        The iterator never ends quietly: when the runtime's stream breaks it raises
        ``RuntimeUnavailable``, and the caller re-subscribes with its last cursor.
        """
        ...

    async def exec(
        self, inst: Instance, argv: list[str], timeout: float, user: str | None = None
    ) -> tuple[int, bytes]:
        """Run ``argv`` inside a running instance, as ``user`` (NAME, UID or UID:GID; the
        instance's own user when None); (exit code, stdout and stderr together). For command
        health checks. Raises ``trio.TooSlowError`` past ``timeout``, ``DriverError`` when the
        instance cannot run it (not running, gone)."""
        ...

    async def address(self, inst: Instance) -> str | None:
        """The instance's address on its project network now; None when it has none (stopped)."""
        ...

    def logs(
        self, inst: Instance, since: float | None = None, tail: int | None = None, follow: bool = False
    ) -> AsyncGenerator[LogLine, None]:
        """The instance's output (stdout and stderr interleaved), line by line in the order it
        was written: the lines taken at or after ``since`` (epoch seconds), of those only the last
        ``tail``; with ``follow`` the iterator goes on with new lines until the instance stops.
        A stopped instance's output stays readable until it is removed. A line longer than
        ``MAX_LOG_LINE`` comes in pieces; a last line without a newline comes as it is. An
        instance that does not exist raises ``DriverError``."""
        ...

    async def stats(self, inst: Instance) -> InstanceStats | None:
        """One reading of a running instance's counters (CPU time, memory, network, block I/O),
        cheap enough to take for a hundred instances every ``metrics_interval``; None for an
        instance that is not running or gone (no error: it may have stopped a moment ago)."""
        ...

    async def aclose(self) -> None:
        """Release connections; instances keep running."""
        ...
