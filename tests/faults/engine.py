"""A private Docker Engine for the runtime faults: a `dockerd` of our own, on its own socket,
data root and exec root, that a test may stop and start at will. The host's engine serves every
other test running on the machine and must never be restarted.

Why its own network namespace: a dockerd started again on a data root that it left deletes the
host's docker0 (seen here: with --bridge=none at every start, with a bridge of its own at the
second start), and the host's engine and every other test need docker0. In a namespace of its
own (`ip netns`) our engine has its own docker0, bridges and firewall, and touches none of the
host's. `--iptables=false` still, as nothing here needs NAT; `--cgroup-parent` keeps our
containers' cgroups apart. The daemon under test reaches the engine by its unix socket, which a
network namespace does not hide. The host cannot reach our containers' addresses, which no
runtime-fault test needs.

Paths are short on purpose: dockerd's and containerd's unix sockets live under the exec root,
and a socket path has at most 107 bytes.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ADDRESS_POOL = "base=10.213.0.0/16,size=24"


class PrivateEngine:
    """One private `dockerd`: `start`, `stop` (SIGTERM, as systemd does), `start` again on the
    same data root, and `close` to leave nothing behind (containers, networks and their bridges,
    mounts, files)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mfr-", dir="/tmp"))
        self.socket = self.root / "d.sock"
        self.host = f"unix://{self.socket}"
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.netns = "mfr" + self.root.name[-8:].replace("_", "x")  # see the module's doc

    def start(self, timeout: float = 60) -> float:
        """Start dockerd and wait until it answers; the seconds that took."""
        began = time.monotonic()
        if not Path("/run/netns", self.netns).exists():
            subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
            subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True,
                           capture_output=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                # nsenter, not `ip netns exec`: that one mounts a new /sys, without the cgroups dockerd needs
                ["nsenter", f"--net=/run/netns/{self.netns}", "dockerd", "--host", self.host,
                 "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "x"), "--pidfile", str(self.root / "d.pid"),
                 "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                 "--default-address-pool", ADDRESS_POOL, "--cgroup-parent", f"/{self.root.name}",
                 "--log-level", "warn"],
                stdout=log, stderr=log, start_new_session=True,
            )
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"private dockerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.docker("version", check=False).returncode == 0:
                return time.monotonic() - began
            time.sleep(0.1)
        raise AssertionError(f"private dockerd did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 90) -> float:
        """SIGTERM dockerd and wait for it to exit (it stops its containers first); the seconds."""
        began = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        return time.monotonic() - began

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def docker(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, input=input, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"docker -H {self.host} {' '.join(args)}: {r.stderr.decode().strip()}")
        return r

    def load_image(self, image: str) -> None:
        """Copy an image from the host's engine (built by the session's `docker_images`)."""
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=120).stdout
        self.docker("load", input=saved)

    def containers(self, owner: str, *, running_only: bool = False) -> list[dict]:
        args = ["ps", "--no-trunc", "--format", "{{json .}}", "--filter", f"label=io.mariposa.owner={owner}"]
        if not running_only:
            args.append("-a")
        out = self.docker(*args).stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Remove every container and network (while the engine answers), stop it, then remove
        what an engine leaves on a host: its network namespace (and every bridge in it), mounts
        under its roots, its files."""
        try:
            if self.running:
                ids = self.docker("ps", "-aq", check=False).stdout.decode().split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
                self.docker("network", "prune", "-f", check=False)
            self.stop()
        finally:
            if self.proc and self.proc.poll() is None:  # SIGTERM was not enough
                self.proc.kill()
                self.proc.wait(timeout=30)
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
            with open("/proc/self/mounts") as mounts:
                points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.root) + "/")]
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)
