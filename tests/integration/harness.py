"""Runs the real thing for integration tests: `mariposa daemon` as a process on a private state
dir and socket, the `mariposa` CLI as a process, and the Docker CLI to look at what is there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARIPOSA = str(Path(sys.executable).with_name("mariposa"))
IMAGE = "mariposa-example/busybox:latest"  # built by tests/integration/images.py

# Timing bounds are what the design schedules (a back-off step, a stop timeout), at least that less
# EARLY (time stamps, clocks), at most that plus LATE: what a loaded 2-core machine may add to one
# reaction of the daemon (a runtime event, a reconciler pass, Docker calls, a CLI process). Gaps of
# 6 s over the schedule have been seen on such a machine. No test compares two wall-clock gaps.
EARLY = 0.1
LATE = 8.0


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


class Daemon:
    def __init__(self, tmp: Path):
        self.state_dir = tmp / "state"
        self.socket = str(tmp / "mariposa.sock")
        self.log = tmp / "daemon.log"
        self.manifest_dir = tmp / "projects"
        # Secrets: the key file beside the state dir (never /etc/mariposa's), the instances' secret
        # files on a tmpfs of this test's own (the daemon refuses any other filesystem)
        self.key_file = tmp / "secret.key"
        self.run_dir = Path("/dev/shm") / f"mariposa-test-{os.getpid()}-{id(self):x}"
        self.proc: subprocess.Popen | None = None
        self.owner: str | None = None

    def start(self, *extra: str, timeout: float = 20) -> Daemon:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MARIPOSA, "daemon", "--state-dir", str(self.state_dir), "--socket", self.socket,
                 "--resync", "2", "--log-format", "json", "--manifest-dir", str(self.manifest_dir),
                 "--secret-key-file", str(self.key_file), "--run-dir", str(self.run_dir), *extra],
                stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.answers():
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"daemon did not answer within {timeout:g} s:\n{self.log.read_text()[-3000:]}")
        self.owner = self.api_owner()
        return self

    def answers(self) -> bool:
        """Whether the daemon answers on its socket: asked without a CLI process, which costs a
        second of CPU on a loaded machine and slowed every start (and restart) by as much."""
        import httpx

        try:
            self.api("/v1/ping")
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False
        return True

    def api_owner(self) -> str:
        return self.api("/v1/ping")["owner"]

    def api(self, path: str):
        """GET from the control API on the socket, without a CLI process: for tests that sample often."""
        import httpx

        # verify=False: no TLS on a unix socket, and loading the CA bundle for nothing took 0.6 s a
        # call on a loaded machine (the start-up poll and the fault rounds call this often)
        transport = httpx.HTTPTransport(uds=self.socket, verify=False)
        with httpx.Client(transport=transport, base_url="http://m", timeout=30) as c:
            r = c.get(path)
            r.raise_for_status()
            return r.json()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def cli(self, *args: str, check: bool = True, timeout: float = 180, input: str | None = None,
            ) -> subprocess.CompletedProcess:
        env = {**os.environ, "MARIPOSA_SOCKET": self.socket}
        r = subprocess.run([MARIPOSA, *args], capture_output=True, text=True, env=env, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"mariposa {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def containers(self, *filters: str, all: bool = True) -> list[dict]:
        """Containers this daemon owns, as Docker sees them."""
        args = ["ps", "--no-trunc", "--format", "{{json .}}", "--filter", f"label=io.mariposa.owner={self.owner}"]
        if all:
            args.append("-a")
        for f in filters:
            args += ["--filter", f]
        return [json.loads(line) for line in docker(*args).splitlines() if line.strip()]

    def running(self, service: str | None = None) -> list[dict]:
        extra = [f"label=io.mariposa.service={service}"] if service else []
        return [c for c in self.containers(*extra, all=False) if c["State"] == "running"]

    def cleanup(self) -> None:
        self.kill()
        if self.owner:
            ids = docker("ps", "-aq", "--filter", f"label=io.mariposa.owner={self.owner}").split()
            # and a Swarm daemon's overlay anchors (mariposa/swarm/anchor.py), which hold the overlay
            ids += docker("ps", "-aq", "--filter", f"label=io.mariposa.anchor={self.owner}").split()
            if ids:
                docker("rm", "-f", *ids, check=False)
            nets = docker("network", "ls", "-q", "--filter", f"label=io.mariposa.owner={self.owner}").split()
            if nets:
                docker("network", "rm", *nets, check=False)
        import shutil

        self.cleanup_qemu()
        self.cleanup_lxc()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def cleanup_qemu(self) -> None:
        """The QEMU driver's VMs (under STATE_DIR/qemu) killed and their taps removed: they
        outlive the daemon and the test's tmp dir, as LXC containers do."""
        from mariposa.drivers.qemu import _pid_of

        root = self.state_dir / "qemu"
        if not root.is_dir():
            return
        for d in root.iterdir():
            pid = _pid_of(d)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            side = d / "mariposa.json"
            if side.exists():
                for nic in json.loads(side.read_text()).get("nics", ()):
                    subprocess.run(["ip", "link", "del", nic["tap"]], capture_output=True, timeout=60)

    def cleanup_lxc(self) -> None:
        """The LXC driver's containers (under STATE_DIR/lxc) killed, and the bridges the daemon made
        (STATE_DIR/networks), with their DOCKER-USER rules, removed: the state dir goes with the
        test's tmp dir, they would not."""
        root = self.state_dir / "lxc"
        if root.is_dir():
            for d in root.iterdir():
                if (d / "config").exists():
                    subprocess.run(["lxc-stop", "-P", str(root), "-n", d.name, "-k"], capture_output=True,
                                   timeout=60)
        for rec in [*(root / "networks").glob("*.json"), *(self.state_dir / "networks").glob("*.json")]:
            bridge = json.loads(rec.read_text())["bridge"]
            subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                           capture_output=True, timeout=60)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=60)


def wait_until(predicate, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def sampling(probe: Callable[[], int], interval: float = 0.05) -> Iterator[list[int]]:
    """Calls ``probe`` every ``interval`` seconds in a thread while the block runs, keeping what
    it returns (a probe that raises is skipped: the API may be busy): e.g. how many instances
    serve during a rollout, to show the count never drops."""
    found: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                found.append(probe())
            except Exception:  # noqa: BLE001 - a sample missed is not a sample of zero
                pass
            stop.wait(interval)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()
