"""Image references as ``docker pull`` parses them (distribution/reference), checked at
apply so that a typo is refused with its fix rather than found by every host's pull."""

from __future__ import annotations

import re

from fleet.spec._quote import clean_text
from fleet.spec._quote import show as _show

__all__ = ["IMAGE_PATTERN", "image_problem"]


# Docker's reference grammar (distribution/reference, what `docker pull` parses):
# [HOST[:PORT]/]PATH[/PATH...][:TAG][@ALGORITHM:HEX]. Go's \w is ASCII, so it is spelled out.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9]+(?:-+[a-zA-Z0-9]+)*"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}  # the algorithms dockerd knows
_DIGEST = "|".join(f"{a}:[a-f0-9]{{{n}}}" for a, n in _DIGEST_HEX.items())
IMAGE_PATTERN = (  # for the JSON schema; it cannot tell Docker's registry rule nor lengths
    rf"^(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    rf"(?::{_TAG})?(?:@(?:{_DIGEST}))?$"
)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_HOST_RE = re.compile(_HOST)
_REGISTRY = re.compile(r"(\[[^\]]*\]|[^:]*)(?::(.*))?")  # HOST[:PORT], HOST maybe [IPv6]
_TAG_RE = re.compile(_TAG)
_PATH_SEPARATOR = re.compile(r"[._]|__|-+")
_DIGEST_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
_HEX_DIGITS = frozenset("0123456789abcdef")
_PATH_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_TAG_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_MAX_IMAGE_NAME = 255  # registry and repository path together


def image_problem(ref: str) -> str | None:
    """What keeps ``ref`` from being a Docker image reference, and how to fix it; None if
    it is one. Read from the right: digest, tag, registry, then the repository path."""
    rest, at, digest = ref.partition("@")
    if at and (problem := _digest_problem(rest, digest)):
        return problem
    before, slash, last = rest.rpartition("/")  # a tag's ':' can only follow the last '/'
    if "::" in last:
        colons = re.sub(":{2,}", ":", last)
        return "a tag follows a single ':'" + _fix(ref, f"{before}{slash}{colons}{at}{digest}")
    if last.count(":") > 1:
        return "a reference has at most one tag, after a single ':' (e.g. web:v1)"
    name, colon, tag = rest.rpartition(":") if ":" in last else (rest, "", "")
    if colon and (problem := _tag_problem(tag)):
        return problem
    if not name:
        return "it names no repository (e.g. web:v1)"
    registry, slash, path = name.partition("/")
    # Docker's rule: the first part is a registry if it has a '.' or ':' or capitals, or is
    # localhost; else the path starts there (and the registry is Docker Hub).
    hostlike = any(c in registry for c in ".:") or registry == "localhost"
    if slash and (hostlike or registry.lower() != registry):
        if problem := _registry_problem(registry):
            return problem
    else:
        registry, path = "", name
    suffix = ref[len(name) :]  # ":TAG@DIGEST"
    if not path:
        return "nothing follows the registry: name the repository (e.g. registry:5000/web)"
    parts = path.split("/")
    if "" in parts:
        return "a repository path has no empty parts: no '//' and no '/' at either end" + _fix(
            ref,
            f"{registry}/" * bool(registry) + "/".join(p for p in parts if p) + suffix,
            "registry:5000/web",
        )
    if problem := next(filter(None, map(_path_part_problem, parts)), None):
        return problem
    if path.lower() != path:
        # "Team/Web": Docker took "Team" for a registry host, but a Docker Hub team was meant.
        meant = name.lower() if registry and not hostlike else name[: -len(path)] + path.lower()
        return "repository names must be lowercase" + _fix(ref, meant + suffix)
    if len(name) > _MAX_IMAGE_NAME:
        return f"a repository name is at most 255 characters, got {len(name)}"
    if ref == name and _IMAGE_ID.fullmatch(ref):
        return (
            "64 hexadecimal digits name an image ID, which Docker does not pull; "
            "name the repository (e.g. web:v1 or web@sha256:<64 hexadecimal digits>)"
        )
    return None


def _fix(ref: str, fixed: str, example: str = "web:v1") -> str:
    """The end of a refusal of ``ref``: ``fixed``, the reference meant, if it is one, else
    an example."""
    if fixed != ref and image_problem(fixed) is None:
        return f"; use {clean_text(fixed, 100)}"
    return f" (e.g. {example})"


def _digest_problem(name: str, digest: str) -> str | None:
    algorithm, colon, hexits = digest.partition(":")
    size = _DIGEST_HEX.get(algorithm)
    if not digest:
        return "nothing follows the '@': add a digest (e.g. web@sha256:<64 hexadecimal digits>)"
    if size is None:
        if colon and _DIGEST_ALGORITHM.fullmatch(algorithm):
            return (
                "Docker knows the digest algorithms sha256, sha384 and sha512, "
                f"got {_show(algorithm)}"
            )
        return (
            "a digest is sha256: followed by 64 hexadecimal digits (e.g. web@sha256:<64 digits>), "
            f"got {_show(digest)}"
        )
    rule = f"a {algorithm} digest is {size} hexadecimal digits (0-9, a-f)"
    wrong = next((c for c in hexits.lower() if c not in _HEX_DIGITS), None)
    if wrong is not None:
        return f"{rule}, got {_show(hexits)} with {wrong!r}"
    if len(hexits) != size:
        return f"{rule}, got {len(hexits)}"
    if hexits.lower() != hexits:
        return f"{rule} in lowercase" + _fix(
            f"{name}@{digest}", f"{name}@{algorithm}:{hexits.lower()}"
        )
    return None


def _tag_problem(tag: str) -> str | None:
    if _TAG_RE.fullmatch(tag):
        return None
    if not tag:
        return "nothing follows the ':'; add a tag (e.g. web:v1) or leave the ':' out for latest"
    if len(tag) > 128:
        return f"a tag is at most 128 characters, got {len(tag)}"
    wrong = next((c for c in tag if c not in _TAG_CHARACTERS), None)
    if wrong is not None:
        return f"a tag is letters, digits, '_', '.' and '-', got {_show(tag)} with {wrong!r}"
    return f"a tag starts with a letter, digit or '_', got {_show(tag)}"


def _registry_problem(registry: str) -> str | None:
    match = _REGISTRY.fullmatch(registry)
    host, port = (match[1], match[2]) if match else (registry, None)
    if port is not None and not (port.isascii() and port.isdigit()):
        return f"a registry's port is a number (e.g. registry:5000/web), got {_show(port)}"
    if not _HOST_RE.fullmatch(host):
        return (
            f"the registry {_show(host)} is not a host name: letters, digits and '-' in parts "
            "joined by single dots, each starting and ending with a letter or digit "
            "(e.g. registry.example.com:5000/web)"
        )
    return None


def _path_part_problem(part: str) -> str | None:
    """Checked in lowercase: uppercase letters have their own message, with the fix."""
    lowered = part.lower()
    if _PATH_COMPONENT_RE.fullmatch(lowered):
        return None
    wrong = next((c for c in lowered if c not in _PATH_CHARACTERS), None)
    if wrong is not None:
        return (
            f"{_show(part)} holds {wrong!r}: repository names are lowercase letters, digits "
            "and the separators '.', '_', '__' and '-'"
        )
    for end, where in ((lowered[0], "starts"), (lowered[-1], "ends")):
        if end in "._-":
            return (
                f"{_show(part)} {where} with {end!r}: each part of a repository name starts "
                "and ends with a letter or digit"
            )
    run = next(r for r in re.findall(r"[._-]+", lowered) if not _PATH_SEPARATOR.fullmatch(r))
    return (
        f"{_show(part)} joins letters with {_show(run)}: separate them with one '.', one '_', "
        "'__' or dashes"
    )
