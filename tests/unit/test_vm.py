"""The pure parts of ``mariposa/vm/``: the guest's line protocol, the kernel command line, the QEMU
command, the config disk's files, the cpio writer and the kernel extraction (on synthetic input).
Booting them for real is tests/integration/test_vm_boot.py."""

from __future__ import annotations

import base64
import gzip
import lzma
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mariposa.drivers.base import RuntimeUnavailable
from mariposa.vm import console, disks, initramfs, kernel

# ---- console.parse and control_line


@pytest.mark.parametrize(("line", "parsed"), [
    ("MARIPOSA READY\r\n", ("READY",)),
    ("MARIPOSA READY", ("READY",)),
    ("MARIPOSA EXIT 3\n", ("EXIT", "3")),
    ("MARIPOSA EXIT 143", ("EXIT", "143")),
    ("MARIPOSA ERROR no root disk /dev/vda", ("ERROR", "no root disk /dev/vda")),
    ("PONG p-1", ("PONG", "p-1")),
    ("EXITED e1 5 " + base64.b64encode(b"out\nerr").decode(), ("EXITED", "e1", "5", "out\nerr")),
    ("EXITED e2 0 ", ("EXITED", "e2", "0", "")),
    ("EXITED e2 0", ("EXITED", "e2", "0", "")),
    ("EXITED e3 1 " + base64.b64encode(b"caf\xe9").decode(), ("EXITED", "e3", "1", "caf\ufffd")),
])
def test_guest_lines(line, parsed):
    assert console.parse(line) == parsed


@pytest.mark.parametrize("line", [
    "", "[    0.488087] PCI: Fatal: No config space access function found", "MARIPOSA", "MARIPOSA READY now",
    "MARIPOSA EXIT", "MARIPOSA EXIT three", "MARIPOSA EXIT -1", "MARIPOSA WHAT", "EXITED e1 x b3V0",
    "EXITED e1 0 not-base64!", "EXITED bad/id 0 ", "PONG", "PONG a b", "mariposa ready", "hello MARIPOSA READY",
])
def test_other_lines_are_not_protocol(line):
    assert console.parse(line) is None


def test_control_lines():
    assert console.control_line("SIGNAL", "TERM") == b"SIGNAL TERM\n"
    assert console.control_line("PING", "x.1") == b"PING x.1\n"
    line = console.control_line("EXEC", "e1", ["sh", "-c", "echo a b\nc", ""])
    kind, id_, argv = line.decode().rstrip("\n").split(" ")
    assert (kind, id_) == ("EXEC", "e1")
    assert base64.b64decode(argv).split(b"\0") == [b"sh", b"-c", b"echo a b\nc", b""]
    for bad in [("SIGNAL", "term"), ("SIGNAL", "TERM; reboot"), ("PING", "a b"), ("PING", ""), ("EXEC", "e", []),
                ("EXEC", "e", ["a\0b"]), ("EXEC", "e 1", ["true"]), ("EXEC", "e", "true"), ("REBOOT",)]:
        with pytest.raises(ValueError):
            console.control_line(*bad)


# ---- command_line


def test_command_line():
    line = console.command_line("10.1.2.3/24", "10.1.2.1", ["10.1.2.1", "9.9.9.9"], "web-1.proj")
    words = line.split(" ")
    assert words[:3] == ["console=ttyS0", "quiet", "tsc_early_khz=2300000"]
    assert "panic=-1" in words
    assert words[-4:] == ["mariposa.ip=10.1.2.3/24", "mariposa.gw=10.1.2.1", "mariposa.dns=10.1.2.1,9.9.9.9",
                          "mariposa.hostname=web-1.proj"]
    assert not any(w.startswith("mariposa.") for w in console.command_line(None, None, [], None).split())
    # under KVM the guest reads the TSC's frequency from the hypervisor
    assert "tsc_early_khz" not in console.command_line(None, None, [], None, tsc_khz=None)


@pytest.mark.parametrize(("args", "field"), [
    (("10.1.2.3", None, [], None), "ip"),
    (("10.1.2.300/24", None, [], None), "ip"),
    ((None, "gw", [], None), "gateway"),
    ((None, None, ["1.1.1.1 quiet"], None), "dns"),
    ((None, None, [], "two words"), "hostname"),
    ((None, None, [], "x init=/bin/sh"), "hostname"),
    ((None, None, [], "-lead"), "hostname"),
])
def test_command_line_refuses_what_would_change_the_kernel_command_line(args, field):
    with pytest.raises(ValueError, match=field):
        console.command_line(*args)


# ---- qemu_argv


def argv(**over):
    base = dict(vmlinux=Path("/k/vmlinux"), initrd=Path("/k/initrd"), root_disk=Path("/i/root.qcow2"),
                config_disk=Path("/i/config.raw"), volume_disks=[Path("/v/a.raw"), Path("/v/b,c.raw")],
                console_log=Path("/i/console.log"), control_socket=Path("/i/ctl.sock"), qmp_socket=Path("/i/qmp.sock"),
                tap="mvt0", mac="52:54:00:12:34:56", memory_mb=128, cpus=2, accel="tcg", cmdline="console=ttyS0 quiet")
    base.update(over)
    return console.qemu_argv(**base)


def options(a: list[str], flag: str) -> list[str]:
    return [a[i + 1] for i, x in enumerate(a) if x == flag]


def test_qemu_argv():
    a = argv()
    assert a[0] == "qemu-system-x86_64"
    assert options(a, "-M") == ["microvm,pit=on,rtc=on"] and options(a, "-accel") == ["tcg"]
    assert options(a, "-m") == ["128"] and options(a, "-smp") == ["2"]
    for flag in ("-nodefaults", "-no-reboot"):
        assert flag in a
    assert options(a, "-display") == ["none"]
    assert options(a, "-kernel") == ["/k/vmlinux"] and options(a, "-initrd") == ["/k/initrd"]
    assert options(a, "-append") == ["console=ttyS0 quiet"]
    # the disks in order (vda root, vdb config read-only, then volumes), commas in paths doubled
    drives = options(a, "-drive")
    assert [d.split(",")[0] for d in drives] == ["id=root", "id=config", "id=vol0", "id=vol1"]
    assert "file=/i/root.qcow2,format=qcow2" in drives[0]
    assert "read-only=on" in drives[1] and "read-only=on" not in drives[2]
    assert "file=/v/b,,c.raw,format=raw" in drives[3]
    assert options(a, "-device")[-5:] == [
        "virtio-blk-device,drive=root", "virtio-blk-device,drive=config", "virtio-blk-device,drive=vol0",
        "virtio-blk-device,drive=vol1", "virtio-net-device,netdev=n0,mac=52:54:00:12:34:56"]
    assert options(a, "-netdev") == ["tap,id=n0,ifname=mvt0,script=no,downscript=no"]
    # console to a file (ttyS0), control on the second serial port (ttyS1), QMP
    chardevs = options(a, "-chardev")
    assert "file,id=console,path=/i/console.log" in chardevs
    assert "file,id=console,path=/i/console.log,append=on" in options(argv(console_append=True), "-chardev")
    assert "socket,id=control,path=/i/ctl.sock,server=on,wait=off" in chardevs
    assert "isa-serial,chardev=control,index=1" in options(a, "-device")
    assert "socket,id=qmp,path=/i/qmp.sock,server=on,wait=off" in chardevs
    assert options(a, "-mon") == ["chardev=qmp,mode=control"]


def test_qemu_argv_without_network_or_volumes_and_with_kvm():
    a = argv(tap=None, mac=None, volume_disks=[], accel="kvm")
    assert "-netdev" not in a and not any(d.startswith("virtio-net") for d in options(a, "-device"))
    assert [d.split(",")[0] for d in options(a, "-drive")] == ["id=root", "id=config"]
    assert options(a, "-accel") == ["kvm"]


def test_qemu_argv_on_q35_with_a_kernel_and_through_the_firmware():
    a = argv(machine="q35")
    assert options(a, "-M") == ["q35"] and options(a, "-kernel") == ["/k/vmlinux"]
    assert options(a, "-device")[-3:] == ["virtio-blk-pci,drive=vol0", "virtio-blk-pci,drive=vol1",
                                          "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
    firmware = argv(machine="q35", vmlinux=None, initrd=None, cmdline=None)
    assert "-kernel" not in firmware and "-initrd" not in firmware and "-append" not in firmware
    assert "isa-serial,chardev=control,index=1" in options(firmware, "-device")
    agent = argv(machine="q35", guest_agent=Path("/r/qga.sock"))
    assert "socket,id=qga,path=/r/qga.sock,server=on,wait=off" in options(agent, "-chardev")
    assert {"virtio-serial-pci,id=vser", "virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0"} \
        <= set(options(agent, "-device"))
    assert "virtio-serial-device,id=vser" in options(argv(guest_agent=Path("/r/qga.sock")), "-device")


@pytest.mark.parametrize(("over", "message"), [
    ({"machine": "pc"}, "machine"), ({"vmlinux": None}, "need a kernel"),
    ({"vmlinux": None, "initrd": None, "cmdline": None}, "microvm has no firmware"),
    ({"accel": "hvf"}, "accel"), ({"memory_mb": 16}, "memory"), ({"cpus": 0}, "cpus"),
    ({"tap": None}, "tap and mac"), ({"control_socket": Path("/" + "x" * 120)}, "control socket"),
    ({"qmp_socket": Path("/" + "x" * 120)}, "QMP socket"), ({"volume_disks": [Path("/v")] * 23}, "volumes"),
])
def test_qemu_argv_refuses(over, message):
    with pytest.raises(ValueError, match=message):
        argv(**over)


# ---- the config disk's files


TEXT = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]))


@given(command=st.one_of(st.none(), st.lists(TEXT, min_size=1, max_size=5)),
       env=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), TEXT, max_size=5),
       workdir=st.one_of(st.none(), st.just("/srv/app dir")),
       user=st.one_of(st.none(), st.tuples(st.integers(0, 2**31), st.integers(0, 2**31))))
def test_config_round_trip(command, env, workdir, user):
    mounts = [("/dev/vdc", "/data", False), ("/dev/vdd", "/etc/conf.d", True)]
    files = disks.config_files(command=command, env=env, workdir=workdir, user=user, mounts=mounts,
                               files={"mdata/user-script": b"#!/bin/sh\n"})
    # one line per argument and variable, whatever the value holds: the guest reads lines
    if command is not None:
        assert files["command"].count(b"\n") == len(command)
    assert files["env"].count(b"\n") == len(env)
    assert disks.parse_config(files) == {"command": command, "env": env, "workdir": workdir, "user": user,
                                         "mounts": mounts, "files": {"mdata/user-script": b"#!/bin/sh\n"}}
    assert files["mounts"] == b"/dev/vdc /data rw\n/dev/vdd /etc/conf.d ro\n"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"command": []}, "empty argv"),
    ({"command": ["a\0b"]}, "NUL"),
    ({"env": {"A=B": "x"}}, "not a variable name"),
    ({"env": {"1A": "x"}}, "not a variable name"),
    ({"env": {"A": "x\0"}}, "NUL"),
    ({"workdir": "relative"}, "workdir"),
    ({"user": (-1, 0)}, "user"),
    ({"mounts": [("/dev/sda", "/data", False)]}, "virtio disk"),
    ({"mounts": [("/dev/vdc", "data", False)]}, "absolute"),
    ({"mounts": [("/dev/vdc", "/my data", False)]}, "without spaces"),
    ({"mounts": [("/dev/vdc", "/", False)]}, "other than /"),
    ({"files": {"../escape": b""}}, "relative path"),
    ({"files": {"/abs": b""}}, "relative path"),
    ({"files": {"env": b""}}, "config's own file"),
])
def test_config_refuses(kwargs, message):
    args = {"command": ["true"], "env": {}, "workdir": None, "user": None, "mounts": [], **kwargs}
    with pytest.raises(ValueError, match=message):
        disks.config_files(**args)


# ---- the cpio writer


def test_newc_archive_reads_back_with_cpio(tmp_path):
    archive = initramfs.newc([
        ("bin", stat.S_IFDIR | 0o755, b"", 0),
        ("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n", 0),
        ("bin/link", stat.S_IFLNK | 0o777, b"hello", 0),
        ("odd", stat.S_IFREG | 0o644, b"x" * 5, 0),
    ])
    assert archive == initramfs.newc([
        ("bin", stat.S_IFDIR | 0o755, b"", 0),
        ("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n", 0),
        ("bin/link", stat.S_IFLNK | 0o777, b"hello", 0),
        ("odd", stat.S_IFREG | 0o644, b"x" * 5, 0),
    ])  # deterministic
    listing = subprocess.run(["busybox", "cpio", "-t"], input=archive, capture_output=True, check=True).stdout
    assert listing.decode().split() == ["bin", "bin/hello", "bin/link", "odd"]
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=archive, cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "bin" / "hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "bin" / "link").readlink() == Path("hello")
    assert (tmp_path / "odd").read_bytes() == b"xxxxx"
    assert archive.endswith(b"TRAILER!!!\0" + b"\0" * (-(110 + 11) % 4)) and len(archive) % 4 == 0


def test_initramfs_is_cached_by_content(tmp_path, monkeypatch):
    modules = tmp_path / "k" / "modules"
    modules.mkdir(parents=True)
    (modules / "virtio.ko").write_bytes(b"\x7fELF fake module")
    (modules / "order").write_text("virtio\n")
    k = kernel.Kernel(vmlinux=tmp_path / "k" / "vmlinux", modules=modules, version="6.1.0-test")
    first = initramfs.build(k, tmp_path / "out")
    assert initramfs.build(k, tmp_path / "out") == first
    listing = subprocess.run(["busybox", "cpio", "-t"], input=gzip.decompress(first.read_bytes()),
                             capture_output=True, check=True).stdout.decode().split()
    for name in ("init", "bin/busybox", "bin/sh", "dev/console", "modules/virtio.ko", "modules/order", "newroot"):
        assert name in listing
    (modules / "virtio.ko").write_bytes(b"\x7fELF another module")
    second = initramfs.build(k, tmp_path / "out")
    assert second != first and first.exists() and second.exists()
    monkeypatch.setattr(initramfs, "init_script", lambda: b"#!/bin/sh\n")
    assert initramfs.build(k, tmp_path / "out") not in (first, second)


# ---- the kernel's extraction, on synthetic input


def bzimage(payload: bytes, version: int = 0x20F) -> bytes:
    setup_sects = 3
    header = bytearray((setup_sects + 1) * 512)
    header[0x1F1] = setup_sects
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", header, 0x206, version)
    struct.pack_into("<II", header, 0x248, 100, len(payload))
    return bytes(header) + b"\0" * 100 + payload + b"trailing junk"


def test_vmlinux_from_a_gzip_payload():
    elf = b"\x7fELF" + bytes(range(256)) * 100
    assert kernel.extract_vmlinux(bzimage(gzip.compress(elf))) == elf
    # no usable boot header: found by the magic
    assert kernel.extract_vmlinux(bzimage(gzip.compress(elf), version=0x200)) == elf


def test_vmlinux_from_an_lz4_payload_checks_the_size():
    elf = b"\x7fELF" + bytes(range(256)) * 100
    compressed = subprocess.run(["lz4", "-l", "-c"], input=elf, capture_output=True, check=True).stdout
    assert kernel.extract_vmlinux(bzimage(compressed + struct.pack("<I", len(elf)))) == elf
    with pytest.raises(RuntimeUnavailable, match="header says"):
        kernel.extract_vmlinux(bzimage(compressed + struct.pack("<I", len(elf) + 1)))


def test_vmlinux_refuses_what_is_not_a_kernel():
    with pytest.raises(RuntimeUnavailable, match="not an ELF"):
        kernel.extract_vmlinux(bzimage(gzip.compress(b"not a kernel")))
    with pytest.raises(RuntimeUnavailable, match="no compressed payload"):
        kernel.extract_vmlinux(b"\0" * 4096)


def fake_module(depends: str) -> bytes:
    return b"\x7fELF....\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1\0"


def test_module_order_puts_dependencies_first_and_skips_builtins(tmp_path):
    tree = tmp_path / "lib" / "modules" / "6.1.0"
    for rel, deps in [("drivers/virtio/virtio_ring.ko", ""), ("drivers/virtio/virtio.ko", ""),
                      ("drivers/virtio/virtio_mmio.ko", "virtio,virtio_ring"),
                      ("drivers/net/virtio_net.ko", "net_failover,virtio,virtio_ring"),
                      ("drivers/net/net_failover.ko", "failover"), ("net/core/failover.ko", ""),
                      ("drivers/block/virtio_blk.ko", "virtio,virtio_ring")]:
        (tree / "kernel" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / "kernel" / rel).write_bytes(fake_module(deps))
    (tree / "kernel" / "fs" / "jbd2").mkdir(parents=True)
    (tree / "kernel" / "fs" / "jbd2" / "jbd2.ko.xz").write_bytes(lzma.compress(fake_module("")))
    (tree / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\nkernel/fs/mbcache.ko\n")
    order = kernel.module_order(tree, ("virtio_net", "virtio_mmio", "virtio_blk", "jbd2", "ext4", "absent"))
    # depth first, each module after what it depends on, in the order asked otherwise
    assert [name for name, _ in order] == ["failover", "net_failover", "virtio", "virtio_ring", "virtio_net",
                                           "virtio_mmio", "virtio_blk", "jbd2"]
    assert dict(order)["jbd2"] == fake_module("")  # decompressed
    (tree / "kernel" / "net" / "core" / "failover.ko").unlink()
    with pytest.raises(RuntimeUnavailable, match="failover .needed by net_failover"):
        kernel.module_order(tree, ("virtio_net",))


def test_find_says_how_to_fetch(tmp_path):
    with pytest.raises(RuntimeUnavailable, match=f"no kernel in {tmp_path}: run python -m mariposa.vm.kernel fetch"):
        kernel.find(tmp_path)
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "order").write_text("virtio\n")
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    (tmp_path / "version").write_text("6.1.0-x\n")
    assert kernel.find(tmp_path) == kernel.Kernel(vmlinux=tmp_path / "vmlinux", modules=tmp_path / "modules",
                                                  version="6.1.0-x")
    assert kernel.find(tmp_path).module_order == ["virtio"]


async def _agent_server(path, answers: bool, stale: bool = False) -> None:
    """A stand-in for qemu-ga on a unix socket: answers guest-sync (after a stale answer of a
    client before, when ``stale``), guest-exec and guest-exec-status (running once, then exited)."""
    import json as _json
    import socket as _socket

    import trio

    sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(1)
    conn, _ = await sock.accept()
    polls = 0
    buffer = b""
    with conn:
        while True:
            data = await conn.recv(65536)
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                msg = _json.loads(raw)
                if not answers:
                    continue
                if msg["execute"] == "guest-sync":
                    out = ([{"return": 7}] if stale else []) + [{"return": msg["arguments"]["id"]}]
                elif msg["execute"] == "guest-exec":
                    assert msg["arguments"] == {"path": "sh", "arg": ["-c", "exit 3"], "capture-output": True}
                    out = [{"return": {"pid": 42}}]
                else:
                    polls += 1
                    out = [{"return": {"exited": False}}] if polls == 1 else [{"return": {
                        "exited": True, "exitcode": 3, "out-data": base64.b64encode(b"out ").decode(),
                        "err-data": base64.b64encode(b"err").decode()}}]
                for o in out:
                    await conn.send(_json.dumps(o).encode() + b"\n")


async def test_the_guest_agent_runs_a_command_and_says_unsupported_when_none_answers(tmp_path, monkeypatch):
    import trio

    from mariposa.drivers.base import DriverError
    from mariposa.vm import guest_agent

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_agent_server, tmp_path / "a.sock", True, True)
        await trio.sleep(0.05)
        assert await guest_agent.run(tmp_path / "a.sock", ["sh", "-c", "exit 3"], "vm") == (3, b"out err")
    monkeypatch.setattr(guest_agent, "SYNC_TIMEOUT", 0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_agent_server, tmp_path / "b.sock", False)
        await trio.sleep(0.05)
        with pytest.raises(DriverError, match="no QEMU guest agent answers"):
            await guest_agent.run(tmp_path / "b.sock", ["true"], "vm")
        nursery.cancel_scope.cancel()
    with pytest.raises(DriverError, match="unsupported"):
        await guest_agent.run(tmp_path / "none.sock", ["true"], "vm")
