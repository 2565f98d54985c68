#!/usr/bin/env bash
# The README's second command: set the host up (Debian packages, venv, dockerd) and run the whole
# test suite: unit, property and integration tests against the real Docker Engine. The suite builds
# every image it runs (tests/integration/images.py). Extra arguments go to pytest:
#   bash tests/run.sh -x tests/unit
set -euo pipefail
# openssl: the HTTPS test image; docker-registry: the registries the pull tests push to and pull from;
# lxc and tini: the LXC driver (mariposa/drivers/lxc.py) and the init it runs commands under
MARIPOSA_PACKAGES="openssl docker-registry lxc tini" source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"
cd "$MARIPOSA_ROOT"
exec python -m pytest -p no:cacheprovider -q "$@"
