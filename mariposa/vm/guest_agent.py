"""Commands in a VM that boots its own OS, through the QEMU guest agent (``qemu-ga``) when the
image runs one: the way a command health check reaches a guest with no init of Mariposa's.

QEMU gives each such VM a virtio-serial port named ``org.qemu.guest_agent.0`` (console.py),
whose host end is a unix socket; an agent in the guest answers JSON commands on it. Used here:

- ``guest-sync`` with a random id first: a fresh connection may still carry an answer meant for a
  client before it, and only the answer with our id says the stream is ours; no answer within
  ``SYNC_TIMEOUT`` means no agent runs in the guest, which is said as "unsupported";
- ``guest-exec`` (path, args, captured output) and ``guest-exec-status`` polled until it exited.

The agent runs commands as itself (root, usually): a user cannot be chosen. Output is the first
256 KiB of stdout then stderr, as our init's EXEC answers (console.py).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import trio

from mariposa.drivers.base import DriverError

__all__ = ["SYNC_TIMEOUT", "run"]

SYNC_TIMEOUT = 3.0
POLL = 0.05
MAX_OUTPUT = 256 * 1024


class _Agent:
    def __init__(self, stream: trio.SocketStream, name: str) -> None:
        self.stream, self.name, self.buffer = stream, name, b""

    async def send(self, command: str, arguments: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"execute": command, **({"arguments": arguments} if arguments else {})}
        await self.stream.send_all(json.dumps(body).encode() + b"\n")

    async def answer(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise DriverError(f"qemu: exec in {self.name}: the guest agent's port closed")
            self.buffer += data
        raw, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(raw.strip(b"\xff \r"))
        except ValueError:
            return {}
        if isinstance(message, dict) and "error" in message:
            desc = (message["error"] or {}).get("desc", "an error")
            raise DriverError(f"qemu: exec in {self.name}: the guest agent says: {desc}")
        return message if isinstance(message, dict) else {}

    async def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        await self.send(command, arguments)
        while "return" not in (message := await self.answer()):
            pass
        return message["return"]


async def run(sock: Path, argv: list[str], name: str) -> tuple[int, bytes]:
    """``argv`` run in the guest by its agent: (exit code, output). ``DriverError`` saying
    "unsupported" when no agent answers; the caller bounds the whole with its timeout."""
    unsupported = (f"qemu: exec in {name}: unsupported: it boots its own OS from a disk image and no QEMU "
                   "guest agent answers in it (use an http or tcp health check, or run qemu-ga in the image)")
    if not argv:
        raise DriverError(f"qemu: exec in {name}: an empty command")
    try:
        stream = await trio.open_unix_socket(str(sock))
    except OSError:
        raise DriverError(unsupported) from None
    async with stream:
        agent = _Agent(stream, name)
        token = int.from_bytes(os.urandom(4), "big")
        await agent.send("guest-sync", {"id": token})
        synced = False
        with trio.move_on_after(SYNC_TIMEOUT):
            while not synced:
                synced = (await agent.answer()).get("return") == token
        if not synced:
            raise DriverError(unsupported)
        started = await agent.call("guest-exec", {"path": argv[0], "arg": list(argv[1:]), "capture-output": True})
        pid = started["pid"]
        while True:
            status = await agent.call("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                break
            await trio.sleep(POLL)
    if "exitcode" in status:
        code = int(status["exitcode"])
    else:
        code = 128 + int(status.get("signal", 9))
    output = b"".join(base64.b64decode(status.get(key, "") or "") for key in ("out-data", "err-data"))
    return code, output[:MAX_OUTPUT]
