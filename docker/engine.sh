#!/usr/bin/env bash
# Make sure a Docker engine answers. When none does: install Debian's docker.io and docker-compose
# if they are missing, and start dockerd in the background with host networking only (no bridge,
# no iptables: the build machines allow nothing else), its log in $DOCKERD_LOG. A running engine,
# whatever started it, is used as it is.
set -euo pipefail
DOCKER=${DOCKER:-docker}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/fathom-dockerd.log}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

if $DOCKER info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null || ! command -v "$DOCKER" >/dev/null \
        || ! { command -v docker-compose >/dev/null || $DOCKER compose version >/dev/null 2>&1; }; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io docker-compose >/dev/null
fi
echo "starting dockerd (log: $DOCKERD_LOG)" >&2
# shellcheck disable=SC2016  # $1 is expanded by the inner sh: the log path, passed as an argument
$SUDO setsid sh -c 'exec dockerd --bridge=none --iptables=false >>"$1" 2>&1 </dev/null' sh "$DOCKERD_LOG" &
for _ in $(seq 1 60); do
    if $DOCKER info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "dockerd did not answer within 60 s; see $DOCKERD_LOG" >&2
exit 1
