"""Booting Mariposa's VMs with no driver: the kernel, initramfs, disks and QEMU command of
``mariposa/vm/`` on this host's real QEMU (TCG here: ``/dev/kvm`` is a paravirtual one that cannot
boot a stock kernel, issue 15). What the driver builds on: the guest's static address answers
HTTP, the command's exit code reaches the console and QEMU exits by itself, EXEC and SIGNAL work on
the control channel, a volume disk keeps its data across boots, and arguments and environment
survive any character.

The kernel is fetched once into /var/lib/mariposa/kernel (tests/run.sh does it first); the base
disk is the test image's rootfs. Each VM, bridge and tap is the test's own and is removed in a
finally, pass or fail."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from mariposa.drivers.base import DriverError, RuntimeUnavailable
from mariposa.vm import console, disks, initramfs, kernel
from tests.integration.harness import IMAGE, docker, wait_until

pytestmark = [pytest.mark.qemu, pytest.mark.docker]

# TCG boots in about 3-4 s on an idle host; a loaded 2-core machine running other suites can take
# many times that
BOOT = 60.0


@attrs.frozen
class Boot:
    kernel: kernel.Kernel
    initrd: Path
    base: Path
    rootfs: Path


@pytest.fixture(scope="session")
def vm_boot(docker_images, tmp_path_factory) -> Boot:
    try:
        k = kernel.find()
    except RuntimeUnavailable:
        kernel.fetch(Path(kernel.DEFAULT_DIR))
        k = kernel.find()
    tmp = tmp_path_factory.mktemp("vmboot")
    initrd = initramfs.build(k, tmp)
    rootfs = tmp / "rootfs"
    rootfs.mkdir()
    cid = docker("create", IMAGE, "true").strip()
    try:
        export = subprocess.run(["docker", "export", cid], capture_output=True, check=True).stdout
    finally:
        docker("rm", cid)
    subprocess.run(["tar", "-C", str(rootfs), "-x"], input=export, check=True)
    return Boot(kernel=k, initrd=initrd, base=disks.base_disk(rootfs, tmp / "base.raw"), rootfs=rootfs)


class VM:
    """One qemu-system-x86_64 of ``console.qemu_argv``, with its control channel read line by line
    (select and recv: a socket timing out inside makefile() is unusable afterwards)."""

    def __init__(self, boot: Boot, tmp: Path, *, command: list[str] | None, env: dict[str, str] | None = None,
                 workdir: str | None = None, user: tuple[int, int] | None = None,
                 volumes: list[tuple[Path, str, bool]] = (), net: tuple[str, str, str, str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="mvt", dir="/tmp"))  # short: unix socket paths
        self.console_log = self.dir / "console.log"
        self.control = self.dir / "ctl.sock"
        overlay = disks.overlay(boot.base, tmp / f"root-{self.dir.name}.qcow2")
        mounts = [(f"/dev/vd{chr(ord('c') + i)}", target, ro) for i, (_, target, ro) in enumerate(volumes)]
        config = disks.config_disk(tmp / f"config-{self.dir.name}.raw", command=command, env=env or {},
                                   workdir=workdir, user=user, mounts=mounts)
        ip, gateway, tap, mac = net if net else (None, None, None, None)
        self.argv = console.qemu_argv(
            vmlinux=boot.kernel.vmlinux, initrd=boot.initrd, root_disk=overlay, config_disk=config,
            volume_disks=[v[0] for v in volumes], console_log=self.console_log, control_socket=self.control,
            qmp_socket=self.dir / "qmp.sock", tap=tap, mac=mac, memory_mb=128, cpus=1, accel="tcg",
            cmdline=console.command_line(ip, gateway, [gateway] if gateway else [], "vmtest"))
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.started = 0.0

    def __enter__(self) -> VM:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.control.exists() or self.proc.poll() is not None, timeout=BOOT,
                   interval=0.05, what="the control socket")
        assert self.proc.poll() is None, self.proc.stdout.read().decode()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(self.control))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def reconnect(self) -> None:
        """A new connection to the control socket, as a restarted daemon makes."""
        assert self.sock is not None
        self.sock.close()
        self.buffer = b""
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(self.control))

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def line(self, timeout: float = BOOT) -> tuple[str, ...] | None:
        """The next control-channel line, parsed (None for one the parser does not know)."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise AssertionError(f"no line from the guest within {timeout} s; console:\n{self.console()}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the control channel closed; console:\n{self.console()}")
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\n")
        return console.parse(raw.decode())

    def expect(self, *head: str, timeout: float = BOOT) -> tuple[str, ...]:
        deadline = time.monotonic() + timeout
        while True:
            parsed = self.line(max(0.1, deadline - time.monotonic()))
            if parsed is not None and parsed[:len(head)] == head:
                return parsed
            assert parsed is None or parsed[0] != "ERROR", parsed

    def ready(self) -> float:
        self.expect("READY")
        return time.monotonic() - self.started

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def wait_exit(self, timeout: float = BOOT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


@contextlib.contextmanager
def bridge_and_tap() -> Iterator[tuple[str, str, str, str]]:
    """A bridge (``mvt`` + 8 hex) with the host's address on a free /24 of 10.250/16 and a tap on
    it; yields (guest address/prefix, gateway, tap, mac); both removed in the end."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    taken = [ipaddress.ip_network(w, strict=False) for w in (used + routes).split() if "/" in w and w[0].isdigit()]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.250.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            break
    else:
        raise AssertionError("no free /24 in 10.250/16")
    name = "mvt" + secrets.token_hex(4)
    bridge, tap = name, name + "t"
    hosts = list(net.hosts())
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{hosts[0]}/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
        subprocess.run(["ip", "link", "set", tap, "master", bridge, "up"], check=True)
        yield f"{hosts[1]}/24", str(hosts[0]), tap, "52:54:00:" + ":".join(secrets.token_hex(3)[i:i + 2]
                                                                          for i in (0, 2, 4))
    finally:
        subprocess.run(["ip", "link", "del", tap], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_guest_answers_http_on_its_static_address(vm_boot, tmp_path):
    with bridge_and_tap() as net:
        command = ["sh", "-c", "echo hello from the vm > /www/index.html; exec httpd -f -p 80 -h /www"]
        with VM(vm_boot, tmp_path, command=command, net=net) as vm:
            print(f"ready after {vm.ready():.1f} s")
            address = net[0].split("/")[0]

            def fetch() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://{address}/", timeout=3) as r:
                        return r.read().decode()
                except OSError:
                    return None

            assert wait_until(fetch, timeout=BOOT, what="HTTP from the VM") == "hello from the vm\n"
            # the gateway and resolver from the command line are in the guest
            vm.send(console.control_line("EXEC", "r1", ["sh", "-c", "ip route; cat /etc/resolv.conf /etc/hostname"]))
            _, _, code, out = vm.expect("EXITED", "r1")
            assert code == "0"
            assert f"default via {net[1]}" in out and f"nameserver {net[1]}" in out and "vmtest" in out
            vm.send(console.control_line("SIGNAL", "TERM"))
            assert vm.expect("EXIT") == ("EXIT", str(128 + signal.SIGTERM))
            assert vm.wait_exit() == 0


def test_the_commands_exit_code_ends_the_vm(vm_boot, tmp_path):
    with VM(vm_boot, tmp_path, command=["sh", "-c", "echo about to exit; exit 3"]) as vm:
        assert vm.expect("EXIT") == ("EXIT", "3")
        # qemu exits by itself (-no-reboot and the init's reboot -f), the code on the console too
        assert vm.wait_exit() == 0
        print(f"boot, run and power-off in {time.monotonic() - vm.started:.1f} s")
        lines = [line.strip() for line in vm.console().splitlines()]
        assert "about to exit" in lines
        assert lines.index("MARIPOSA START") < lines.index("about to exit") < lines.index("MARIPOSA EXIT 3")
        assert "MARIPOSA READY" in lines


def test_exec_and_signal_on_the_control_channel(vm_boot, tmp_path):
    command = ["sh", "-c", 'trap "echo stopping on TERM; exit 7" TERM; while true; do sleep 0.2; done']
    with VM(vm_boot, tmp_path, command=command, env={"GREETING": "hi there"}, workdir="/tmp",
             user=(65534, 65534)) as vm:
        vm.ready()
        vm.send(console.control_line("PING", "p-1"))
        assert vm.expect("PONG") == ("PONG", "p-1")
        # the command's environment, user and working directory; stdout and stderr together
        argv = ["sh", "-c", 'echo "$GREETING"; id -u; pwd; echo oops >&2; exit 5']
        vm.send(console.control_line("EXEC", "e1", argv))
        assert vm.expect("EXITED", "e1") == ("EXITED", "e1", "5", "hi there\n65534\n/tmp\noops\n")
        # concurrent EXECs answer each on its own line, whatever order they finish in
        vm.send(console.control_line("EXEC", "slow", ["sh", "-c", "sleep 2; echo slow"]))
        vm.send(console.control_line("EXEC", "fast", ["echo", "fast"]))
        answers = {vm.expect("EXITED")[1:] for _ in range(2)}
        assert answers == {("slow", "0", "slow\n"), ("fast", "0", "fast\n")}
        # a daemon that restarts connects again and is answered as before
        vm.reconnect()
        vm.send(console.control_line("PING", "p-2"))
        assert vm.expect("PONG") == ("PONG", "p-2")
        vm.send(console.control_line("EXEC", "nope", ["/no/such/program"]))
        _, _, code, out = vm.expect("EXITED", "nope")
        assert code == "127" and "/no/such/program" in out
        # a graceful stop: TERM reaches the command, which exits its own way
        vm.send(console.control_line("SIGNAL", "TERM"))
        assert vm.expect("EXIT") == ("EXIT", "7")
        assert vm.wait_exit() == 0
        assert "stopping on TERM" in vm.console()


def test_a_volume_disk_keeps_its_data_across_boots(vm_boot, tmp_path):
    volume = disks.volume_disk(tmp_path / "vol.raw", 16)
    count = ["sh", "-c", "n=$(cat /data/count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /data/count; "
                         "echo count=$n; touch /ro/denied 2>/dev/null && exit 9; exit 0"]
    other = disks.volume_disk(tmp_path / "other.raw", 8)
    for expected in (1, 2):
        # a new overlay each time: only the volume carries the count over
        with VM(vm_boot, tmp_path, command=count, volumes=[(volume, "/data", False), (other, "/ro", True)]) as vm:
            assert vm.expect("EXIT") == ("EXIT", "0"), vm.console()
            assert vm.wait_exit() == 0
            assert f"count={expected}" in vm.console()
    assert disks.volume_disk(tmp_path / "vol.raw", 16) == volume  # kept, not made again


def test_arguments_and_environment_survive_any_character(vm_boot, tmp_path):
    tricky = {
        "SPACES": "  leading and trailing  ",
        "QUOTES": "it's \"quoted\" `cmd` $HOME \\ backslash",
        "NEWLINES": "line one\nline two\n\n",
        "EMPTY": "",
        "UNICODE": "café ☕ = ok",
        "EQUALS": "a=b=c",
    }
    # each value back as base64 on its own line: "NAME B64"
    script = ('for k in SPACES QUOTES NEWLINES EMPTY UNICODE EQUALS; do eval "v=\\"\\$$k\\""; '
              'printf "%s %s\\n" "$k" "$(printf %s "$v" | base64 -w 0)"; done; '
              'printf "ARG %s\\n" "$(printf %s "$1" | base64 -w 0)"')
    arg = "arg with 'quotes', \"double\", $dollar and a\nnewline\n"
    with VM(vm_boot, tmp_path, command=["sh", "-c", script, "sh", arg], env=tricky) as vm:
        assert vm.expect("EXIT") == ("EXIT", "0")
        vm.wait_exit()
        seen = {}
        for line in vm.console().splitlines():
            parts = line.strip().split(" ")
            if len(parts) == 2 and (parts[0] in tricky or parts[0] == "ARG"):
                seen[parts[0]] = base64.b64decode(parts[1]).decode()
            elif len(parts) == 1 and parts[0] in tricky:
                seen[parts[0]] = ""
        assert seen == {**tricky, "ARG": arg}


def test_a_boot_failure_is_reported_and_ends_the_vm(vm_boot, tmp_path):
    # a volume listed in the mounts file whose disk is not attached
    bad = disks.config_disk(tmp_path / "bad.raw", command=["true"], env={}, workdir=None, user=None,
                            mounts=[("/dev/vdc", "/data", False)])
    vm = VM(vm_boot, tmp_path, command=["true"])
    vm.argv[vm.argv.index(next(a for a in vm.argv if "id=config," in a))] = \
        f"id=config,file={bad},format=raw,if=none,cache=writeback,discard=unmap,read-only=on"
    with vm:
        failed = vm.console
        wait_until(lambda: "MARIPOSA ERROR" in failed(), timeout=BOOT, what="the init's error")
        assert vm.wait_exit() == 0
        assert "MARIPOSA ERROR no volume disk /dev/vdc" in vm.console()


def test_disk_images_are_probed_and_bad_ones_refused(vm_boot, tmp_path):
    fmt, size = disks.probe_image(vm_boot.base)
    assert fmt == "raw" and size == vm_boot.base.stat().st_size
    grown = disks.overlay(vm_boot.base, tmp_path / "grown.qcow2", virtual_size_mb=size // disks.MB + 100)
    assert disks.probe_image(grown) == ("qcow2", size + 100 * disks.MB)
    assert disks.probe_image(disks.overlay(vm_boot.base, tmp_path / "same.qcow2")) == ("qcow2", size)
    with pytest.raises(DriverError, match="smaller than the base disk"):
        disks.overlay(vm_boot.base, tmp_path / "small.qcow2", virtual_size_mb=1)
    assert not (tmp_path / "small.qcow2").exists()
    with pytest.raises(DriverError, match=f"disk image {tmp_path / 'missing.qcow2'} does not exist"):
        disks.probe_image(tmp_path / "missing.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", str(tmp_path / "disk.vhd"), "16M"], check=True)
    with pytest.raises(DriverError, match=f"disk image {tmp_path / 'disk.vhd'} is vpc, not qcow2 or raw"):
        disks.probe_image(tmp_path / "disk.vhd")
    with pytest.raises(DriverError, match="is an overlay of"):  # never a chain through an overlay
        disks.overlay(grown, tmp_path / "chained.qcow2")
    # a standalone qcow2 (a disk image of the user's) is a base like a raw one
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(grown), str(tmp_path / "flat.qcow2")], check=True)
    assert disks.probe_image(disks.overlay(tmp_path / "flat.qcow2", tmp_path / "over.qcow2")) == \
        ("qcow2", size + 100 * disks.MB)
    # a rootfs that is no directory: mkfs is not even tried
    with pytest.raises(DriverError, match="is not a directory"):
        disks.base_disk(tmp_path / "nothing", tmp_path / "nothing.raw")
    # mkfs.ext4's own complaint comes through (a base disk too small for its tree)
    rootfs = tmp_path / "big"
    rootfs.mkdir()
    (rootfs / "blob").write_bytes(os.urandom(3 * disks.MB))
    with pytest.raises(DriverError, match="mkfs.ext4 failed"):
        disks.base_disk(rootfs, tmp_path / "tiny.raw", size_mb=2)
    assert not (tmp_path / "tiny.raw").exists() and not list(tmp_path.glob(".tiny.raw.*"))


def test_without_a_command_the_images_own_init_takes_over(vm_boot, tmp_path):
    # the test image has no /sbin/init: the init says so and the VM ends
    with VM(vm_boot, tmp_path, command=None) as vm:
        wait_until(lambda: "MARIPOSA ERROR" in vm.console(), timeout=BOOT, what="the init's error")
        assert vm.wait_exit() == 0
        assert "MARIPOSA ERROR no command and no /sbin/init in the image" in vm.console()
    # one with busybox's init, whose rcS reports and reboots
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(vm_boot.rootfs), str(rootfs)], check=True)
    (rootfs / "sbin" / "init").symlink_to("/bin/busybox")
    (rootfs / "etc" / "init.d").mkdir()
    (rootfs / "etc" / "init.d" / "rcS").write_text(
        "#!/bin/sh\necho \"image init is pid $PPID, busybox binds $(grep -c mariposa/bin /proc/mounts)\"\nreboot -f\n")
    (rootfs / "etc" / "init.d" / "rcS").chmod(0o755)
    system = attrs.evolve(vm_boot, base=disks.base_disk(rootfs, tmp_path / "system.raw"))
    with VM(system, tmp_path, command=None) as vm:
        wait_until(lambda: "image init is pid" in vm.console(), timeout=BOOT, what="the image's rcS")
        assert vm.wait_exit() == 0
        lines = [line.strip() for line in vm.console().splitlines()]
        assert "MARIPOSA READY" in lines and "image init is pid 1, busybox binds 0" in lines
