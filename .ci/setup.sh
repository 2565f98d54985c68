#!/usr/bin/env bash
# Host set-up shared by the README's two commands and CI: Debian packages, the venv and a running
# Docker Engine. Safe to run again; it only does what is missing. It reads no arguments, so the
# caller's own (pytest's, in tests/run.sh) pass through untouched; extra Debian packages go in
# MARIPOSA_PACKAGES. Images are the callers' business: examples/run.sh builds the example image,
# the test suite builds every image it uses in a session fixture (tests/integration/images.py).
# Usage: [MARIPOSA_PACKAGES="pkg ..."] source .ci/setup.sh
set -euo pipefail
MARIPOSA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MARIPOSA_ROOT
[ "$(id -u)" = 0 ] || { echo "run as root (it installs Debian packages and starts dockerd)" >&2; exit 1; }

need=()
for pkg in docker.io busybox-static python3-venv python3-pip iproute2 ${MARIPOSA_PACKAGES:-}; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$MARIPOSA_ROOT/.venv/bin/python" ]; then
  echo "== creating the venv"
  python3 -m venv "$MARIPOSA_ROOT/.venv"
fi
if ! "$MARIPOSA_ROOT/.venv/bin/python" -c "import mariposa, pytest_trio, pytest_timeout, hypothesis, trustme, ruff, mypy, prometheus_client, starlette, selenium" 2>/dev/null \
   || [ "$MARIPOSA_ROOT/pyproject.toml" -nt "$MARIPOSA_ROOT/.venv/.installed" ]; then
  echo "== installing Mariposa and its test dependencies into .venv"
  "$MARIPOSA_ROOT/.venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$MARIPOSA_ROOT/.venv/bin/pip" install -q -e "$MARIPOSA_ROOT[test]" 2>&1 | grep -v "^WARNING" || true
  "$MARIPOSA_ROOT/.venv/bin/python" -c "import mariposa, pytest_trio, pytest_timeout, hypothesis, trustme, ruff, mypy, prometheus_client, starlette, selenium"
  touch "$MARIPOSA_ROOT/.venv/.installed"
fi
export PATH="$MARIPOSA_ROOT/.venv/bin:$PATH"

if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/mariposa-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/mariposa-dockerd.log" >&2; exit 1; }
fi
