"""The event journal and the output files of the drivers that keep their own books (LXC, QEMU).

A journal is a file of JSON lines, one an event (``create``, ``start``, ``stop``, ``die``,
``destroy``), appended by the driver, by hooks the runtime runs (LXC's start and stop hooks), or by
a driver's watcher that saw an instance end. A cursor is the journal's inode and a byte offset in
it, so a resumed subscription replays exactly what it missed, even what happened while no daemon
ran; the journal is rotated at start-up past 16 MiB.

An instance's output is ``log/out`` with ``log/index`` stamping it: each time the driver finds new
bytes it records "END-OFFSET MTIME", so a line's time is when the driver first saw it written (at
most the file's mtime then), stable across reads and restarts.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from mariposa.drivers.base import MAX_LOG_LINE, DriverEvent, LogLine, RuntimeUnavailable
from mariposa.model import LABEL_INSTANCE, LABEL_PROJECT, LABEL_SERVICE

# The journal is read when inotify says its directory changed, and at least this often (a thread
# hop and a read: at 0.1 s, polling alone cost an idle daemon 1.2 % of a core).
POLL = 1.0
IN_MODIFY, IN_CREATE, IN_MOVED_TO = 0x2, 0x100, 0x80
JOURNAL_MAX = 16 << 20  # about 100,000 events


class Journal:
    """``DIR/events.log``; ``runtime`` names it in errors."""

    def __init__(self, path: Path, runtime: str, tick: Callable[[], Awaitable[None]] | None = None,
                 poll: float = POLL) -> None:
        self.path = path
        self.file = path / "events.log"
        self.runtime = runtime
        # Run before each read of a subscription: a driver whose runtime has no hook of its own to
        # journal an instance's end (QEMU) looks for ended ones there, at least every ``poll`` s.
        self.tick = tick
        self.poll = poll

    def append(self, action: str, labels: dict[str, Any], name: str, exit_code: int | None = None) -> None:
        """Blocking: call from a worker thread."""
        entry = {"t": time.time(), "a": action, "i": labels.get(LABEL_INSTANCE, ""),
                 "p": labels.get(LABEL_PROJECT, ""), "s": labels.get(LABEL_SERVICE, ""), "n": name,
                 "x": "" if exit_code is None else str(exit_code)}
        with open(self.file, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def rotate(self) -> None:
        """Past ``JOURNAL_MAX`` bytes the journal starts afresh (the old one kept as ``.1``); a
        subscriber sees the new inode and reads on from its start. Blocking."""
        try:
            if self.file.stat().st_size > JOURNAL_MAX:
                os.replace(self.file, self.file.with_name("events.log.1"))
        except FileNotFoundError:
            pass

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        """The journal from cursor ``since`` ("INODE:OFFSET", just after the event that carried
        it), or from its end now. A cursor of a journal rotated since (another inode) resumes at
        the new journal's start: what fell between is for the daemon's periodic resync."""
        journal = self.file
        if since is None:
            try:
                st = journal.stat()
                inode, offset = st.st_ino, st.st_size
            except OSError:
                inode, offset = 0, 0
        else:
            try:
                inode_text, _, offset_text = since.partition(":")
                inode, offset = int(inode_text), int(offset_text)
            except ValueError:
                raise ValueError(f"not a {self.runtime} event cursor: {since!r}") from None
        return self._events(journal, inode, offset)

    async def _events(self, journal: Path, inode: int, offset: int) -> AsyncIterator[DriverEvent]:
        await trio.to_thread.run_sync(lambda: self.path.mkdir(parents=True, exist_ok=True))
        watch = _Watch(self.path)  # before the first read, so no append between the two is missed
        try:
            async for event in self._journal_from(journal, inode, offset, watch):
                yield event
        finally:
            watch.close()

    async def _journal_from(self, journal: Path, inode: int, offset: int, watch: _Watch
                            ) -> AsyncIterator[DriverEvent]:
        while True:
            if self.tick is not None:
                await self.tick()
            try:
                now, chunk = await trio.to_thread.run_sync(_read_from, journal, inode, offset)
            except OSError as exc:
                raise RuntimeUnavailable(f"{self.runtime}: event journal {journal}: {exc}") from None
            if now != inode:  # made or rotated since the cursor: its offsets are the new file's
                inode, offset = now, 0
                continue
            end = chunk.rfind(b"\n") + 1
            for raw in chunk[:end].splitlines(keepends=True):
                offset += len(raw)
                try:
                    e = json.loads(raw)
                except ValueError:
                    continue
                code = str(e.get("x") or "")
                yield DriverEvent(action=e.get("a", ""), instance_id=e.get("i") or None,
                                  project_id=e.get("p") or None, service=e.get("s") or None,
                                  exit_code=int(code) if code.lstrip("-").isdigit() else None,
                                  cursor=f"{inode}:{offset}")
            await watch.wait(self.poll)


class _Watch:
    """inotify on the LXC path (not its subdirectories: an instance's output never wakes it), so
    a subscriber reads the journal when it grows instead of polling it; without inotify, ``wait``
    is a plain sleep. Through libc by ctypes: the standard library has no inotify."""

    def __init__(self, path: Path) -> None:
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(path), IN_MODIFY | IN_CREATE | IN_MOVED_TO) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            self.fd = -1

    async def wait(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            if self.fd < 0:
                await trio.sleep_forever()
            await trio.lowlevel.wait_readable(self.fd)
            try:
                while os.read(self.fd, 65536):  # what changed does not matter: the journal is read
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
            self.fd = -1


def _read_from(path: Path, inode: int, offset: int) -> tuple[int, bytes]:
    """(the journal's inode, what it holds from ``offset`` if that is still ``inode``)."""
    try:
        with open(path, "rb") as f:
            now = os.fstat(f.fileno()).st_ino
            if now != inode:
                return now, b""
            f.seek(offset)
            return now, f.read()
    except FileNotFoundError:
        return 0, b""


def read_log(folder: Path, offset: int, to_end: bool) -> tuple[list[LogLine], int]:
    """Lines of ``folder/out`` from ``offset``: whole lines, and a last one without a newline
    when ``to_end``. New bytes are stamped in ``folder/index`` ("END MTIME") when first seen."""
    out = folder / "out"
    with open(out, "rb") as f:
        data = f.read()
        mtime = round(os.fstat(f.fileno()).st_mtime, 6)  # as the index keeps it, so every read agrees
    index: list[tuple[int, float]] = []
    try:
        for row in (folder / "index").read_text().splitlines():
            end, stamp = row.split()
            index.append((int(end), float(stamp)))
    except (OSError, ValueError):
        index = []
    if len(data) > (index[-1][0] if index else 0):
        index.append((len(data), mtime))
        with open(folder / "index", "a") as f:
            f.write(f"{len(data)} {mtime:.6f}\n")
    lines: list[LogLine] = []
    pos = offset
    cut = data.rfind(b"\n") + 1 if not to_end else len(data)
    i = 0
    while pos < cut:
        nl = data.find(b"\n", pos, cut)
        stop = cut if nl < 0 else nl
        while i < len(index) - 1 and index[i][0] <= pos:
            i += 1
        when = index[i][1] if index else mtime
        text = data[pos:stop].removesuffix(b"\r")  # a console's lines end in CR LF
        for piece in range(0, max(len(text), 1), MAX_LOG_LINE):
            lines.append(LogLine(when, text[piece:piece + MAX_LOG_LINE]))
        pos = stop + 1 if nl >= 0 else stop
    return lines, pos
