#!/usr/bin/env bash
# The README's second command: set the host up (Debian packages, venv, dockerd) and run the whole
# test suite: unit, property and integration tests against the real Docker Engine. The suite builds
# every image it runs (tests/integration/images.py). Extra arguments go to pytest:
#   bash tests/run.sh -x tests/unit
set -euo pipefail
# openssl: the HTTPS test image; curl: the public-trigger test POSTs as its users do;
# docker-registry: the registries the pull tests push to and pull from;
# lxc and tini: the LXC driver (mariposa/drivers/lxc.py) and the init it runs commands under;
# qemu-system-x86, qemu-utils, e2fsprogs and lz4: the QEMU driver's VMs and their disks and kernel (mariposa/vm/);
# syslinux, syslinux-common, mtools and dosfstools: the bootable disk images of the tests' own-OS guests;
# qemu-guest-agent: the agent those guests run (its binary and libraries copied into one of them);
# chromium, chromium-driver and fonts-dejavu-core: the dashboard's tests drive a real headless browser (tests/ui/)
# (the three-node Swarm, tests/swarmnodes.py, needs nothing more than docker.io: its Docker-in-Docker
# nodes run this machine's /usr read-only, so its dockerd, containerd, runc, iptables and docker-init)
# docker-compose: `docker-compose config` validates `mariposa export --to compose` (tests/integration/test_export.py)
MARIPOSA_PACKAGES="openssl curl docker-registry lxc tini qemu-system-x86 qemu-utils e2fsprogs lz4 syslinux syslinux-common mtools dosfstools qemu-guest-agent chromium chromium-driver fonts-dejavu-core docker-compose" \
  source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"
cd "$MARIPOSA_ROOT"
# the VMs' kernel, extracted once from Debian's cloud kernel package (a no-op when it is there)
python -m mariposa.vm.kernel fetch
# the VMs' taps need /dev/net/tun, which a container (the fresh-machine run) may lack as a node
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod -m 666 /dev/net/tun c 10 200; }
exec python -m pytest -p no:cacheprovider -q "$@"
