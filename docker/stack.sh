#!/usr/bin/env bash
# The compose stack (docker/compose.yaml) on this machine: `make stack-docker` = `docker/stack.sh up`
# then `docker/stack.sh job`; `make docker-down` = `docker/stack.sh down`.
#
#   docker/stack.sh env            # docker/.env from env.example with fresh secrets (if missing)
#   docker/stack.sh up             # engine, env file, `compose up -d`, wait until every service is healthy
#   docker/stack.sh job [QUESTION] # one research job over gRPC via the gateway; the report is
#                                  # printed and saved to $REPORTS_DIR/<job id>.md
#   docker/stack.sh down [-v]      # stop and remove the containers (-v: the volumes too)
#   docker/stack.sh compose ARGS   # any docker-compose command on this project (ps, logs, ...)
#
# Settings: ENV_FILE (docker/.env), PROJECT (fathom), COMPOSE (auto: `docker compose` v2, else
# docker-compose), MODE (report|search), UP_TIMEOUT (s), REPORTS_DIR (out/docker).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
ENV_FILE=$(realpath -m "${ENV_FILE:-docker/.env}")
PROJECT=${PROJECT:-fathom}
MODE=${MODE:-report}
UP_TIMEOUT=${UP_TIMEOUT:-600}
REPORTS_DIR=${REPORTS_DIR:-out/docker}
QUESTION_DEFAULT="Which country is the Eiffel Tower in, and who designed it?"

if [ -z "${COMPOSE:-}" ]; then
    if $DOCKER compose version >/dev/null 2>&1; then COMPOSE="$DOCKER compose"; else COMPOSE=docker-compose; fi
fi

compose() {
    # shellcheck disable=SC2086  # COMPOSE is a command line ("docker compose")
    FATHOM_ENV_FILE="$ENV_FILE" $COMPOSE -p "$PROJECT" -f docker/compose.yaml --env-file "$ENV_FILE" "$@"
}

make_env() {
    if [ -f "$ENV_FILE" ]; then
        return
    fi
    mkdir -p "$(dirname "$ENV_FILE")"
    (umask 077 && python3 - docker/env.example "$ENV_FILE" <<'EOF'
import secrets, sys
src, dst = sys.argv[1:]
lines = []
for line in open(src, encoding="utf-8"):
    key, sep, value = line.rstrip("\n").partition("=")
    if sep and not key.startswith("#") and "change-me" in value:
        value = value.replace("change-me", secrets.token_hex(24))
    lines.append(key + sep + value)
open(dst, "w", encoding="utf-8").write("\n".join(lines) + "\n")
EOF
    )
    echo "wrote $ENV_FILE with fresh secrets (from docker/env.example)"
}

wait_healthy() {
    local deadline=$(( $(date +%s) + UP_TIMEOUT )) pending
    while :; do
        pending=""
        for id in $(compose ps -q); do
            # Containers without a health check count when running; the one-shot migration when done.
            state=$($DOCKER inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
            read -r name status health code <<<"$state"
            case "$status/$health" in
                running/healthy | running/none) ;;
                exited/*) if [ "$code" != 0 ] || [[ "$name" != *migrate* ]]; then
                              echo "${name#/} exited with status $code:" >&2
                              $DOCKER logs --tail 40 "$id" >&2
                              return 1
                          fi ;;
                *) pending="$pending ${name#/}($status/$health)" ;;
            esac
        done
        if [ -z "$pending" ]; then
            return 0
        fi
        if [ "$(date +%s)" -gt "$deadline" ]; then
            echo "not healthy after ${UP_TIMEOUT} s:$pending" >&2
            return 1
        fi
        sleep 3
    done
}

cmd=${1:-up}
shift || true
case "$cmd" in
    env)
        make_env ;;
    up)
        DOCKER=$DOCKER docker/engine.sh
        make_env
        started=$(date +%s)
        compose up -d --no-build "$@"
        wait_healthy
        echo "stack healthy in $(( $(date +%s) - started )) s"
        compose ps ;;
    job)
        question=${1:-$QUESTION_DEFAULT}
        mkdir -p "$REPORTS_DIR"
        started=$(date +%s)
        summary=$(compose run --rm -T cli research "$question" --remote --mode "$MODE" --json)
        echo "$summary"
        job=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["job_id"])' <<<"$summary")
        echo "job $job finished in $(( $(date +%s) - started )) s"
        if [ "$MODE" = report ]; then
            compose run --rm -T cli report "$job" >"$REPORTS_DIR/$job.md"
            cat "$REPORTS_DIR/$job.md"
            echo
            echo "report: $(realpath "$REPORTS_DIR/$job.md")"
        fi ;;
    down)
        compose down --remove-orphans "$@" ;;
    compose)
        compose "$@" ;;
    *)
        sed -n '2,16p' "$0" >&2
        exit 2 ;;
esac
