"""Who the control socket admits, asked as another user would: root and the daemon's user by
their uid alone, anybody else by the socket's group, primary or supplementary. The groups are
read only for the callers whose uid does not decide (so 500 root connections at once cost no
worker thread each): this shows they are still read for the others."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.harness import MARIPOSA, Daemon

pytestmark = pytest.mark.docker
NOBODY = 65534
SOCKET_GID = 4242  # no group needs to exist: the kernel and the daemon compare numbers


@pytest.fixture
def open_daemon():
    """A daemon whose socket any local user can reach (mode 0666, a traversable directory), so
    the daemon's own policy, not the file's mode, is what admits or refuses."""
    home = Path(tempfile.mkdtemp(prefix="mariposa-access-", dir="/tmp"))
    home.chmod(0o711)
    daemon = Daemon(home)
    try:
        yield daemon.start("--socket-group", str(SOCKET_GID), "--socket-mode", "0666")
    finally:
        daemon.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def as_nobody(daemon: Daemon, groups: list[int]) -> subprocess.CompletedProcess:
    who = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}"]
    who += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    env = {"PATH": os.environ["PATH"], "MARIPOSA_SOCKET": daemon.socket, "HOME": "/tmp"}
    return subprocess.run([*who, MARIPOSA, "project", "list"], capture_output=True, text=True, env=env, timeout=60)


def test_a_supplementary_member_of_the_socket_group_is_admitted(open_daemon):
    assert os.stat(open_daemon.socket).st_gid == SOCKET_GID
    member = as_nobody(open_daemon, [SOCKET_GID])
    assert member.returncode == 0, member.stderr


def test_a_stranger_is_refused_by_the_daemon_itself(open_daemon):
    stranger = as_nobody(open_daemon, [])
    assert stranger.returncode != 0
    assert f"permission denied: uid={NOBODY} is not root" in stranger.stderr


def test_root_is_admitted_without_the_group(open_daemon):
    assert open_daemon.cli("project", "list").returncode == 0
