#!/usr/bin/env bash
# `make demo`: start fleet on this machine (etcd, control plane and an agent for the local
# Docker daemon, via `fleet up`), apply examples/hello.yaml and show it answering HTTP.
# `make demo-down` stops it all again. State and logs live under .fleet/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.fleet/demo
FLEET=.venv/bin/fleet
PY=.venv/bin/python
export FLEET_SERVER=127.0.0.1:7400
# The admin certificate `fleet up` made in its default data dir (.fleet/pki): the CLI
# never looks in the current directory by itself, so the demo says where.
export FLEET_PKI_DIR="$PWD/.fleet/pki"
mkdir -p "$STATE"

# A process that exited but was not reaped (this shell is not its parent) is a zombie
# that kill -0 still finds: alive means "exists and is not a zombie".
alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

docker_answers() {
    "$PY" - <<'PY' >/dev/null 2>&1
import docker
docker.from_env(timeout=3).ping()
PY
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND until it succeeds, at most SECONDS.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "demo: timed out after ${seconds}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

up() {
    if [ -f "$STATE/up.pid" ] && alive "$(cat "$STATE/up.pid")"; then
        echo "demo: already running (make demo-down stops it)"
    else
        if ! docker_answers; then
            step "starting dockerd (no Docker daemon answered)"
            nohup dockerd --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 &
            wait_for 60 "dockerd to answer" docker_answers || { tail -20 "$STATE/dockerd.log"; exit 1; }
            touch "$STATE/dockerd.ours"
        fi

        step "building the demo image fleet-demo/hello:v1 (busybox httpd, no registry needed)"
        "$PY" - <<'PY'
import docker
from fleet.testing.images import HTTPD_CMD, ensure_image
client = docker.from_env()
ensure_image(client, "fleet-demo/hello", "v1",
             "Hello from fleet! This page is served by a container fleet placed.\n", HTTPD_CMD)
ensure_image(client, "fleet-demo/hello", "v2",
             "Hello from fleet v2, rolled out replica by replica.\n", HTTPD_CMD)
print("fleet-demo/hello:v1 and v2 ready")
PY

        step "starting fleet up (etcd, control plane, agent) in the background; log: $STATE/up.log"
        # The default data dir, .fleet: its pki/ holds the CLI's admin certificate
        # (FLEET_PKI_DIR above); `fleet up` also saves it as the CLI's context `local`.
        nohup "$FLEET" up >"$STATE/up.log" 2>&1 &
        echo $! >"$STATE/up.pid"
        host_ready() { "$FLEET" get hosts -o json | grep -q '"connected": true'; }
        wait_for 60 "the local host to join" host_ready || { tail -30 "$STATE/up.log"; exit 1; }
        "$FLEET" get hosts
    fi

    step "fleet apply -f examples/hello.yaml"
    "$FLEET" apply -f examples/hello.yaml

    all_running() {
        "$FLEET" ps hello -o json | "$PY" -c '
import json, sys
rows = json.load(sys.stdin)
sys.exit(0 if len(rows) == 3 and all(r["status"]["state"] == "running" for r in rows) else 1)'
    }
    wait_for 120 "3 running replicas" all_running || { "$FLEET" ps; tail -30 "$STATE/up.log"; exit 1; }

    step "fleet ps"
    "$FLEET" ps
    port=$("$FLEET" ps hello -o json | "$PY" -c '
import json, sys
print(json.load(sys.stdin)[0]["status"]["ports"][0]["host_port"])')
    url="http://127.0.0.1:$port/"
    step "curl $url"
    curl -fsS "$url"

    step "fleet set image hello fleet-demo/hello:v2 --wait   (a health-gated rolling upgrade)"
    "$FLEET" set image hello fleet-demo/hello:v2 --wait --timeout 3m
    step "fleet endpoints hello"
    "$FLEET" endpoints hello
    port=$("$FLEET" endpoints hello -o json | "$PY" -c '
import json, sys
print(json.load(sys.stdin)[0]["host_port"])')
    step "curl http://127.0.0.1:$port/"
    curl -fsS "http://127.0.0.1:$port/"
    step "fleet rollout history hello"
    "$FLEET" rollout history hello
    dashboard=$(grep -o 'dashboard: https://[^ ]*' "$STATE/up.log" | head -1 | cut -d' ' -f2)
    if [ -n "$dashboard" ]; then
        step "the dashboard"
        token=$("$FLEET" tokens create demo-viewer --role viewer 2>/dev/null | tail -1)
        echo "open $dashboard and sign in with this viewer token: $token"
        echo "(the browser warns about the certificate: it is signed by fleet up's own CA, $FLEET_PKI_DIR/ca.crt)"
    fi
    printf '\nfleet is up. Try: %s get apps -o wide | %s rollout undo hello | %s describe app hello\n' \
        "$FLEET" "$FLEET" "$FLEET"
    echo "Stop it with: make demo-down"
}

down() {
    if [ -f "$STATE/up.pid" ] && alive "$(cat "$STATE/up.pid")"; then
        step "deleting the demo app and stopping fleet up"
        "$FLEET" delete -f examples/hello.yaml || true
        gone() { ! "$FLEET" ps hello -o json | grep -q '"container_id"'; }
        wait_for 60 "the demo containers to stop" gone || true
        kill "$(cat "$STATE/up.pid")"
        stopped() { ! alive "$(cat "$STATE/up.pid")"; }
        wait_for 30 "fleet up to stop" stopped || true
    fi
    rm -f "$STATE/up.pid"
    if [ -f "$STATE/dockerd.ours" ] && [ -f "$STATE/dockerd.pid" ]; then
        step "stopping the dockerd the demo started"
        pid=$(cat "$STATE/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        dockerd_stopped() { ! alive "$pid"; }
        wait_for 30 "dockerd to stop" dockerd_stopped || true
        rm -f "$STATE/dockerd.ours"
    fi
    echo "demo stopped"
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
