#!/usr/bin/env bash
# The README's first command: set the host up, build the example image, start the daemon on its
# default store (/var/lib/mariposa, socket /run/mariposa/mariposa.sock), converge the example project.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"
cd "$MARIPOSA_ROOT"
bash examples/build-image.sh mariposa-example/busybox:latest

if ! mariposa project list >/dev/null 2>&1; then
  echo "== starting the daemon (log: /var/log/mariposa.log)"
  # --listen: the remote API and the web dashboard, on this host only (MARIPOSA_LISTEN to change it)
  nohup mariposa daemon --listen "${MARIPOSA_LISTEN:-127.0.0.1:8443}" >>/var/log/mariposa.log 2>&1 &
  for _ in $(seq 1 50); do mariposa project list >/dev/null 2>&1 && break; sleep 0.2; done
fi

if mariposa project get jupiter >/dev/null 2>&1; then
  mariposa project update jupiter examples/jupiter.yaml --wait
else
  mariposa project add jupiter examples/jupiter.yaml --wait
fi
echo
mariposa project list
echo
mariposa project instances jupiter
echo
port="$(mariposa -j jupiter service instances web --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ports"][0].split("->")[0].rsplit(":",1)[1])')"
echo "== the web tier answers on http://127.0.0.1:$port/"
for path in / /cgi-bin/api; do
  for _ in $(seq 1 25); do
    out="$(wget -qO- "http://127.0.0.1:$port$path" 2>/dev/null || busybox wget -qO- "http://127.0.0.1:$port$path" 2>/dev/null)" && break
    sleep 0.2
  done
  echo "GET $path -> ${out:-no answer}"
done
echo
echo "== the web dashboard: this one-time link signs you in (within 5 minutes)"
mariposa ui || echo "(no dashboard: the running daemon was started without --listen)"
