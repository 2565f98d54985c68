"""Who is asking: the one value every control method receives, whatever the transport.

A local caller is what the kernel says about the process at the other end of the unix socket
(``SO_PEERCRED``), whose uid the policy maps to a user (access/policy.py); a remote caller is the
user its token names (api/remote.py); the daemon itself acts for the manifest directory. ``org``
is the organisation the caller chose (``-o``), which narrows what it names and lists.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from mariposa.store.files import AUTHOR


@attrs.frozen
class Caller:
    transport: str  # "unix" (the control socket), "watch" (the manifest directory), "internal"
    uid: int | None = None  # None: the kernel would not say (fails closed)
    gid: int | None = None
    groups: frozenset[int] = frozenset()  # supplementary groups, read when the caller connected
    pid: int | None = None
    name: str | None = None  # how the daemon's own callers sign the audit trail ("file")
    user: str | None = None  # a remote caller's, from its token (a unix caller's comes from its uid)
    token: str | None = None  # the id of the token a remote caller showed
    fresh: bool = False  # re-authenticated just now (a token made minutes ago): project move asks it
    address: str | None = None  # a remote caller's address
    org: str | None = None  # the organisation chosen with -o/--org

    @property
    def author(self) -> str:
        """What the audit trail records: ``uid=N`` for a peer, the name for the daemon itself."""
        if self.name:
            return self.name
        if self.user:
            return self.user
        return f"uid={self.uid}" if self.uid is not None else "unknown"

    def __str__(self) -> str:
        return self.author

    @classmethod
    def daemon(cls, name: str, transport: str = "internal") -> Caller:
        """The daemon acting on its own behalf (the watched directory, the reconciler)."""
        return cls(transport=transport, uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), name=name)

    @classmethod
    def from_peer(cls, pid: int, uid: int, gid: int, transport: str = "unix") -> Caller:
        """What the kernel said of a peer, without its supplementary groups: see ``with_groups``."""
        return cls(transport=transport, uid=uid, gid=gid, pid=pid)

    @property
    def needs_groups(self) -> bool:
        """Whether admitting this caller can turn on its supplementary groups: root's and the
        daemon user's cannot. The server asks the kernel (``api.http.peer_groups``); reading
        them here instead costs a worker thread per connection, which 500 connections at once
        queued in front of everybody's requests."""
        return self.uid is not None and self.uid not in (0, os.getuid()) and self.pid is not None

    def with_groups(self) -> Caller:
        """Blocking (it reads /proc): call it from a worker thread."""
        return attrs.evolve(self, groups=supplementary_groups(self.pid)) if self.pid is not None else self


def supplementary_groups(pid: int) -> frozenset[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return frozenset()


WATCHER = Caller(transport="watch", name=AUTHOR)
