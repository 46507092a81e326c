"""Key files must be their owner's alone, as ssh insists of private keys.

A fleet key is a power: the secrets key decrypts every secret, the server's TLS key
speaks to every agent as the control plane, an agent's is its host, an admin's owns
the pool. One that other local users can read has leaked without a word, so fleet
refuses to use it, at the only moment anyone looks: when it starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleet.errors import InvalidArgument

__all__ = ["loose_mode_problem", "read_private"]


def loose_mode_problem(path: Path, what: str, mode: int) -> str | None:
    """What is wrong with a key file of ``mode``, with its fix; None if only its owner
    may access it."""
    mode &= 0o777
    if not mode & 0o077:
        return None
    who = {0o070: "its group", 0o007: "other users"}
    shown = " and ".join(w for bits, w in who.items() if mode & bits)
    return (
        f"{what} {path} has mode {mode:04o}, so {shown} can access it; a key must be "
        f"readable by its owner only: run `chmod 600 {path}`"
    )


def read_private(path: Path, what: str) -> bytes:
    """The bytes of the key file ``path``: InvalidArgument if its group or other users
    may access it; OSError as opening or reading raises it. The mode is read from the
    open file, so it is the file that is read that was checked."""
    with open(path, "rb") as file:
        problem = loose_mode_problem(path, what, os.fstat(file.fileno()).st_mode)
        if problem is not None:
            raise InvalidArgument(problem)
        return file.read()
