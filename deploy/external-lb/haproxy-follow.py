#!/usr/bin/env python3
"""Keep an HAProxy backend's servers equal to a fleet app's endpoints, through HAProxy's
runtime API: no reload, no dropped connections.

    haproxy-follow.py APP CONTAINER_PORT BACKEND SOCKET [fleet options...]

follows `fleet endpoints APP --watch -o json` (one JSON document per change) and, for
each document, points one server slot of BACKEND (`server-template` in haproxy.cfg) at
each replica publishing CONTAINER_PORT/tcp, and puts the unused slots in maintenance.
A replica keeps its slot while it is listed, so its connections are never moved.
Extra arguments go to fleet (--server, --tls-*, --token); the command is $FLEET, else
`fleet`. Ends when the watch ends (Ctrl-C, or no control plane reachable).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys


def runtime(sock: str, command: str) -> str:
    """One command on HAProxy's stats socket (level admin); its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: s.recv(65536), b"")).decode()


def slots(sock: str, backend: str) -> list[str]:
    """The backend's server names, in order (`show servers state`: name is field 4)."""
    rows = runtime(sock, f"show servers state {backend}").splitlines()[1:]
    return [row.split()[3] for row in rows if row and not row.startswith("#")]


def main() -> int:
    app, container_port, backend, sock, *fleet_args = sys.argv[1:]
    names = slots(sock, backend)
    if not names:
        sys.exit(f"backend {backend!r} has no servers: add `server-template` lines to it")
    assigned: dict[tuple[str, int], str] = {}  # (address, port) -> the slot it holds
    first = True
    fleet = shlex.split(os.environ.get("FLEET", "fleet"))
    command = [*fleet, "endpoints", app, "--watch", "-o", "json", *fleet_args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as watch:
        assert watch.stdout is not None
        for line in watch.stdout:
            document = json.loads(line)
            wanted = {
                (e["address"], int(e["host_port"]))
                for e in document["endpoints"]
                if int(e["container_port"]) == int(container_port) and e["protocol"] == "tcp"
            }
            # Gone: out of rotation (fleet keeps a replica serving for its shutdown_delay
            # after it leaves the list; HAProxy lets its open connections finish).
            for target in [t for t in assigned if t not in wanted]:
                runtime(sock, f"set server {backend}/{assigned.pop(target)} state maint")
            free = [n for n in names if n not in assigned.values()]
            for address, port in sorted(wanted - assigned.keys()):
                if not free:
                    print(f"no free slot in {backend} for {address}:{port}", file=sys.stderr)
                    continue
                name = assigned[(address, port)] = free.pop(0)
                runtime(sock, f"set server {backend}/{name} addr {address} port {port}")
                runtime(sock, f"set server {backend}/{name} state ready")
            if first:  # slots a previous run left in rotation, pointing who knows where
                for name in free:
                    runtime(sock, f"set server {backend}/{name} state maint")
                first = False
            print(f"version {document['version']}: {len(assigned)} server(s)", flush=True)
    return watch.returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
