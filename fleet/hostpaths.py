"""Host paths that containers bind-mount: their form, and what they are on the host.

A bind mount gives a container whatever the host path leads to when Docker mounts it,
symlinks followed. So a bind source is allowed only in the one form that leads where it
says: absolute and normal (no ``.``, ``..``, ``//`` or trailing ``/``: ``form_problem``,
checked at apply and again by the agent), and with no symlink in any part that exists
(``symlink_problem``, checked by the agent on its own host before every create and every
start). Then the path is its own real path and a prefix can be compared word by word.

Two decisions follow:

- A prefix is compared as written, never resolved: a path under a prefix that is (or
  lies under) a symlink has a symlink among its parts, so such a prefix allows nothing
  and the refusal names the symlink. Allow the real folder instead.
- A path whose last parts do not exist yet is allowed when what exists of it is real:
  Docker creates the missing folders (root, 0755) when it starts the container.
"""

from __future__ import annotations

import os
import posixpath
import stat

__all__ = ["form_problem", "symlink_problem"]


def form_problem(path: str) -> str | None:
    """Why ``path`` is not an absolute, normal host path, with the fix, as a predicate
    ("contains '..': ..."); None if it is."""
    if not path.startswith("/"):
        return "is not an absolute path: start it with /"
    if "\0" in path:
        return "contains a NUL character"
    if ".." in path.split("/"):
        return "contains '..': name the folder itself"
    normal = "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading //
    if path != normal:
        return f"is not in normal form (no '.', '//' or trailing '/'): write {normal}"
    return None


def symlink_problem(path: str) -> str | None:
    """What on this host's filesystem would take a bind mount of ``path`` (absolute and
    normal) somewhere else, as a sentence: the first part of it that is a symlink, and
    its real path. None when every part that exists is a real folder or file."""
    current = ""
    for part in path.split("/"):
        if not part:
            continue
        current += "/" + part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break  # Docker creates it and what follows, as folders
        except OSError as error:
            return f"it cannot be checked ({error.strerror or error})"
        if stat.S_ISLNK(mode):
            which = "it is" if current == path else f"{current} is"
            return f"{which} a symlink to {os.path.realpath(current)}"
    # The walk saw each part once; realpath looks at them all again, as the mount will.
    real = os.path.realpath(path)
    if real != path:
        return f"it resolves to {real}"
    return None
