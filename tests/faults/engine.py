"""A private Docker Engine for the runtime faults: a `dockerd` of our own, on its own socket,
data root and exec root, that a test may stop and start at will. The host's engine serves every
other test running on the machine and must never be restarted.

Why these flags: `--bridge=<a bridge of our own>` keeps our engine off the host's docker0 (NOT
`--bridge=none`: a dockerd started with it deletes the interface docker0, which the host's engine
and every other test on the machine need; the lead found docker0 gone twice and put it back); `--iptables=false`
keeps it out of the host's firewall, which the host's engine owns (two engines editing one
DOCKER chain undo each other); `--default-address-pool` gives our project networks a range of
their own; `--cgroup-parent` keeps our containers' cgroups apart. User-defined bridge networks
work: containers get addresses, names resolve, the host reaches them. Traffic between two of
our containers is dropped by the host's FORWARD policy (we add no rules), which no test here
needs.

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
        self.bridges: set[str] = set()  # host interfaces our networks made, removed in close()
        # the default bridge of our engine: one of our own, never docker0 (see the module's doc)
        self.bridge = "mfb" + self.root.name[-8:].replace("_", "x")
        self.bridges.add(self.bridge)

    def start(self, timeout: float = 60) -> float:
        """Start dockerd and wait until it answers; the seconds that took."""
        began = time.monotonic()
        if not Path("/sys/class/net", self.bridge).exists():
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
            subprocess.run(["ip", "addr", "add", "10.214.0.1/24", "dev", self.bridge], check=True, capture_output=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True, capture_output=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--host", self.host, "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "x"), "--pidfile", str(self.root / "d.pid"),
                 f"--bridge={self.bridge}", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
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
            self.remember_bridges()
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

    def remember_bridges(self) -> None:
        """dockerd leaves a network's bridge on the host when it exits; note them while it answers."""
        if not self.running:
            return
        r = self.docker("network", "ls", "-q", "--no-trunc", "--filter", "driver=bridge", check=False)
        self.bridges |= {f"br-{net[:12]}" for net in r.stdout.decode().split()}

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Remove every container and network (while the engine answers), stop it, then remove
        what an engine leaves on a host: bridges, mounts under its roots, its files."""
        try:
            if self.running:
                ids = self.docker("ps", "-aq", check=False).stdout.decode().split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
                self.remember_bridges()
                self.docker("network", "prune", "-f", check=False)
            self.stop()
        finally:
            if self.proc and self.proc.poll() is None:  # SIGTERM was not enough
                self.proc.kill()
                self.proc.wait(timeout=30)
            for bridge in sorted(self.bridges):
                if Path("/sys/class/net", bridge).exists():
                    subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
            with open("/proc/self/mounts") as mounts:
                points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.root) + "/")]
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)
