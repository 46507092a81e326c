"""The control plane's process keeps one malloc arena for all its threads
(``fleet.controlplane.mallocpolicy``), unless ``MALLOC_ARENA_MAX`` says otherwise: read
back from glibc itself (``malloc_stats``) and from a running ``fleet server``'s memory
map, where every arena but the main one is a heap of its own."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

from fleet.testing import EtcdServer
from fleet.testing.fleetprocs import FleetServerProcess

# Threads that allocate (blocks past pymalloc's 512 bytes come from malloc), then
# glibc's own account of its arenas on stderr: an "Arena N:" line each.
_THREADS = """
import ctypes, sys, threading
from fleet.controlplane.mallocpolicy import limit_malloc_arenas
if sys.argv[1] == "limit":
    print("limit", limit_malloc_arenas())
def work():
    for _ in range(100):
        kept = [bytes(2_000) for _ in range(50)]
        del kept
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""

_HEAP = 64 << 20  # glibc's heap of a thread arena: 64 MiB, reserved at an aligned address


def _arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


def test_one_arena_for_every_thread_unless_the_environment_says() -> None:
    assert _arenas("limit") == ("limit 1", 1)
    # Without the limit the same threads take arenas of their own: the test can tell.
    assert _arenas("none")[1] > 1
    # glibc's own setting is left to glibc.
    said, arenas = _arenas("limit", {"MALLOC_ARENA_MAX": "3"})
    assert said == "limit None" and 1 < arenas <= 3


def _thread_heaps(pid: int) -> int:
    """Thread arenas' heaps in ``pid``'s memory map: a read-write start at a 64 MiB
    boundary and the rest of the 64 MiB reserved (no access) right after it."""
    rows = [line.split() for line in Path(f"/proc/{pid}/maps").read_text().splitlines()]
    heaps = 0
    for row, after in itertools.pairwise(rows):
        start, end = (int(part, 16) for part in row[0].split("-"))
        after_start, after_end = (int(part, 16) for part in after[0].split("-"))
        anonymous = len(row) == 5 and len(after) == 5
        if (
            anonymous
            and start % _HEAP == 0
            and (row[1], after[1]) == ("rw-p", "---p")
            and end == after_start
            and after_end - start == _HEAP
        ):
            heaps += 1
    return heaps


def test_fleet_server_runs_on_one_arena(etcd_server: EtcdServer, tmp_path: Path) -> None:
    heaps = {}
    for name, env in (("default", {}), ("eight", {"MALLOC_ARENA_MAX": "8"})):
        server = FleetServerProcess(etcd_server.endpoint, f"/t-arenas-{name}/", tmp_path, None)
        server.process.env = {**os.environ, **env}
        server.start()
        try:
            with server.client(timeout=10) as client:
                for _ in range(20):  # calls served: gRPC's threads have allocated
                    client.hosts()
            assert server.process.pid is not None
            heaps[name] = _thread_heaps(server.process.pid)
        finally:
            server.stop()
    assert heaps["default"] == 0, heaps
    assert heaps["eight"] >= 1, heaps  # (the map tells them apart)
