#!/bin/bash
# Redis of the compose stack (Debian's redis-server): broker and shared state of the plane, on
# $REDIS_BIND:$REDIS_PORT, append-only file in /var/lib/redis (a volume). The password is handed
# over on stdin (`redis-server -`, a here-string), so it never shows in the process list.
set -euo pipefail
: "${REDIS_PASSWORD:?REDIS_PASSWORD is required (from the stack env file)}"
exec redis-server - \
    --bind "${REDIS_BIND:-127.0.0.1}" --port "${REDIS_PORT:-6379}" --protected-mode yes \
    --dir /var/lib/redis --appendonly yes --save "" --daemonize no "$@" <<<"requirepass $REDIS_PASSWORD"
