"""Debian's ``cron`` daemon as the benchmarks' peer (issue 16's figures: "next to systemd-less
cron"): a crontab file of our own in /etc/cron.d, ``cron -f`` as a child process, both removed
when done. Needs root and the ``cron`` package (``apt-get install -y cron``).

cron's granularity is a minute: it wakes at each minute's boundary and forks one process per
line due; a line's command runs through ``/bin/sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.bench.procstat import cpu_seconds

CRON_D = Path("/etc/cron.d")


def available() -> str | None:
    """Why the peer cannot run here (None: it can)."""
    if shutil.which("cron") is None:
        return "no cron daemon (apt-get install -y cron)"
    if os.geteuid() != 0:
        return "cron.d needs root"
    if Path("/run/crond.pid").exists() or Path("/var/run/crond.pid").exists():
        try:
            pid = int(Path("/run/crond.pid").read_text().strip() or 0)
            if pid and Path(f"/proc/{pid}").exists():
                return f"a cron daemon runs already (pid {pid})"
        except (OSError, ValueError):
            pass
    return None


class Cron:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def cpu(self) -> tuple[float, float]:
        """cron's own CPU seconds, and with the children it has reaped (its per-job forks and
        their commands) added."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return cpu_seconds(self.proc.pid), sum(int(f) for f in fields[11:15]) / tick


@contextmanager
def running(name: str, lines: Sequence[str]) -> Iterator[Cron]:
    """``cron -f`` with /etc/cron.d/NAME holding ``lines`` (each "MIN HOUR DOM MON DOW USER CMD"),
    for as long as the block lasts; the file and the process are gone after it."""
    path = CRON_D / name
    CRON_D.mkdir(exist_ok=True)
    # cron.d wants a file owned by root, not group- or world-writable, and a final newline;
    # MAILTO="" keeps cron from mailing every job's output
    path.write_text('MAILTO=""\nSHELL=/bin/sh\n' + "".join(line + "\n" for line in lines))
    path.chmod(0o644)
    proc = subprocess.Popen(["cron", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"cron exited at once (code {proc.returncode})")
        yield Cron(proc)
    finally:
        path.unlink(missing_ok=True)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
