"""An in-memory driver for unit, property, scale and contract tests: the whole protocol, no runtime.

It keeps the contract honestly, so the contract suite (``tests/contract/``) runs on it unchanged:

- **Identity by labels.** A ``FakeRuntime`` plays the runtime: it keeps each instance's labels,
  its state and output, the networks, the images and the event log. A new ``FakeDriver`` over the
  same runtime (a daemon restart) rebuilds the same inventory from the labels. A driver made with
  an ``owner`` sees only the instances carrying that owner label; without one, all of them.
- **Programs from the command.** An instance's command is read as a tiny shell script (``sh -c
  SCRIPT``, or the argv itself), statement by statement (``;``, ``&&`` or new lines between):
  ``echo WORDS`` (``>&2`` allowed) prints a line of output, ``trap "" TERM`` makes it ignore
  SIGTERM, ``exit N`` exits with N, ``true``/``:`` do nothing; any other statement is where the
  program runs until stopped (a ``while`` loop busy, using one core: ``stats``). A script that
  runs out of statements exits 0; no command runs until stopped. An image in ``crash_images``
  exits 1 right after every start.
- **Exec** runs ``argv`` through the same reading, except that ``sleep N`` sleeps N seconds and
  any other command exits 127, "not found". ``exec_handler`` replaces that when a test needs more.
- **A registry** in the runtime: ``registry`` maps the images it holds to their content ids, and
  ``registry_users`` the hosts that want credentials to the (username, password) they take. A pull
  copies an image (and its id) onto the host; a moved tag is a new id in ``registry``.
- **Stop** sends "SIGTERM": a program that honours it exits 0 at once; one that ignores it is
  killed (exit code 137) once the timeout has passed, as Docker does.
- **Events** are kept in one list; a cursor is a position in it.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import attrs
import trio

from mariposa.clock import wall_clock
from mariposa.drivers.base import (
    MAX_LOG_LINE,
    AuthFailed,
    DriverError,
    DriverEvent,
    ImageNotFound,
    LogLine,
    Progress,
    PullFailed,
    PullProgress,
    RegistryAuth,
    VolumeInUse,
    identity_from_labels,
)
from mariposa.model import (
    LABEL_INSTANCE,
    LABEL_NETWORK,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_PROJECT_NAME,
    LABEL_SERVICE,
    LABEL_VOLUME,
    CreateRequest,
    Instance,
    InstanceState,
    InstanceStats,
    VolumeInfo,
    volume_name,
)

DEFAULT_STOP_TIMEOUT = 10  # seconds, Docker's default
KILLED = 137  # 128 + SIGKILL

ExecHandler = Callable[[Instance, list[str]], Awaitable[tuple[int, bytes]]]


@attrs.frozen
class Program:
    """What a fake instance does, read from its command (see the module docstring)."""

    output: tuple[bytes, ...] = ()  # lines printed when it starts
    exit_code: int | None = None  # exits at once with this; None: runs until stopped
    ignores_term: bool = False
    sleeps: float = 0.0  # exec only: seconds slept before exiting
    busy: bool = False  # a ``while`` loop: one core of CPU while it runs (``stats``)


def _statements(script: str) -> list[list[str]]:
    out = []
    for line in script.replace("&&", ";").replace("\n", ";").split(";"):
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        if words:
            out.append(words)
    return out


def read_program(argv: tuple[str, ...] | list[str] | None, *, exec_: bool = False) -> Program:
    if not argv:
        return Program()
    script = argv[2] if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh") and argv[1] == "-c" else shlex.join(argv)
    output: list[bytes] = []
    ignores_term = False
    slept = 0.0
    for words in _statements(script):
        verb, args = words[0], [w for w in words[1:] if w not in (">&2", "1>&2")]
        if verb == "echo":
            output.append((" ".join(args) + "\n").encode())
        elif verb == "trap" and args[:1] == [""] and "TERM" in args[1:]:
            ignores_term = True
        elif verb == "exit":
            return Program(tuple(output), int(args[0]) if args else 0, ignores_term, slept)
        elif verb in ("true", ":"):
            pass
        elif exec_ and verb == "sleep":
            slept += float(args[0]) if args else 0.0
        elif exec_:
            output.append(f"sh: {verb}: not found\n".encode())
            return Program(tuple(output), 127, ignores_term, slept)
        else:  # the program runs from here on
            return Program(tuple(output), None, ignores_term, busy=verb == "while")
    return Program(tuple(output), 0, ignores_term, slept)


FAKE_UIDS = {"root": "0", "nobody": "65534"}  # what `id -u` prints for a user name


@attrs.define
class _Box:
    """One instance as the fake runtime keeps it; everything about its identity is in labels."""

    runtime_id: str
    name: str
    labels: dict[str, str]
    program: Program
    stop_timeout: int | None
    user: str | None = None  # the service's `user`, for exec
    volumes: tuple[str, ...] = ()  # runtime names of the named volumes it mounts
    networks: tuple[str, ...] = ()  # runtime names of the networks it joined besides its project's
    state: InstanceState = InstanceState.CREATING
    exit_code: int | None = None
    output: list[tuple[float, bytes]] = attrs.field(factory=list)  # (when, line)
    secrets_dir: str | None = None  # the host directory mounted at /run/secrets (vault/delivery.py)
    mdata_dir: str | None = None  # the host directory mounted at /run/mariposa/mdata (mdata/files.py)
    signals: list[str] = attrs.field(factory=list)  # every signal sent to it while it ran, in order
    environment: dict[str, str] = attrs.field(factory=dict)  # as rendered when it was made (tests read it)
    # what ``stats`` reports: a load in cores that CPU time accrues at while it runs (``set_load``)
    cpu_load: float = 0.0
    memory: int = 4 << 20
    memory_limit: int | None = None
    cpu_ns: float = 0.0
    cpu_read_at: float | None = None  # trio time of the last reading
    # its last report and the (state, exit code) it was made for: a listing of 10,000 boxes
    # builds only the reports of those that changed (labels and name never do)
    reported: tuple[tuple, Instance] | None = None


class FakeRuntime:
    """What a runtime keeps while drivers come and go: instances, networks, images, events."""

    def __init__(self, images: tuple[str, ...] = ("busybox",), crash_images: tuple[str, ...] = ()):
        self.images = set(images)
        self.crash_images = set(crash_images)  # instances of these exit right after start
        self.boxes: dict[str, _Box] = {}  # by runtime id
        self.networks: set[str] = set()  # project ids: each project's own network
        self.shared: dict[str, dict[str, str]] = {}  # runtime name -> labels: other networks (external or a project's)
        self.volumes: dict[str, dict[str, str]] = {}  # runtime name -> labels
        self.events: list[tuple[str, DriverEvent]] = []  # (owner, event); cursor = position
        self.epoch: float | None = None  # wall time at trio time 0, for stats readings (set at the first)
        self.image_ids: dict[str, str] = {}  # content ids of pulled images (others: from the name)
        self.registry: dict[str, str] = {}  # image -> content id, what a pull can fetch
        self.registry_users: dict[str, tuple[str, str]] = {}  # registry host -> (username, password)
        self.pulls: list[str] = []  # every pull asked for, in order
        self.silent_registries: set[str] = set()  # hosts whose pulls never end (until cancelled)
        self._counter = itertools.count(1)
        self._changed = trio.Event()

    def new_runtime_id(self) -> str:
        return f"fake{next(self._counter):08d}"

    def changed(self) -> None:
        """Wake whoever waits for events or output."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


class FakeDriver:
    def __init__(
        self, images: tuple[str, ...] = ("busybox",), latency: float = 0.0, crash_images: tuple[str, ...] = (),
        *, runtime: FakeRuntime | None = None, owner: str | None = None, compute_type: str = "docker",
        exec_handler: ExecHandler | None = None,
    ):
        self.runtime = runtime if runtime is not None else FakeRuntime(images, crash_images)
        self.owner = owner
        self.compute_type = compute_type
        self.latency = latency
        self.exec_handler = exec_handler
        self.calls: list[tuple[str, str]] = []

    # ---- test hooks (not part of the protocol) ------------------------------------------------

    @property
    def instances(self) -> dict[str, Instance]:
        return {inst.id: inst for inst in self._report_all()}

    @property
    def networks(self) -> set[str]:
        return self.runtime.networks

    def print(self, instance_id: str, *lines: str) -> None:
        """The running program printed ``lines`` (a test hook, for output after the start)."""
        box = self._box_of(instance_id)
        assert box is not None and box.state == InstanceState.RUNNING, f"{instance_id} is not running"
        now = wall_clock()
        box.output.extend((now, (line + "\n").encode()) for line in lines)
        self.runtime.changed()

    def kill(self, instance_id: str, exit_code: int = KILLED) -> None:
        """The process died behind our back."""
        box = self._box_of(instance_id)
        if box is None:
            raise KeyError(instance_id)
        self._exit(box, exit_code)

    async def create_unstarted(self, req: CreateRequest) -> Instance:
        """An instance made but never started (as a crash between create and start leaves it)."""
        return self._report(self._make(req))

    # ---- plumbing -----------------------------------------------------------------------------

    def _mine(self, box: _Box) -> bool:
        return self.owner is None or box.labels.get(LABEL_OWNER) == self.owner

    def _box_of(self, instance_id: str) -> _Box | None:
        boxes = self.runtime.boxes.values()
        return next((b for b in boxes if b.labels[LABEL_INSTANCE] == instance_id and self._mine(b)), None)

    def _box(self, inst: Instance) -> _Box | None:
        box = self.runtime.boxes.get(inst.runtime_id)
        return box if box is not None and self._mine(box) else None

    def _report(self, box: _Box) -> Instance:
        key = (box.state, box.exit_code, self.compute_type)
        if box.reported is not None and box.reported[0] == key:
            return box.reported[1]
        inst = Instance(
            **identity_from_labels(box.labels) or {}, runtime_id=box.runtime_id, name=box.name, state=box.state,
            exit_code=box.exit_code if box.state == InstanceState.EXITED else None,
            address="127.0.0.1" if box.state == InstanceState.RUNNING else None, compute_type=self.compute_type,
        )
        box.reported = (key, inst)
        return inst

    def _report_all(self, project_id: str | None = None) -> list[Instance]:
        return [self._report(b) for b in self.runtime.boxes.values()
                if self._mine(b) and (project_id is None or b.labels[LABEL_PROJECT] == project_id)]

    def _emit(self, action: str, box: _Box, exit_code: int | None = None) -> None:
        labels = box.labels
        cursor = str(len(self.runtime.events) + 1)
        event = DriverEvent(action, labels[LABEL_INSTANCE], labels[LABEL_PROJECT], labels[LABEL_SERVICE],
                            exit_code, cursor)
        self.runtime.events.append((labels.get(LABEL_OWNER, ""), event))
        self.runtime.changed()

    def _make(self, req: CreateRequest) -> _Box:
        program = read_program(req.spec.command)
        if req.spec.image in self.runtime.crash_images:
            program = attrs.evolve(program, exit_code=1)
        joined = self._join(req)  # first: a missing external network leaves nothing made
        mounted = []
        for m in req.spec.volumes:
            if m.type == "volume" and m.source is not None:
                name = volume_name(req.project_name, m.source)
                self.runtime.volumes.setdefault(name, {**dict(m.labels), LABEL_OWNER: self.owner or "",
                                                       LABEL_PROJECT_NAME: req.project_name, LABEL_VOLUME: m.source})
                mounted.append(name)
        box = _Box(self.runtime.new_runtime_id(), req.name, req.labels(), program, req.spec.stop_timeout,
                   req.spec.user, tuple(mounted), joined, secrets_dir=req.secrets_dir, mdata_dir=req.mdata_dir,
                   environment=dict(req.spec.environment), cpu_load=1.0 if program.busy else 0.0,
                   memory_limit=req.spec.memory)
        self.runtime.boxes[box.runtime_id] = box
        self._emit("create", box)
        return box

    def _join(self, req: CreateRequest) -> tuple[str, ...]:
        """The runtime names of the networks the instance joins besides its project's: external
        ones must exist, the project's own are made (labelled) on first use."""
        names = []
        for ref in req.spec.networks:
            name = ref.runtime(req.project_name)
            labels = self.runtime.shared.get(name)
            if ref.external:
                if labels is None:
                    raise DriverError(f"external network {name} (network {ref.name!r} of the manifest) does not "
                                      "exist; create it first")
            elif labels is None:
                self.runtime.shared[name] = {LABEL_OWNER: self.owner or "", LABEL_PROJECT_NAME: req.project_name,
                                             LABEL_NETWORK: ref.name}
            elif (labels.get(LABEL_PROJECT_NAME), labels.get(LABEL_NETWORK)) != (req.project_name, ref.name):
                raise DriverError(f"network {name} exists and is not project {req.project_name}'s; remove or "
                                  "rename it")
            names.append(name)
        return tuple(names)

    def add_network(self, name: str) -> None:
        """A network made outside Mariposa (a test hook), for projects to join as external."""
        self.runtime.shared.setdefault(name, {})

    def _run(self, box: _Box) -> None:
        box.state, box.exit_code = InstanceState.RUNNING, None
        self._emit("start", box)
        now = wall_clock()
        box.output.extend((now, line) for line in box.program.output)
        if box.program.exit_code is not None:
            self._exit(box, box.program.exit_code)
        self.runtime.changed()

    def _exit(self, box: _Box, code: int) -> None:
        box.state, box.exit_code = InstanceState.EXITED, code
        self._emit("die", box, code)

    # ---- protocol -----------------------------------------------------------------------------

    async def ping(self) -> None:
        return None

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        self.runtime.networks.add(project_id)

    async def remove_network(self, project_id: str, project_name: str = "") -> list[str]:
        self.runtime.networks.discard(project_id)
        kept = []
        for name, labels in list(self.runtime.shared.items()):
            if not project_name or labels.get(LABEL_OWNER) != (self.owner or "") \
                    or labels.get(LABEL_PROJECT_NAME) != project_name or LABEL_NETWORK not in labels:
                continue
            users = sorted(b.name for b in self.runtime.boxes.values() if name in b.networks
                           and b.labels.get(LABEL_PROJECT_NAME) != project_name)  # its own: going anyway
            for box in self.runtime.boxes.values():
                if box.labels.get(LABEL_PROJECT_NAME) == project_name:
                    box.networks = tuple(n for n in box.networks if n != name)
            if users:
                kept.append(f"network {name} is kept, still in use by {', '.join(users)}")
            else:
                del self.runtime.shared[name]
        return kept

    async def network_exists(self, name: str) -> bool:
        return name in self.runtime.shared

    async def volumes(self, project_name: str) -> list[VolumeInfo]:
        out = []
        for name, labels in self.runtime.volumes.items():
            if labels.get(LABEL_PROJECT_NAME) == project_name and labels.get(LABEL_OWNER) == (self.owner or ""):
                users = tuple(sorted(b.name for b in self.runtime.boxes.values() if name in b.volumes))
                out.append(VolumeInfo(labels[LABEL_VOLUME], name, tuple(sorted(labels.items())), None, users))
        return sorted(out, key=lambda v: v.name)

    async def remove_volume(self, project_name: str, volume: str) -> None:
        name = volume_name(project_name, volume)
        users = [b.name for b in self.runtime.boxes.values() if name in b.volumes]
        if users:
            raise VolumeInUse(f"volume {volume} of project {project_name} is in use by {', '.join(sorted(users))}")
        self.runtime.volumes.pop(name, None)

    async def resolve_image(self, image: str) -> str:
        if image not in self.runtime.images:
            raise ImageNotFound(f"image '{image}' is not on this host")
        return self.runtime.image_ids.get(image) or "sha256:" + image.encode().hex()

    async def pull(self, image: str, auth: RegistryAuth | None, progress: Progress | None = None) -> None:
        from mariposa.registries import registry_of

        runtime = self.runtime
        runtime.pulls.append(image)
        if progress is not None:
            await progress(PullProgress(image, "Pulling from registry"))
        if registry_of(image) in runtime.silent_registries:
            await trio.sleep_forever()
        await trio.sleep(self.latency)
        wanted = runtime.registry_users.get(registry_of(image))
        if wanted is not None and (auth is None or (auth.username, auth.password) != wanted):
            raise PullFailed(f"pull {image}: unauthorized: authentication required")
        if image not in runtime.registry:
            raise PullFailed(f"pull {image}: manifest for {image} not found: manifest unknown")
        runtime.images.add(image)
        runtime.image_ids[image] = runtime.registry[image]
        if progress is not None:
            await progress(PullProgress(image, "Pull complete", "layer0", "1.0MB/1.0MB"))

    async def login(self, auth: RegistryAuth) -> None:
        wanted = self.runtime.registry_users.get(auth.server)
        if wanted is not None and (auth.username, auth.password) != wanted:
            raise AuthFailed(f"login to {auth.server}: login attempt failed with status: 401 Unauthorized")

    async def create(self, req: CreateRequest) -> Instance:
        await self.resolve_image(req.spec.image)
        await trio.sleep(self.latency)
        self.calls.append(("create", req.instance_id))
        box = self._box_of(req.instance_id)
        if box is None:  # else a replayed create: carry on with the instance already made
            box = self._make(req)
        if box.state != InstanceState.RUNNING:
            self._run(box)
        return self._report(box)

    async def start(self, inst: Instance) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("start", inst.id))
        box = self._box(inst)
        if box is None:
            raise DriverError(f"no such instance {inst.name}")
        if box.state != InstanceState.RUNNING:
            self._run(box)

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("stop", inst.id))
        box = self._box(inst)
        if box is None or box.state != InstanceState.RUNNING:
            return
        if not box.program.ignores_term:
            self._exit(box, 0)
            return
        grace = timeout if timeout is not None else (
            box.stop_timeout if box.stop_timeout is not None else DEFAULT_STOP_TIMEOUT
        )
        if grace < 0:
            await trio.sleep_forever()
        await trio.sleep(grace)
        if box.state == InstanceState.RUNNING and self.runtime.boxes.get(box.runtime_id) is box:
            self._emit("kill", box)
            self._exit(box, KILLED)

    async def signal(self, inst: Instance, name: str) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("signal", inst.id))
        box = self._box(inst)
        if box is None:
            return
        if box.state != InstanceState.RUNNING:
            raise DriverError(f"signal {inst.name} with {name}: it is not running")
        box.signals.append(name)

    async def remove(self, inst: Instance) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("remove", inst.id))
        box = self._box(inst)
        if box is None:
            return
        if box.state == InstanceState.RUNNING:
            self._exit(box, KILLED)
        del self.runtime.boxes[box.runtime_id]
        self._emit("destroy", box)

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        return self._report_all(project_id)

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        return self._events(len(self.runtime.events) if since is None else int(since))

    async def _events(self, position: int) -> AsyncIterator[DriverEvent]:
        while True:
            while position < len(self.runtime.events):
                owner, event = self.runtime.events[position]
                position += 1
                if self.owner is None or owner == self.owner:
                    yield event
            await self.runtime.wait_changed()

    async def exec(
        self, inst: Instance, argv: list[str], timeout: float, user: str | None = None
    ) -> tuple[int, bytes]:
        box = self._box(inst)
        if box is None or box.state != InstanceState.RUNNING:
            raise DriverError(f"exec in {inst.name}: instance is not running")
        if argv[:2] == ["id", "-u"]:  # the one program whose answer depends on the user
            who = (user or box.user or "root").partition(":")[0]
            return 0, f"{FAKE_UIDS.get(who, who)}\n".encode()
        with trio.fail_after(timeout):
            if self.exec_handler is not None:
                return await self.exec_handler(inst, argv)
            program = read_program(argv, exec_=True)
            await trio.sleep(program.sleeps)
            return program.exit_code or 0, b"".join(program.output)

    async def address(self, inst: Instance) -> str | None:
        box = self._box(inst)
        return self._report(box).address if box is not None else None

    async def logs(
        self, inst: Instance, since: float | None = None, tail: int | None = None, follow: bool = False
    ) -> AsyncGenerator[LogLine, None]:
        box = self._box(inst)
        if box is None:
            raise DriverError(f"logs of {inst.name}: no such instance")
        lines = [(when, line) for when, line in box.output if since is None or when >= since]
        if tail is not None:
            lines = lines[len(lines) - tail:] if tail > 0 else []
        for when, line in lines:
            for piece in _pieces(when, line):
                yield piece
        seen = len(box.output)
        while follow and box.state == InstanceState.RUNNING and self.runtime.boxes.get(box.runtime_id) is box:
            await self.runtime.wait_changed()
            for when, line in box.output[seen:]:
                for piece in _pieces(when, line):
                    yield piece
            seen = len(box.output)

    def set_load(self, instance_id: str, cores: float | None = None, memory: int | None = None) -> None:
        """What the instance uses from now on, for ``stats``: ``cores`` of CPU, ``memory`` bytes."""
        box = self._box_of(instance_id)
        assert box is not None, f"no instance {instance_id}"
        self._accrue(box)
        if cores is not None:
            box.cpu_load = cores
        if memory is not None:
            box.memory = memory

    def _accrue(self, box: _Box) -> None:
        now = trio.current_time()
        if box.cpu_read_at is not None and box.state == InstanceState.RUNNING:
            box.cpu_ns += box.cpu_load * (now - box.cpu_read_at) * 1e9
        box.cpu_read_at = now

    async def stats(self, inst: Instance) -> InstanceStats | None:
        box = self._box(inst)
        if box is None or box.state != InstanceState.RUNNING:
            return None
        self._accrue(box)
        # Stamped by trio's clock (anchored to the wall clock once): the CPU time accrues by it,
        # so under a MockClock the rates come out as set_load said, not divided by real time.
        if self.runtime.epoch is None:
            self.runtime.epoch = wall_clock() - trio.current_time()
        return InstanceStats(when=self.runtime.epoch + trio.current_time(), cpu_ns=int(box.cpu_ns),
                             memory=box.memory, memory_limit=box.memory_limit)

    async def aclose(self) -> None:
        return None


def _pieces(when: float, line: bytes) -> list[LogLine]:
    """A line as the protocol gives it: without its newline, in pieces past ``MAX_LOG_LINE``."""
    text = line[:-1] if line.endswith(b"\n") else line
    return [LogLine(when, text[i:i + MAX_LOG_LINE]) for i in range(0, max(len(text), 1), MAX_LOG_LINE)]
