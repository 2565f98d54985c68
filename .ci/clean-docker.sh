#!/usr/bin/env bash
# Removes from the Docker Engine everything the test suite and the examples make, so the next run
# starts as on a fresh machine: containers labelled io.mariposa.owner (of any owner: do not run
# this where a Mariposa you want to keep runs), other containers of the images or on the networks
# below, a Swarm daemon's overlay anchors (labelled io.mariposa.anchor), networks named mariposa-* or
# labelled io.mariposa.owner, images mariposa-example/*, mariposa-test/* and mariposa/anchor:* (and those the pull
# tests pushed to their registries, HOST/mariposa-pulls-*/*, tags and digests), and the suite's
# images left dangling (untagged while in use; their Comment starts "built by mariposa"), and what the
# three-node test Swarm (tests/swarmnodes.py) leaves after a crash: its nodes' /var/lib/docker volumes
# (labelled io.mariposa.test=swarmnodes) and the empty cgroup dirs of its killed nodes' containers.
# The host's Swarm membership goes too (the suite's Swarm tests make it a single-node manager).
# Usage: bash .ci/clean-docker.sh [--dry-run]   (--dry-run prints the commands instead)
set -euo pipefail
dry=""
[ "${1:-}" != --dry-run ] || dry=1
remove() { if [ -n "$dry" ]; then echo "$*"; else "$@" >/dev/null; fi; }

images="$(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E '^(mariposa-example|mariposa-test)/|^mariposa/anchor:' || true)"
images+=" $(docker image ls --digests --format '{{.Repository}}@{{.Digest}}' | grep -E '/mariposa-pulls-[0-9a-f]+/' \
            | grep -v '@<none>$' || true)"
images+=" $(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E '/mariposa-pulls-[0-9a-f]+/' \
            | grep -v ':<none>$' || true)"
images="$(echo $images)"  # one line, empty when there are none
networks="$(docker network ls --format '{{.Name}}' | grep '^mariposa-' || true)"
# and the networks projects made for others to join (PROJECT_NETWORK, labelled with their owner)
networks="$(printf '%s\n' $networks $(docker network ls --filter label=io.mariposa.owner --format '{{.Name}}') \
            | sort -u)"
containers="$(docker ps -aq --filter label=io.mariposa.owner) $(docker ps -aq --filter label=io.mariposa.anchor)"
for image in $images; do containers+=" $(docker ps -aq --filter "ancestor=$image")"; done
for network in $networks; do containers+=" $(docker ps -aq --filter "network=$network")"; done
containers="$(printf '%s\n' $containers | sort -u)"

[ -z "$containers" ] || remove docker rm -f -v $containers
for network in $networks; do
  # dockerd 20.10 sometimes keeps a removed container's endpoint (moby#42119): the network then
  # cannot go until dockerd restarts. Say so and go on; it holds one address pool, nothing else.
  remove docker network rm "$network" || echo "warning: network $network could not be removed (restart dockerd to free it)" >&2
done
[ -z "$images" ] || remove docker image rm -f $images
volumes="$(docker volume ls -q --filter label=io.mariposa.test=swarmnodes)"
[ -z "$volumes" ] || remove docker volume rm -f $volumes
# deepest first; one still in use is not empty and stays
for dir in $(find /sys/fs/cgroup -mindepth 2 -depth -type d -path '/sys/fs/cgroup/*/mariposa-swarmnode-*' 2>/dev/null); do
  if [ -n "$dry" ]; then echo "rmdir $dir"; else rmdir "$dir" 2>/dev/null || true; fi
done
for id in $(docker image ls -q --filter dangling=true | sort -u); do
  case "$(docker image inspect --format '{{.Comment}}' "$id")" in
    "built by mariposa"*) remove docker image rm -f "$id" ;;
  esac
done
# The Swarm tests' services, stacks, secrets and configs go with the swarm itself: the suite makes
# the host a single-node manager (tests/conftest.py swarm_manager), and a fresh machine is none.
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ]; then
  remove docker swarm leave --force
fi
echo "== removed the suite's containers, networks, images and swarm${dry:+ (dry run)}"
