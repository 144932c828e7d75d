#!/usr/bin/env bash
# Roll Fathom out to the current kubectl context, migration first (no Helm hooks):
#   k8s/deploy.sh dev|prod [extra kubectl args, e.g. --context kind-fathom]
#
# 1. The old migration Job is deleted (a Job's pod template cannot change in place).
# 2. Only the objects labelled fathom.dev/phase=pre-rollout are applied: namespace, service account,
#    ConfigMaps, the network policies the Job needs, the migration Job (dev: also the generated
#    Secret, PostgreSQL and Redis). Prod's Secret `fathom-secrets` must exist already.
# 3. The Job is awaited: the store's schema is at the new revision before any new pod starts.
# 4. Everything is applied; Deployments roll (maxUnavailable 0 for the gRPC services).
set -euo pipefail
overlay=${1:?usage: k8s/deploy.sh dev|prod [kubectl args]}
shift
dir="$(cd "$(dirname "$0")" && pwd)/overlays/$overlay"
[ -f "$dir/kustomization.yaml" ] || { echo "no overlay $overlay in $dir" >&2; exit 2; }
kubectl=(kubectl "$@")

"${kubectl[@]}" -n fathom delete job fathom-migrate --ignore-not-found
"${kubectl[@]}" apply -k "$dir" -l fathom.dev/phase=pre-rollout
if ! "${kubectl[@]}" -n fathom wait --for=condition=complete job/fathom-migrate --timeout=15m; then
    "${kubectl[@]}" -n fathom logs job/fathom-migrate --tail=50 >&2 || true
    echo "the migration did not complete: nothing else was rolled out" >&2
    exit 1
fi
"${kubectl[@]}" apply -k "$dir"
for deployment in $("${kubectl[@]}" -n fathom get deployments -o name); do
    "${kubectl[@]}" -n fathom rollout status "$deployment" --timeout=20m
done
