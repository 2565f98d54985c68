"""Sockets in a Swarm overlay's network namespace, for the daemon's health probes to tasks.

A task's address is on its project's overlay, which the host cannot route to. On every node that
runs a task of it, the Engine keeps the overlay's own namespace (``/var/run/docker/netns/1-`` and
the first ten characters of the network id), whose bridge reaches every task on the overlay (the
other nodes' through VXLAN). A socket made while a thread is in that namespace stays in it; it is
then connected and used on the trio loop like any other. ``setns`` changes the calling thread
only, and the thread is put back before it returns (a worker thread that stayed in the overlay
would make later sockets of unrelated work there).
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Awaitable, Callable

import trio

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/docker/netns"
_libc = ctypes.CDLL(None, use_errno=True)

SocketFactory = Callable[[int], Awaitable[socket.socket]]


def namespace_of(network_id: str, netns_dir: str = NETNS_DIR) -> str:
    return f"{netns_dir}/1-{network_id[:10]}"


def _socket_in(path: str, family: int) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"cannot enter the overlay's namespace {path}: {os.strerror(err)}")
            try:
                return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:  # never leave a worker thread in the overlay
                    os._exit(70)
        finally:
            os.close(target)
    finally:
        os.close(own)


def factory(path: str) -> SocketFactory:
    """A maker of non-blocking TCP sockets in the namespace at ``path``."""
    async def make(family: int) -> socket.socket:
        if not os.path.exists(path):
            raise OSError(f"the overlay's namespace {path} is not on this node (no task of it runs here)")
        return await trio.to_thread.run_sync(_socket_in, path, family)
    return make
