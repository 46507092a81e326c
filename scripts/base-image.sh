#!/usr/bin/env bash
# Builds fleet-base:bookworm-2, a small Debian 12 root with Python 3.11, from Debian's own
# packages, for machines that cannot pull python:3.11-slim (no public image registry):
# `debootstrap --variant=minbase` (coreutils, sh, util-linux's nsenter, useradd) plus
# python3, python3-venv and haproxy (edge hosts' proxy), stripped of docs, man pages, locales and apt's lists, then
# `docker import`ed into the daemon at $DOCKER_HOST (or the default socket).
#
# The stripped root is cached as build/base/bookworm-2-rootfs.tar: only the first run
# downloads (about a minute); later runs, and other daemons, import the tarball.
# Usage: scripts/base-image.sh [TAG]   (MIRROR=URL overrides the Debian mirror)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-fleet-base:bookworm-2}
SUITE=bookworm
# The -2 of the tag and the tarball is this package set's: a new set, a new number.
PACKAGES=python3,python3-venv,haproxy
CACHE=build/base
TARBALL=$CACHE/$SUITE-2-rootfs.tar

say() { echo "base-image: $*" >&2; }
die() { say "$*"; exit 1; }

# The Debian mirror apt already uses here (deb822 .sources or one-line .list), so the
# download goes where the machine's packages come from; deb.debian.org otherwise.
mirror() {
    local url
    url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -n -E 's/^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)([a-z]+:[^[:space:]]+).*/\3/p' \
        | grep -E '/debian/?$' | head -n1 || true)
    echo "${MIRROR:-${url:-http://deb.debian.org/debian}}"
}

# Whether nothing is mounted under the root any more (unmounting what is): debootstrap
# binds the host's /dev into it in LXC, and a recursive delete or a tar must never
# reach through a mount into the host's own files.
unmounted() {
    local mounts
    mounts=$(awk -v r="$1/" 'index($2 "/", r) == 1 { print $2 }' /proc/self/mounts | sort -r)
    for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    ! awk -v r="$1/" 'index($2 "/", r) == 1' /proc/self/mounts | grep -q .
}

remove_root() {
    unmounted "$1" || die "something is still mounted under $1: not deleting it"
    rm -rf "$1"
}

make_rootfs() {
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (or pass BASE=python:3.11-slim to make image)"
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap (scripts/bootstrap.sh does)"
    local url began
    ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/fleet-base.XXXXXX")
    trap 'remove_root "$ROOTFS"' EXIT
    url=$(mirror)
    began=$SECONDS
    say "debootstrap $SUITE (minbase + $PACKAGES) from $url; the first time takes a minute or two"
    if ! debootstrap --variant=minbase --include=$PACKAGES "$SUITE" "$ROOTFS" "$url" \
        >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (whole log: $CACHE/debootstrap.log); set MIRROR=URL for another mirror"
    fi
    unmounted "$ROOTFS" || die "something is still mounted under $ROOTFS; unmount it and run again"
    # What a container never reads: docs (copyright notices stay), man and info pages,
    # translations, apt's package lists and downloaded archives, logs.
    find "$ROOTFS/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$ROOTFS"/usr/share/{man,info,locale,lintian,linda} "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/* \
        "$ROOTFS"/dev/* "$ROOTFS"/proc/* "$ROOTFS"/sys/* "$ROOTFS"/tmp/*
    find "$ROOTFS/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +
    # Numeric owners: the tarball means the same on any machine.
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    trap - EXIT
    remove_root "$ROOTFS"
    say "root filesystem $(du -h "$TARBALL" | cut -f1) in $((SECONDS - began))s, cached as $TARBALL"
}

docker info >/dev/null 2>&1 || die "no Docker daemon answers at ${DOCKER_HOST:-the default socket}"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG is already there"
    exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two builds at once share one debootstrap
[ -s "$TARBALL" ] || make_rootfs
say "importing $TARBALL as $TAG"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
    "$TARBALL" "$TAG" >/dev/null
docker image inspect "$TAG" --format "base-image: $TAG, {{.Size}} bytes" >&2
