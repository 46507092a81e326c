"""Private registries and the pool's registry mirror: which registry an image names,
where a registry's credentials are kept, and where a pull goes first.

**Credentials** (``fleet registry login``) are a fleet secret (``fleet.secrets``) of a
reserved name, ``registry-<16 hex of the registry's SHA-256>``, whose record names the
registry and the user and whose sealed value is the password: etcd holds only
AES-GCM ciphertext, as for every secret. They are used *automatically* for every
image whose reference names that registry, as Docker's ``config.json`` is: an app
file stays the same whichever pool (and whichever credentials) runs it, and a login
cannot be forgotten in one app of several. The secret's scope (every app unless the
login names ``--apps``) decides which apps may pull with them; the control plane
puts them, opened, only in the desired containers of such apps (``registry_auth``),
so only the hosts that run a replica of one receive them. They are never an env
value: an env entry that names such a secret is refused at apply and held after.

**The mirror** (``fleet registry mirror HOST[:PORT]``) follows Docker's own
``registry-mirrors``: only Docker Hub images go through it (an image that names its
registry is pulled from that registry, which may need credentials the mirror does not
hold), and Docker Hub stays the fallback. The agent pulls ``MIRROR/library/x:tag``
for ``x:tag`` (``MIRROR/user/x:tag`` for ``user/x:tag``), tags the result as
``x:tag`` and drops the mirror's name; when the mirror fails in any way (unreachable,
refused, not found), the agent pulls the original and, if that fails too, reports
the original's failure with the mirror's in its message. Digest references
(``x@sha256:...``) skip the mirror: a digest cannot be tagged under the original name.
Mirror pulls are anonymous, and the daemon must trust the mirror (TLS, or
``--insecure-registry`` for plain HTTP), as for any registry.
"""

from __future__ import annotations

import hashlib
import re

from fleet.errors import InvalidArgument

__all__ = [
    "DOCKER_HUB",
    "check_mirror",
    "check_registry",
    "is_registry_secret",
    "mirror_reference",
    "registry_of",
    "secret_name",
]

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_SECRET_PREFIX = "registry-"
_SECRET_NAME = re.compile(r"registry-[0-9a-f]{16}\Z")
# host[:port]: DNS names or IPv4 addresses (what image references can name).
_HOST_PORT = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"(?::[0-9]{1,5})?\Z"
)


def registry_of(image: str) -> str:
    """The registry an image reference names, as Docker reads it: the part before the
    first ``/`` when it has a ``.`` or a ``:`` or is ``localhost``, else Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host = first.lower()
        return DOCKER_HUB if host in _HUB_ALIASES else host
    return DOCKER_HUB


def check_registry(text: str, what: str = "registry") -> str:
    """``text`` as a registry's ``host[:port]`` (a scheme and a trailing ``/`` are
    dropped, Docker Hub's names all read ``docker.io``); InvalidArgument otherwise."""
    bare = text.strip()
    for scheme in ("https://", "http://"):
        if bare.lower().startswith(scheme):
            bare = bare[len(scheme) :]
    bare = bare.rstrip("/").lower()
    if bare in _HUB_ALIASES or bare == "index.docker.io/v1":
        return DOCKER_HUB
    if not bare or not _HOST_PORT.match(bare):
        raise InvalidArgument(
            f"{what} {text!r} is not a registry address: give HOST[:PORT] (for example "
            "registry.example.com or 10.0.0.5:5000), as image references name it, without "
            "a path"
        )
    return bare


def check_mirror(text: str) -> str:
    """``text`` as a mirror's ``host[:port]``; Docker Hub itself is refused."""
    mirror = check_registry(text, "mirror")
    if mirror == DOCKER_HUB:
        raise InvalidArgument("the mirror must be another registry than Docker Hub itself")
    return mirror


def secret_name(registry: str) -> str:
    """The fleet secret that holds ``registry``'s credentials (a DNS label, as every
    secret name; the registry itself is in the record)."""
    return _SECRET_PREFIX + hashlib.sha256(registry.encode()).hexdigest()[:16]


def is_registry_secret(name: str) -> bool:
    """Whether ``name`` is reserved for a registry's credentials."""
    return bool(_SECRET_NAME.match(name))


def mirror_reference(image: str, mirror: str) -> str | None:
    """Where ``image`` is pulled from first with ``mirror`` set: ``MIRROR/library/x:t``
    for ``x:t``; None for an image of another registry than Docker Hub, or by digest."""
    if not mirror or "@" in image or registry_of(image) != DOCKER_HUB:
        return None
    first, slash, rest = image.partition("/")
    path = rest if slash and first.lower() in _HUB_ALIASES else image
    if "/" not in path:
        path = f"library/{path}"  # Docker Hub's official images
    return f"{mirror}/{path}"
