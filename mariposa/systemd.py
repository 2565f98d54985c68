"""sd_notify without libsystemd: READY, STATUS, WATCHDOG, RELOADING and STOPPING datagrams to
``$NOTIFY_SOCKET``. Outside systemd (no socket in the environment) every call is a no-op."""

from __future__ import annotations

import os
import socket

import structlog
import trio

log = structlog.get_logger()


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        # Non-blocking: this runs on the trio loop, and a receiver that stops reading (its queue
        # holds only net.unix.max_dgram_qlen datagrams) must cost us a message, never the loop.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.sendto(message.encode(), address)
        return True
    except BlockingIOError:
        log.debug("sd_notify dropped: the receiver's queue is full", message=message.split("=", 1)[0])
        return False
    except OSError as exc:
        log.warning("sd_notify failed", error=str(exc))
        return False


def watchdog_interval() -> float | None:
    """Half of ``WATCHDOG_USEC``, when systemd asked this very process for keep-alives."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2 / 1_000_000
    except ValueError:
        return None


async def watchdog() -> None:
    """Pinged from the trio loop itself: a stalled loop stops the pings and systemd restarts us."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
