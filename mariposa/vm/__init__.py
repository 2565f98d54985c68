"""What a QEMU driver boots, made from the host's own packages: the guest kernel (``kernel``:
Debian's cloud kernel, extracted), the initramfs and its ``/init`` (``initramfs``, ``init.sh``),
the disks (``disks``: raw ext4 base, qcow2 overlay, config and volume disks) and the QEMU command
line with the guest's line protocol (``console``).

The driver (``mariposa/drivers/qemu.py``) uses these modules' public names (each one's
``__all__``); everything here that blocks is a plain function to call through
``trio.to_thread``."""
