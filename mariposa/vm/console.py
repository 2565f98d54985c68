"""The host's side of the guest protocol of ``init.sh``, as pure functions: the kernel command line,
the ``qemu-system-x86_64`` command, and the lines the guest prints.

Lines from the guest (console ``ttyS0`` and control channel ``ttyS1``)::

    MARIPOSA START                  the command's output follows (console only)
    MARIPOSA READY                  the command runs (exec'd: disks and network are up)
    MARIPOSA EXIT CODE              the command exited (128+N: killed by signal N); the VM powers off
    MARIPOSA ERROR WHAT             the init could not start the command; the VM powers off
    EXITED ID CODE B64OUTPUT        an EXEC finished (control channel only)
    PONG ID                         answer to PING ID (control channel only)

Lines to the guest, on the control channel (``control_line`` builds them)::

    SIGNAL NAME                     kill -NAME the command (TERM for a graceful stop)
    EXEC ID B64ARGV [UID:GID]       run argv (base64 of the args joined by NUL) in the image, as
                                    the command runs (environment, user, workdir), or as the user
                                    given; its answer carries the first 256 KiB of its output
    PING ID
    MDATA B64TAR                    the mdata files now (base64 of a tar of KEY files), which the
                                    init swaps in whole at /run/mariposa/mdata

Why the control channel is the second ISA serial port and not virtio-console: ``-M microvm``
has an ISA bus and the guest kernel has the 8250 driver built in, so a second port needs no
module and no device beyond ``-device isa-serial``; the console stays a plain file QEMU appends
to, which survives a daemon restart, and the control socket is the only one the driver talks on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from pathlib import Path

__all__ = ["TSC_KHZ", "command_line", "control_line", "decode_output", "parse", "qemu_argv", "virtio_kind"]

# The TSC frequency the guest kernel is told under TCG: without it the kernel calibrates the TSC
# against an emulated PIT, and half the boots hang (issue 15).
TSC_KHZ = 2300000
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_ID = re.compile(r"[A-Za-z0-9_.-]+\Z")
_SIGNAL = re.compile(r"[A-Z0-9]+\Z")
_USER = re.compile(r"[0-9]+:[0-9]+\Z")
_B64 = re.compile(r"[A-Za-z0-9+/=]+\Z")
# sun_path is 108 bytes with its NUL
_MAX_SOCKET = 107


def parse(line: str) -> tuple[str, ...] | None:
    """One guest line as ("START",), ("READY",), ("EXIT", code), ("ERROR", what), ("EXITED", id, code,
    output) or ("PONG", id); None for anything else (kernel messages, the command's output).
    An EXITED output is decoded (UTF-8, undecodable bytes replaced)."""
    line = line.rstrip("\r\n").rstrip("\r")
    words = line.split(" ")
    if words[0] == "MARIPOSA" and len(words) >= 2:
        if words[1] in ("READY", "START") and len(words) == 2:
            return (words[1],)
        if words[1] == "EXIT" and len(words) == 3 and words[2].isdigit():
            return ("EXIT", words[2])
        if words[1] == "ERROR":
            return ("ERROR", " ".join(words[2:]))
        return None
    if words[0] == "EXITED" and len(words) in (3, 4) and _ID.match(words[1]) and words[2].isdigit():
        output = decode_output(words[3] if len(words) == 4 else "")
        if output is None:
            return None
        return ("EXITED", words[1], words[2], output.decode("utf-8", "replace"))
    if words[0] == "PONG" and len(words) == 2 and _ID.match(words[1]):
        return ("PONG", words[1])
    return None


def decode_output(b64: str) -> bytes | None:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None


def control_line(kind: str, *args: str | list[str]) -> bytes:
    """A line for the guest: control_line("SIGNAL", "TERM"), control_line("EXEC", id, argv),
    control_line("PING", id). ``ValueError`` for a malformed one (the guest would drop it)."""
    if kind == "SIGNAL" and len(args) == 1 and isinstance(args[0], str) and _SIGNAL.match(args[0]):
        return f"SIGNAL {args[0]}\n".encode()
    if kind == "MDATA" and len(args) == 1 and isinstance(args[0], str) and _B64.match(args[0]):
        return f"MDATA {args[0]}\n".encode()
    if kind == "PING" and len(args) == 1 and isinstance(args[0], str) and _ID.match(args[0]):
        return f"PING {args[0]}\n".encode()
    if kind == "EXEC" and len(args) in (2, 3) and isinstance(args[0], str) and _ID.match(args[0]):
        argv = args[1]
        if not isinstance(argv, list) or not argv or any("\0" in a for a in argv):
            raise ValueError("EXEC: argv must be a non-empty list of strings without NUL")
        user = args[2] if len(args) == 3 else ""
        if not isinstance(user, str) or (user and not _USER.match(user)):
            raise ValueError(f"EXEC: user {user!r} is not UID:GID")
        joined = "\0".join(argv).encode("utf-8", "surrogateescape")
        return f"EXEC {args[0]} {base64.b64encode(joined).decode()}{' ' + user if user else ''}\n".encode()
    raise ValueError(f"not a control line: {kind} {args!r}")


def command_line(ip_cidr: str | None, gateway: str | None, dns: list[str], hostname: str | None, *,
                 tsc_khz: int | None = TSC_KHZ) -> str:
    """The guest kernel's command line: the console, TCG's TSC (``tsc_khz=None`` under KVM, whose
    guests read the TSC's frequency from the hypervisor), end on panic (``panic=-1`` reboots at
    once, which ``-no-reboot`` turns into QEMU's exit), and what ``/init`` configures (address with
    prefix, gateway, resolvers, hostname)."""
    parts = ["console=ttyS0", "quiet"]
    if tsc_khz is not None:
        parts.append(f"tsc_early_khz={int(tsc_khz)}")
    parts += ["panic=-1", "root=/dev/vda"]
    if ip_cidr is not None:
        try:
            ipaddress.ip_interface(ip_cidr)
        except ValueError:
            raise ValueError(f"ip: {ip_cidr!r} is not an address with a prefix (10.0.0.2/24)") from None
        if "/" not in ip_cidr:
            raise ValueError(f"ip: {ip_cidr!r} has no prefix length")
        parts.append(f"mariposa.ip={ip_cidr}")
    if gateway is not None:
        try:
            ipaddress.ip_address(gateway)
        except ValueError:
            raise ValueError(f"gateway: {gateway!r} is not an address") from None
        parts.append(f"mariposa.gw={gateway}")
    if dns:
        for server in dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValueError(f"dns: {server!r} is not an address") from None
        parts.append(f"mariposa.dns={','.join(dns)}")
    if hostname is not None:
        if not _HOSTNAME.match(hostname) or len(hostname) > 253:
            raise ValueError(f"hostname: {hostname!r} is not a host name")
        parts.append(f"mariposa.hostname={hostname}")
    return " ".join(parts)


def _opt(value: Path | str) -> str:
    """A value inside a QEMU option list: commas doubled, as QEMU's option parser wants."""
    return str(value).replace(",", ",,")


def _socket(path: Path | str, what: str) -> str:
    if len(str(path).encode()) > _MAX_SOCKET:
        raise ValueError(f"{what} socket path {path} is longer than {_MAX_SOCKET} bytes")
    return _opt(path)


def qemu_argv(*, vmlinux: Path | None, initrd: Path | None, root_disk: Path, config_disk: Path,
              volume_disks: list[Path], console_log: Path, control_socket: Path, qmp_socket: Path,
              tap: str | None, mac: str | None, memory_mb: int, cpus: int, accel: str, cmdline: str | None,
              root_format: str = "qcow2", console_append: bool = False, machine: str = "microvm",
              guest_agent: Path | None = None, qemu: str = "qemu-system-x86_64") -> list[str]:
    """The whole ``qemu-system-x86_64`` command of one VM. Disks appear in the guest in the order
    given: root ``/dev/vda``, config ``/dev/vdb``, volumes from ``/dev/vdc`` on. The console log
    is truncated at start unless ``console_append``.

    ``-M microvm``: no firmware and no PCI, so boots take what the kernel takes; the ISA serial
    ports and virtio-mmio are all it needs. ``-M q35`` (``machine="q35"``): SeaBIOS and PCI, for a
    disk image's own bootloader (``vmlinux=None``: the firmware boots the root disk) or a kernel
    that wants a PC; its devices are the ``-pci`` kinds. ``-no-reboot``: the guest's ``reboot -f``
    after the command exits ends QEMU, which is how the driver sees the exit."""
    if machine not in ("microvm", "q35"):
        raise ValueError(f"machine: {machine!r} is neither microvm nor q35")
    if vmlinux is None and (initrd is not None or cmdline is not None):
        raise ValueError("initrd and cmdline need a kernel")
    if vmlinux is None and machine == "microvm":
        raise ValueError("microvm has no firmware: it boots a kernel only")
    if accel not in ("tcg", "kvm"):
        raise ValueError(f"accel: {accel!r} is neither tcg nor kvm")
    if memory_mb < 32:
        raise ValueError(f"memory: {memory_mb} MB is too little to boot")
    if cpus < 1:
        raise ValueError(f"cpus: {cpus} is fewer than one")
    if (tap is None) != (mac is None):
        raise ValueError("tap and mac go together")
    if len(volume_disks) > 22:
        raise ValueError(f"{len(volume_disks)} volumes: at most 22 disks fit after the root and config disks")
    argv = [
        qemu,
        "-M", "microvm,pit=on,rtc=on" if machine == "microvm" else "q35",
        "-cpu", "max",
        "-accel", accel,
        "-m", str(memory_mb),
        "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={_opt(console_log)}" + (",append=on" if console_append else ""),
        "-serial", "chardev:console",
        "-chardev", f"socket,id=control,path={_socket(control_socket, 'control')},server=on,wait=off",
        "-device", "isa-serial,chardev=control,index=1",
        "-chardev", f"socket,id=qmp,path={_socket(qmp_socket, 'QMP')},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
    ]
    if vmlinux is not None:
        argv += ["-kernel", str(vmlinux)]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        if cmdline is not None:
            argv += ["-append", cmdline]
    kind = virtio_kind(machine)
    disks = [("root", root_disk, root_format, False), ("config", config_disk, "raw", True)]
    disks += [(f"vol{i}", path, "raw", False) for i, path in enumerate(volume_disks)]
    for name, path, fmt, read_only in disks:
        drive = f"id={name},file={_opt(path)},format={fmt},if=none,cache=writeback,discard=unmap"
        if read_only:
            drive += ",read-only=on"
        argv += ["-drive", drive, "-device", f"virtio-blk-{kind},drive={name}"]
    if guest_agent is not None:  # the port a QEMU guest agent in the guest listens on (its standard name)
        argv += ["-chardev", f"socket,id=qga,path={_socket(guest_agent, 'guest agent')},server=on,wait=off",
                 "-device", f"virtio-serial-{kind},id=vser", "-device",
                 "virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0"]
    if tap is not None:
        argv += ["-netdev", f"tap,id=n0,ifname={_opt(tap)},script=no,downscript=no",
                 "-device", f"virtio-net-{kind},netdev=n0,mac={mac}"]
    return argv


def virtio_kind(machine: str) -> str:
    """The transport of virtio devices on ``machine``: MMIO on microvm, PCI on q35."""
    return "device" if machine == "microvm" else "pci"
