#!/usr/bin/env bash
# The README's second command: set the host up (Debian packages, venv, dockerd, the local
# busybox image) and run the whole test suite: unit, property and integration tests against
# the real Docker Engine. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"
cd "$MARIPOSA_ROOT"
exec python -m pytest -p no:cacheprovider -q "$@"
