"""Run the real ``mariposa`` CLI as another unix user: ``python as_user.py USER -- ARGS...``.

The checkout's interpreter may sit where that user cannot read it (/root/.pyenv on this machine,
/root/project on a fresh one), so this starts as root, imports the CLI and what its commands load
later, and only then drops to the user (its uid, primary group and supplementary groups, as
``setpriv --reuid --regid --init-groups`` would). Every connection to the daemon is made after
the drop, so the kernel gives the daemon the user's credentials: what is judged is the daemon.
"""

from __future__ import annotations

import difflib  # noqa: F401 - click suggests close option names with it, lazily
import os
import pwd
import sys

import rich.box  # noqa: F401 - loaded before the drop: the CLI imports them lazily
import rich.console  # noqa: F401
import rich.table  # noqa: F401

import mariposa.access.capabilities  # noqa: F401
from mariposa.cli import main

if __name__ == "__main__":
    name, args = sys.argv[1], sys.argv[3:]
    entry = pwd.getpwnam(name)
    os.initgroups(name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = "/tmp"
    sys.argv = ["mariposa", *args]
    main.main()
