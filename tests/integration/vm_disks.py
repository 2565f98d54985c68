"""Disk images of guests that boot an OS of their own (issue 15), built here from the host's
busybox-static and Mariposa's kernel, since no image can be downloaded:

- ``kernel_boot_disk``: a raw ext4 root disk whose ``/sbin/init`` is the guest's OS, with the
  host's QEMU guest agent (``qemu-ga`` and its libraries, Debian's ``qemu-guest-agent``), plus the
  kernel and an initrd that mounts ``/dev/vda`` and switches to it (``kernel:``/``initrd:``/
  ``cmdline:`` in the manifest);
- ``firmware_boot_disk``: an MBR disk with a FAT partition holding syslinux, the kernel and an
  initrd that is the whole OS, without an agent: SeaBIOS under ``machine: q35`` boots it as it
  would any PC disk.

The guest's OS takes its address by DHCP (udhcpc: Mariposa's DHCP server, mariposa/vm/dhcp.py)
and serves ``hello from HOSTNAME on ROOT`` over HTTP on port 80, ROOT saying which disk it runs
from. Both are made once per session under a directory of the caller's.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

from mariposa.vm import initramfs, kernel

MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")

# The guest's OS: network by DHCP, a web page, then wait (busybox as PID 1 ignores the ACPI
# power button: Mariposa's stop falls back to QMP quit after the stop timeout).
OS = r"""
guest_os() {
  where=$1
  /bin/busybox --install -s /bin 2>/dev/null
  mkdir -p /proc /sys /dev /tmp /www /etc
  mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys 2>/dev/null
  mount -t devtmpfs dev /dev 2>/dev/null
  cat > /tmp/lease.sh <<'EOS'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/$mask" dev "$interface"
[ -n "$router" ] && ip route add default via "$router"
[ -n "$hostname" ] && hostname "$hostname"
: > /etc/resolv.conf
for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done
echo "guest: lease $ip/$mask router $router dns $dns hostname $hostname"
EOS
  chmod +x /tmp/lease.sh
  ip link set lo up; ip link set eth0 up
  udhcpc -i eth0 -q -t 30 -T 1 -s /tmp/lease.sh || echo "guest: no lease"
  if [ -x /usr/sbin/qemu-ga ]; then  # the QEMU guest agent, on the port QEMU names for it
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && /usr/sbin/qemu-ga -d -m virtio-serial -p "$port" -f /tmp/qga.pid -t /tmp \
      && echo "guest: agent on $port"
  fi
  echo "hello from $(hostname) on $where" > /www/index.html
  httpd -p 80 -h /www
  echo "guest: serving on $where"
  while true; do sleep 3600; done
}
"""

INITRD_INIT = "#!/bin/sh\n" + OS + r"""
mount -t devtmpfs dev /dev 2>/dev/null; mount -t proc proc /proc; mount -t sysfs sys /sys
for m in $(cat /modules/order); do insmod /modules/$m.ko 2>/dev/null; done
if grep -q guestroot=vda /proc/cmdline; then
  mkdir -p /newroot
  if mount -t ext4 /dev/vda /newroot; then
    umount /proc /sys /dev 2>/dev/null
    exec switch_root /newroot /sbin/init
  fi
  echo "guest: cannot mount /dev/vda"
fi
guest_os initrd
"""

DISK_INIT = "#!/bin/busybox sh\n" + OS + "\nguest_os disk\n"


def _run(*argv: str, **kwargs) -> None:
    subprocess.run(argv, check=True, capture_output=True, **kwargs)


def _copy_with_libraries(binary: Path, root: Path) -> None:
    """``binary`` and the shared libraries ``ldd`` names, at their own paths under ``root``."""
    listing = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    paths = [binary] + [Path(word) for line in listing.splitlines() for word in line.split() if word.startswith("/")]
    for path in paths:
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)


def guest_initrd(out: Path) -> Path:
    """The guests' initrd: Mariposa's kernel modules, busybox and ``INITRD_INIT`` as ``/init``."""
    return initramfs.build(kernel.find(), out, init=INITRD_INIT.encode())


def kernel_boot_disk(out: Path) -> dict[str, Path]:
    """{"raw", "qcow2", "kernel", "initrd"}: the root disk (both formats), the kernel and initrd to boot it."""
    out.mkdir(parents=True, exist_ok=True)
    raw, qcow2 = out / "guest.raw", out / "guest.qcow2"
    if not qcow2.exists():
        root = out / "rootfs"
        shutil.rmtree(root, ignore_errors=True)
        for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "www"):
            (root / d).mkdir(parents=True)
        shutil.copy2(initramfs.BUSYBOX, root / "bin" / "busybox")
        os.symlink("busybox", root / "bin" / "sh")
        (root / "sbin" / "init").write_text(DISK_INIT)
        (root / "sbin" / "init").chmod(0o755)
        (root / "etc" / "guest").write_text("the disk image's own root\n")
        _copy_with_libraries(Path("/usr/sbin/qemu-ga"), root)
        raw.unlink(missing_ok=True)
        with open(raw, "wb") as f:
            f.truncate(32 << 20)
        _run("mkfs.ext4", "-q", "-F", "-d", str(root), str(raw))
        _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
    found = kernel.find()
    return {"raw": raw, "qcow2": qcow2, "kernel": found.vmlinux.parent / "vmlinuz", "initrd": guest_initrd(out)}


def firmware_boot_disk(out: Path) -> Path:
    """A raw MBR disk SeaBIOS boots: syslinux in the MBR and on a FAT partition with the kernel
    and the guests' initrd (no root disk: the initrd is the OS)."""
    out.mkdir(parents=True, exist_ok=True)
    disk = out / "firmware.img"
    if disk.exists():
        return disk
    tmp = out / "firmware.img.tmp"
    tmp.unlink(missing_ok=True)
    size_mb, start = 48, 2048  # sectors
    with open(tmp, "wb") as f:
        f.truncate(size_mb << 20)
    offset = start * 512
    sectors = ((size_mb << 20) - offset) // 512
    # one bootable FAT32-LBA partition (type 0x0c) from ``start`` to the end; CHS fields say "use LBA"
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x0C, b"\xfe\xff\xff", start, sectors)
    with open(tmp, "r+b") as f:
        f.seek(446)
        f.write(entry + bytes(48) + b"\x55\xaa")
    blocks = ((size_mb << 20) - offset) // 1024
    _run("mkfs.fat", "-n", "GUEST", "--offset", str(start), str(tmp), str(blocks))
    _run("syslinux", "--offset", str(offset), "--install", str(tmp))
    found = kernel.find()
    config = out / "syslinux.cfg"
    config.write_text("SERIAL 0 115200\nDEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  LINUX /vmlinuz\n"
                      "  INITRD /initrd\n  APPEND console=ttyS0 quiet tsc_early_khz=2300000 panic=-1\n")
    image = f"{tmp}@@{offset}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    _run("mcopy", "-i", image, str(found.vmlinux.parent / "vmlinuz"), "::/vmlinuz", env=env)
    _run("mcopy", "-i", image, str(guest_initrd(out)), "::/initrd", env=env)
    _run("mcopy", "-i", image, str(config), "::/syslinux.cfg", env=env)
    with open(MBR, "rb") as f:
        mbr = f.read(440)
    with open(tmp, "r+b") as f:  # syslinux's boot code before the partition table
        f.write(mbr)
    tmp.rename(disk)
    return disk
