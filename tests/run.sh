#!/usr/bin/env bash
# The README's second command: set the host up (Debian packages, venv, dockerd) and run the whole
# test suite: unit, property and integration tests against the real Docker Engine. The suite builds
# every image it runs (tests/integration/images.py). Extra arguments go to pytest:
#   bash tests/run.sh -x tests/unit
set -euo pipefail
MARIPOSA_PACKAGES="openssl" source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"  # openssl: the HTTPS test image
cd "$MARIPOSA_ROOT"
exec python -m pytest -p no:cacheprovider -q "$@"
