#!/usr/bin/env bash
# Installs what fleet needs on a Debian 12 machine, idempotently: Debian packages
# (docker engine, etcd, busybox for test images, a registry, iproute2, debootstrap for
# the image's local base, haproxy for edge hosts, chromium for the dashboard's test) and a virtualenv with the package,
# its server extra and its dev tools. Safe to run again; does nothing when everything
# is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have dockerd || need+=(docker.io)
have etcd || need+=(etcd-server)
[ -x /bin/busybox ] || need+=(busybox-static)
have docker-registry || need+=(docker-registry)
have ip || need+=(iproute2)
have iptables || need+=(iptables)
have nsenter || need+=(util-linux)
have curl || need+=(curl)
have ignition-validate || need+=(ignition)  # validates deploy/fcos, deploy/flatcar
have debootstrap || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
have systemd-analyze || need+=(systemd)  # verifies deploy/systemd's units in the tests
have haproxy || [ -x /usr/sbin/haproxy ] || need+=(haproxy)  # the edge proxy (--ingress)
# Headless Chromium and its WebDriver: the dashboard's browser test (tests/e2e).
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing ${need[*]}; run as root (or install them) first" >&2
        exit 1
    fi
    echo "bootstrap: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.fleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "bootstrap: installing fleet and its dev tools into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    # The distribution was called `fleet` before it became fleet-orchestrator: an old
    # checkout's editable install would shadow the new one's command and import path.
    if .venv/bin/pip show -q fleet >/dev/null 2>&1; then
        echo "bootstrap: removing the old 'fleet' distribution from .venv"
        .venv/bin/pip uninstall -q -y fleet
    fi
    # constraints.txt pins what was tested (regenerate: make constraints)
    .venv/bin/pip install -q -c constraints.txt -e '.[dev,server]'
    touch "$stamp"
fi
