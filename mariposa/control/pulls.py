"""Images onto the host when a version is made: each service's ``pull`` policy decides whether its
image is pulled (``missing``: when the host lacks it; ``always``: every time; ``never``: a
missing image refuses the version), then every image is resolved to the content id the version
pins.

Why at version time and not when an instance is created: the version must pin a content id, and a
pull that fails (a typo, a tag that does not exist, a registry that wants credentials) must
refuse the change with the registry's own words while nothing has changed yet, instead of
turning into instances that fail one by one later. Pulls of different images run side by side;
each is a driver call that is trio I/O, so it blocks nothing and a cancelled request (the CLI
hung up) cancels it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import trio

from mariposa.context import Context
from mariposa.drivers.base import DriverError, ImageNotFound, PullFailed, PullProgress
from mariposa.errors import BadRequest, NotFound, RegistryRefused
from mariposa.model import ProjectSpec, ServiceSpec
from mariposa.store import events as event_store

# A front end's way to show progress ({"pull": {...}}); called one line at a time, never twice at once.
Report = Callable[[dict], Awaitable[None]]

# Per layer, a line that only moves a byte count is passed on at most this often; a change of
# status ("Download complete", "Pull complete") always is.
PROGRESS_EVERY = 0.5


class ProgressFilter:
    """Keeps a pull's progress readable: the Engine reports every few kilobytes of every layer."""

    def __init__(self, every: float = PROGRESS_EVERY) -> None:
        self.every = every
        self.last: dict[tuple[str, str | None], tuple[str, float]] = {}

    def admit(self, p: PullProgress, now: float) -> bool:
        key = (p.image, p.layer)
        before = self.last.get(key)
        if before is not None and before[0] == p.status and now - before[1] < self.every:
            return False
        self.last[key] = (p.status, now)
        return True


def _policy(services: Iterable[ServiceSpec]) -> dict[str, str]:
    """Per image, the policy that asks most of the services naming it (always > missing > never):
    one service's `never` must not stop another's `missing` from getting the image."""
    rank = {"never": 0, "missing": 1, "always": 2}
    out: dict[str, str] = {}
    for svc in services:
        if rank[svc.pull] >= rank.get(out.get(svc.image, "never"), 0):
            out[svc.image] = svc.pull
    return out


async def ensure_images(
    ctx: Context, spec: ProjectSpec, *, skip: Iterable[str] = (), report: Report | None = None,
    author: str | None = None, project_id: str | None = None,
) -> dict[str, str | None]:
    """{image: content id} for each image of ``spec`` not in ``skip`` (images whose pins the
    caller keeps), pulling first as the services' policies say. Raises (changing nothing
    of Mariposa's) when a pull fails or a `never` image is missing."""
    skipped = set(skip)
    services = [s for s in spec.services if s.image not in skipped]
    policies = _policy(services)
    drivers = {s.image: ctx.driver_for(s.compute_type) for s in services}
    found: dict[str, str | None] = {}
    to_pull: list[str] = []
    for image, policy in policies.items():
        if policy == "always":
            to_pull.append(image)
            continue
        try:
            found[image] = await drivers[image].resolve_image(image)
        except ImageNotFound:
            if policy == "never":
                names = ", ".join(s.name for s in services if s.image == image)
                raise NotFound(f"image '{image}' (service {names}) is not on this host, and 'pull: never' "
                               "forbids pulling it: nothing was changed") from None
            to_pull.append(image)
    if to_pull:
        await _pull_all(ctx, drivers, to_pull, report, author, project_id)
        for image in to_pull:
            try:
                found[image] = await drivers[image].resolve_image(image)
            except ImageNotFound as exc:  # removed between the pull and now: say so, change nothing
                raise NotFound(f"{exc} (it was pulled, then removed at once): nothing was changed") from None
    await vet(ctx, spec.services)
    return found


async def vet(ctx: Context, services: Iterable[ServiceSpec]) -> None:
    """Refuse, before anything changes, what a runtime knows its instances could never boot (a
    VM's disk image larger than its disk, a kernel that is not there: drivers/qemu.py ``vet``)."""
    problems = []
    for svc in services:
        check = getattr(ctx.driver_for(svc.compute_type), "vet", None)
        if check is not None and (problem := await check(svc)):
            problems.append(f"service {svc.name}: {problem}")
    if problems:
        raise BadRequest("; ".join(problems) + ": nothing was changed")


async def _pull_all(
    ctx: Context, drivers: dict, images: list[str], report: Report | None, author: str | None,
    project_id: str | None,
) -> None:
    """Pull ``images`` side by side; the first failure (in the order given) is the one raised,
    once every pull has ended, so no pull is left running behind the refusal."""
    failures: dict[str, Exception] = {}
    shown = ProgressFilter()
    one_at_a_time = trio.Lock()  # a report is a write on one stream: trio allows one writer

    async def progress(p: PullProgress) -> None:
        if report is not None and shown.admit(p, time.monotonic()):
            async with one_at_a_time:
                await report({"pull": p.to_json()})

    async def one(image: str) -> None:
        t0 = time.monotonic()
        auth = ctx.credentials.auth_for(image)
        try:
            await drivers[image].pull(image, auth, progress)
        except DriverError as exc:
            failures[image] = exc
            await _record(ctx, "image.pull.failed", f"pull of {image} failed: {exc}", author, project_id)
            return
        await _record(ctx, "image.pull", f"pulled {image} in {time.monotonic() - t0:.1f} s", author, project_id)

    async with trio.open_nursery() as nursery:
        for image in images:
            nursery.start_soon(one, image)
    for image in images:
        if image in failures:
            exc = failures[image]
            if isinstance(exc, PullFailed):
                raise RegistryRefused(f"{exc}; nothing was changed") from None
            raise exc


async def _record(ctx: Context, kind: str, message: str, author: str | None, project_id: str | None) -> None:
    await ctx.store.call(lambda db: event_store.record(db, kind, message, project_id=project_id, author=author))
