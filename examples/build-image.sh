#!/usr/bin/env bash
# Builds the local busybox image the examples and tests run on. No registry is needed: the image
# is a busybox-static rootfs imported with `docker import`. Idempotent: an image of this
# script's CONTENT version is kept; an older one (a machine where earlier runs linger) is rebuilt.
set -euo pipefail
IMAGE="${1:-mariposa-example/busybox:latest}"
CONTENT=2  # 2: a 'nobody' user and group, for `user:` and health-check `user`
if [ "$(docker image inspect -f '{{index .Config.Labels "io.mariposa.image-content"}}' "$IMAGE" 2>/dev/null)" = "$CONTENT" ]; then
  exit 0
fi
BUSYBOX="$(command -v busybox || true)"
[ -n "$BUSYBOX" ] || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,tmp,www,var/www,root,proc,sys,dev}
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import --message "built by mariposa examples/build-image.sh" \
  --change 'ENV PATH=/bin:/sbin' --change 'CMD ["/bin/sh"]' --change "LABEL io.mariposa.image-content=$CONTENT" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
