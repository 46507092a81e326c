"""How the control plane's process uses glibc's malloc: one arena for every thread.

gRPC's core keeps what it holds for each connected agent (its transport, the stream's
call, the read blocks of a connection: about 40 KiB a host) in memory from ``malloc``,
and so do parsed protobuf messages and Python's objects of more than 512 bytes (an app's
replica index, a chunk of reports). glibc gives every thread that allocates an arena of
its own, up to eight a core, and gRPC's threads allocate and free all through a ramp
beside what the main thread keeps. Each arena is a heap of its own with its own free
space: at 5,000 hosts x 100,000 replicas the apply's peak was 484-537 MiB in seven runs
(three over 512), with 14-49 MiB free in those heaps at the peak and 70-110 MiB once
all ran. With one arena for all threads it was 471-502 MiB in nine runs of ten (524 in
the tenth; two arenas: 485-508) and the apply took as long (``benchmarks/README.md``,
session 39). gRPC's threads then take one lock where they took several; on two cores
that cost nothing measurable.

``MALLOC_ARENA_MAX`` in the environment is glibc's own setting and is left as it is, so
a machine with many cores serving few hosts can give the threads their arenas back.
Elsewhere than on glibc (musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["ARENAS", "limit_malloc_arenas"]

log = logging.getLogger(__name__)

ARENAS = 1
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = ARENAS) -> int | None:
    """Give every thread of this process at most ``arenas`` malloc arenas; the number
    set, or None where it was left alone (``MALLOC_ARENA_MAX`` set, not glibc). Call it
    before the threads start: a thread keeps the arena it took first, and glibc fixes
    its limit once it has made about eight."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return None
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc_version = None
    if not libc_version:
        return None
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or not mallopt(_M_ARENA_MAX, arenas):
        log.warning("glibc did not take a limit of %d malloc arena(s); left as it was", arenas)
        return None
    return arenas
