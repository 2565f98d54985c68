"""The small protocol every compute driver implements.

The daemon never talks to a runtime except through this, so the reconciler, the queue and the
tests can swap the real Docker driver for the in-memory fake one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import attrs

from mariposa.model import CreateRequest, Instance


class DriverError(Exception):
    """A runtime refused or failed an operation; the message is shown to the user as is."""


class ImageNotFound(DriverError):
    pass


class RuntimeUnavailable(DriverError):
    """The runtime does not answer at all (daemon down, socket missing)."""


@attrs.frozen
class DriverEvent:
    """Something changed on the runtime; the reconciler only uses it as a wake-up call."""

    action: str  # create | start | die | stop | destroy | kill | oom | ...
    instance_id: str | None
    project_id: str | None
    service: str | None
    exit_code: int | None = None


class Driver(Protocol):
    compute_type: str

    async def ping(self) -> None: ...

    async def ensure_network(self, project_id: str, project_name: str) -> None: ...

    async def remove_network(self, project_id: str) -> None: ...

    async def check_image(self, image: str) -> str:
        """Return the image's content id; raise ImageNotFound when it is not on the host."""
        ...

    async def create(self, req: CreateRequest) -> Instance:
        """Create and start one instance; on failure leave nothing behind."""
        ...

    async def start(self, inst: Instance) -> None: ...

    async def stop(self, inst: Instance, timeout: int | None = None) -> None: ...

    async def remove(self, inst: Instance) -> None:
        """Remove, stopping first if needed; removing what is already gone is not an error."""
        ...

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        """Every instance this daemon owns (optionally one project's), in any state."""
        ...

    def events(self) -> AsyncIterator[DriverEvent]: ...

    async def aclose(self) -> None: ...
