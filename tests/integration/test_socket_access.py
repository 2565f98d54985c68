"""Who the control socket admits, asked as another user would: root and the daemon's user by
their uid alone, anybody else by the socket's group, primary or supplementary. The groups are
read only for the callers whose uid does not decide (so 500 root connections at once cost no
worker thread each): this shows they are still read for the others. The group is the first gate
only: a member whose uid no Mariposa user is mapped to is refused, told how to map it, and a
mapped one is judged by its user's bindings (tests/integration/test_access_users.py shows more).

Nothing here runs a container: the module needs no Docker Engine (its ``docker_engine`` below)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.harness import Daemon

NOBODY = 65534
SOCKET_GID = 4242  # no group needs to exist: the kernel and the daemon compare numbers


@pytest.fixture(scope="session")
def docker_engine():
    """Overrides the integration suite's: nothing here needs a container."""


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
        daemon.kill()
        shutil.rmtree(daemon.run_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


# The checkout (and its venv) may be where nobody cannot read it (/root/project on a fresh machine),
# so nobody asks with the system's Python and a few lines of HTTP: what is judged is the daemon.
ASK = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"GET /v1/projects HTTP/1.1\\r\\nHost: m\\r\\nConnection: close\\r\\n\\r\\n")
except BrokenPipeError:
    pass  # a refused caller is answered before the daemon reads, and hung up on
answer = b""
try:
    while chunk := s.recv(65536):
        answer += chunk
except ConnectionResetError:  # after the answer: what a hang-up with our request unread reads as
    pass
sys.stdout.write(answer.decode())
"""


def as_nobody(daemon: Daemon, groups: list[int]) -> str:
    """The daemon's whole answer to nobody's project list."""
    who = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}"]
    who += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    done = subprocess.run([*who, python, "-c", ASK, daemon.socket], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_supplementary_member_of_the_socket_group_is_admitted_then_judged_by_its_user(open_daemon):
    assert os.stat(open_daemon.socket).st_gid == SOCKET_GID
    answer = as_nobody(open_daemon, [SOCKET_GID])
    assert answer.startswith("HTTP/1.1 403"), answer
    assert (f"uid {NOBODY} is not a Mariposa user; an admin maps it with: mariposa user add NAME --uid {NOBODY}"
            in answer), answer
    open_daemon.cli("user", "add", "nob", "--uid", str(NOBODY))
    answer = as_nobody(open_daemon, [SOCKET_GID])
    assert answer.startswith("HTTP/1.1 403") and "no binding of nob grants project:read" in answer, answer
    open_daemon.cli("grant", "nob", "viewer", "--org", "default")
    answer = as_nobody(open_daemon, [SOCKET_GID])
    assert answer.startswith("HTTP/1.1 200"), answer


def test_a_stranger_is_refused_by_the_daemon_itself(open_daemon):
    answer = as_nobody(open_daemon, [])
    assert answer.startswith("HTTP/1.1 403"), answer
    assert f"permission denied: uid={NOBODY} is not root" in answer


def test_root_is_admitted_without_the_group(open_daemon):
    assert open_daemon.cli("project", "list").returncode == 0
