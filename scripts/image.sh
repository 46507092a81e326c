#!/usr/bin/env bash
# Builds fleet's image (the Dockerfile) into the Docker daemon at $DOCKER_HOST (or the
# default socket) as fleet:<version> and fleet:latest; `make image` runs it.
#
# The base: $BASE if given; else python:3.11-slim if the daemon has it; else
# fleet-base:bookworm-2, made from Debian's packages by scripts/base-image.sh (for
# machines that reach no image registry). The wheels are built on the host by
# $VENV's pip (default .venv) with the pins of constraints.txt, so the image build
# needs no network. An image labelled with the same source hash (the package, the
# build's inputs and the base) is kept as it is.
#
# Usage: scripts/image.sh            build the image (prints its size)
#        scripts/image.sh --wheels   only build the wheels into build/wheels
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
WHEELS=build/wheels
LOG=build/image.log
HASH_LABEL=fleet.source-hash
SLIM=python:3.11-slim
LOCAL_BASE=fleet-base:bookworm-2

say() { echo "image: $*" >&2; }
die() { say "$*"; exit 1; }

version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p' fleet/__init__.py; }

# Everything the image is made of: the package's files, the build's inputs, and the
# base by its id (a new base is a new image).
source_hash() {
    {
        find fleet -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print
        printf '%s\n' pyproject.toml constraints.txt Dockerfile .dockerignore
    } | LC_ALL=C sort | xargs sha256sum | { cat; echo "base $1"; } | sha256sum | cut -c1-16
}

build_wheels() {
    [ -x "$VENV/bin/pip" ] || die "no $VENV/bin/pip: run make deps (or set VENV=...)"
    # New pins or dependencies start the wheel dir afresh, so no stale version lingers.
    if [ ! -f "$WHEELS/.stamp" ] || [ constraints.txt -nt "$WHEELS/.stamp" ] \
        || [ pyproject.toml -nt "$WHEELS/.stamp" ]; then
        rm -rf "$WHEELS"
    fi
    mkdir -p "$WHEELS"
    rm -f "$WHEELS"/fleet_orchestrator-*.whl
    if ! "$VENV/bin/pip" wheel -q --disable-pip-version-check -c constraints.txt \
        -w "$WHEELS" '.[server]' >build/wheels.log 2>&1; then
        tail -n 20 build/wheels.log >&2
        die "building the wheels failed (whole log: build/wheels.log)"
    fi
    touch "$WHEELS/.stamp"
}

human() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1000000 }'; }

mkdir -p build
exec 9>build/.image.lock
flock 9  # one build per tree at a time: they share build/wheels
if [ "${1:-}" = "--wheels" ]; then
    build_wheels
    say "wheels in $WHEELS"
    exit 0
fi

began=$SECONDS
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker daemon answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start dockerd (systemctl start docker) or set DOCKER_HOST"

if [ -n "${BASE:-}" ]; then
    base=$BASE
elif docker image inspect "$SLIM" >/dev/null 2>&1; then
    base=$SLIM
else
    base=$LOCAL_BASE
    say "$SLIM is not in this daemon: using $base, made from Debian's packages (scripts/base-image.sh)"
    scripts/base-image.sh "$base"
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null || echo "$base")

ver=$(version)
[ -n "$ver" ] || die "no __version__ in fleet/__init__.py"
tag=fleet:$ver
hash=$(source_hash "$base_id")
have=$(docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}}" "$tag" 2>/dev/null || true)
if [ "$have" = "$hash" ]; then
    docker tag "$tag" fleet:latest
    say "$tag is up to date (source $hash)"
else
    build_wheels
    python=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    # The legacy builder where BuildKit's buildx plugin is missing (Debian's docker.io).
    docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
    say "building $tag from $base (log: $LOG)"
    if ! docker build --build-arg BASE="$base" --build-arg PYTHON="$python" \
        --build-arg VERSION="$ver" --label "$HASH_LABEL=$hash" \
        --tag "$tag" --tag fleet:latest . >"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        die "docker build failed (whole log: $LOG)"
    fi
fi
size=$(docker image inspect --format '{{.Size}}' "$tag")
say "$tag and fleet:latest: $(human "$size") ($size bytes), base $base, in $((SECONDS - began))s"
