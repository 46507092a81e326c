"""A host's first boot, as far as a test machine can play it: an Ignition config's
files written under a directory standing in for the host's ``/``, and a systemd
unit's ``[Service]`` commands run as systemd would run them.

    written = apply_ignition(config, root)            # storage: directories, files, links
    service = read_service(unit["contents"], root)    # env files read under root
    main = start_service(service, env, journal)       # ExecStartPre, then ExecStart
    stop_service(service, main, env)                  # ExecStop, then the main process ends

Emulated: ``storage.directories``, ``storage.files`` (data URLs, gzip too, with their
modes, ``overwrite`` and owners given by id) and ``storage.links``, under ``root``;
a unit's ``Environment=``, ``EnvironmentFile=`` (read under ``root``; ``-`` makes one
optional), ``ExecStartPre=``/``ExecStart=``/``ExecStop=`` with the ``-`` prefix (a
failure ignored), continuation lines, quoting, and systemd's ``${VAR}`` (one word) and
``$VAR`` (split at whitespace) expansion; the commands get systemd's ``PATH`` and
``LANG``, the unit's environment and what the caller adds (a test's ``DOCKER_HOST``:
the host's socket), and their output goes to one file, as to the journal.
``docker_paths_in_root`` maps the host paths of a ``docker`` command line (``-v``
sources, ``--env-file``) into ``root`` where ``root`` holds them: dockerd reads those
paths, in the machine's file system, not the command's.

Not emulated: booting, and Ignition run by the OS (its fetch of remote sources, disks,
filesystems, users, SELinux relabelling); every other part of the host is this
machine's own (``/usr/bin/docker``, ``/sys/fs/cgroup``, ...). systemd is not running:
no dependencies or ordering (``After=``, ``Requires=``), no ``Restart=``, timeouts,
cgroups, ``JOURNAL_STREAM`` or other exec prefixes (``@+!:``, refused). Owners by name,
``append``, and sources other than data URLs are refused rather than ignored.
"""

from __future__ import annotations

import base64
import gzip
import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "Command",
    "IgnitionError",
    "Service",
    "apply_ignition",
    "decode_contents",
    "docker_paths_in_root",
    "read_service",
    "start_service",
    "stop_service",
    "unit_directives",
]

# What systemd gives a service's commands before the unit's own Environment.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
_WHOLE_VAR = re.compile(rf"\$({_VAR})")
_IN_WORD = re.compile(rf"\$\$|\$\{{({_VAR})\}}")  # $$ is a literal $


class IgnitionError(Exception):
    """A config or unit this emulation refuses: what, where, and what to do."""


def decode_contents(contents: Mapping[str, str]) -> bytes:
    """What Ignition writes for a file's ``contents``: a data URL (RFC 2397), gunzipped
    when ``compression`` says gzip."""
    source = contents.get("source", "")
    if not source.startswith("data:"):
        raise IgnitionError(f"only data URLs are emulated, not {source[:40]!r}")
    meta, _, payload = source.removeprefix("data:").partition(",")
    data = base64.b64decode(payload) if meta.endswith(";base64") else unquote_to_bytes(payload)
    return gzip.decompress(data) if contents.get("compression") == "gzip" else data


def _under(root: Path, path: str) -> Path:
    if not path.startswith("/"):
        raise IgnitionError(f"{path!r}: Ignition paths are absolute")
    if ".." in Path(path).parts:
        raise IgnitionError(f"{path!r}: no .. in an Ignition path")
    return root / path.lstrip("/")


def _chown(target: Path, node: Mapping[str, Any]) -> None:
    """The node's user and group, by id (left as they are, root's, when not given)."""
    ids = []
    for key in ("user", "group"):
        owner = node.get(key) or {}
        if "name" in owner:
            raise IgnitionError(
                f"{node['path']}: {key} by name ({owner['name']}) is not emulated: give its id"
            )
        ids.append(int(owner.get("id", -1)))  # -1: unchanged
    if ids != [-1, -1]:
        os.chown(target, *ids, follow_symlinks=False)


def _exists(target: Path, node: Mapping[str, Any], what: str) -> None:
    if target.exists() and not node.get("overwrite", False):
        raise IgnitionError(
            f"{node['path']}: a {what} is already there and overwrite is not set "
            "(Ignition would fail the boot)"
        )


def apply_ignition(config: Mapping[str, Any], root: Path) -> list[Path]:
    """Write ``config``'s ``storage`` under ``root``, as Ignition's files stage writes
    it to the host's ``/`` (directories, then files, then links; missing parents
    0755); returns what it wrote."""
    storage = config.get("storage", {})
    unknown = set(storage) - {"directories", "files", "links"}
    if unknown:
        raise IgnitionError(f"storage.{sorted(unknown)[0]} is not emulated: test it elsewhere")
    written: list[Path] = []
    for node in storage.get("directories", []):
        target = _under(root, node["path"])
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, node.get("mode", 0o755))
        _chown(target, node)
        written.append(target)
    for node in storage.get("files", []):
        if "append" in node:
            raise IgnitionError(f"{node['path']}: append is not emulated")
        target = _under(root, node["path"])
        _exists(target, node, "file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        target.write_bytes(decode_contents(node["contents"]) if "contents" in node else b"")
        os.chmod(target, node.get("mode", 0o644))
        _chown(target, node)
        written.append(target)
    for node in storage.get("links", []):
        target = _under(root, node["path"])
        _exists(target, node, "link")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if node.get("hard", False):
            os.link(_under(root, node["target"]), target)
        else:  # a symlink's target stays as written: absolute ones mean the host's /
            target.symlink_to(node["target"])
        _chown(target, node)
        written.append(target)
    return written


def unit_directives(contents: str) -> dict[str, list[str]]:
    """A unit file's directives (``Section.Key`` -> values in order), continuation
    lines joined as systemd joins them."""
    directives: dict[str, list[str]] = {}
    section = ""
    for line in contents.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        directives.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return directives


@dataclass(frozen=True)
class Command:
    """One exec line, its variables expanded; ``ignore_failure`` for the ``-`` prefix."""

    argv: list[str]
    ignore_failure: bool


@dataclass(frozen=True)
class Service:
    """What systemd runs for a unit's ``[Service]``, with the environment it sets."""

    environment: dict[str, str]
    start_pre: list[Command]
    start: Command
    stop: list[Command]


def _env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, as systemd reads an EnvironmentFile (comments, blank lines,
    a value's surrounding quotes dropped)."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(_VAR, key.strip()):
            raise IgnitionError(f"{path}: {raw!r} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _value(match: re.Match[str], env: Mapping[str, str]) -> str:
    """``${VAR}``'s value (empty when unset, as in systemd), or ``$`` for ``$$``."""
    return env.get(match.group(1), "") if match.group(1) else "$"


def _command(line: str, env: Mapping[str, str], where: str) -> Command:
    ignore = line.startswith("-")
    line = line.removeprefix("-")
    if line[:1] in ("@", "+", "!", ":"):
        raise IgnitionError(f"{where}: the exec prefix {line[0]!r} is not emulated")
    if re.search(r"%[a-zA-Z]", line):
        raise IgnitionError(f"{where}: unit specifiers (%n, %i, ...) are not emulated")
    argv: list[str] = []
    for word in shlex.split(line):
        whole = _WHOLE_VAR.fullmatch(word)
        if whole:  # $VAR alone: zero or more words
            argv += env.get(whole.group(1), "").split()
        else:  # ${VAR} anywhere: exactly its value, whitespace and all
            argv.append(_IN_WORD.sub(lambda m: _value(m, env), word))
    if not argv or not argv[0].startswith("/"):
        raise IgnitionError(f"{where}: {line!r} must start with an absolute path")
    return Command(argv, ignore)


def read_service(contents: str, root: Path) -> Service:
    """The ``[Service]`` of unit ``contents``: its environment (``Environment=``, then
    ``EnvironmentFile=`` read under ``root``, whose settings win, as in systemd) and
    its commands with that environment expanded."""
    directives = unit_directives(contents)
    env: dict[str, str] = {}
    for assignments in directives.get("Service.Environment", []):
        for item in shlex.split(assignments):
            key, _, value = item.partition("=")
            env[key] = value
    for name in directives.get("Service.EnvironmentFile", []):
        optional = name.startswith("-")
        path = _under(root, name.removeprefix("-"))
        if path.exists():
            env |= _env_file(path)
        elif not optional:
            raise IgnitionError(f"EnvironmentFile={name} is missing under {root}")
    starts = directives.get("Service.ExecStart", [])
    if len(starts) != 1:
        raise IgnitionError(f"[Service] needs exactly one ExecStart=, not {len(starts)}")

    def commands(key: str) -> list[Command]:
        return [_command(line, env, key) for line in directives.get(f"Service.{key}", [])]

    return Service(env, commands("ExecStartPre"), commands("ExecStart")[0], commands("ExecStop"))


def docker_paths_in_root(argv: list[str], root: Path) -> list[str]:
    """``argv`` (a ``docker`` command line) with each host path dockerd would read
    (``-v``/``--volume`` sources, ``--env-file``) replaced by its copy under ``root``
    when ``root`` has one; other paths stay the machine's. Flags are not parsed:
    such a flag among the container's own arguments would be mapped too (fleet's
    units have none)."""

    def mapped(path: str) -> str:
        inside = root / path.lstrip("/")
        return str(inside) if path.startswith("/") and os.path.lexists(inside) else path

    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word.startswith("--mount"):
            raise IgnitionError("docker --mount is not mapped into the root: use -v")
        flag, eq, inline = word.partition("=")
        if flag in ("-v", "--volume", "--env-file"):
            value = inline if eq else next(words, "")
            source, colon, rest = value.partition(":")
            value = mapped(source) + colon + rest if flag != "--env-file" else mapped(value)
            out += [f"{flag}={value}"] if eq else [flag, value]
        else:
            out.append(word)
    return out


def _environ(service: Service, extra: Mapping[str, str]) -> dict[str, str]:
    return {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", **service.environment, **extra}


def _in_root(command: Command, root: Path | None) -> Command:
    """``command`` with its docker paths under ``root`` (if it runs docker and a root
    is given)."""
    if root is None or Path(command.argv[0]).name != "docker":
        return command
    return Command(docker_paths_in_root(command.argv, root), command.ignore_failure)


def _run(command: Command, env: Mapping[str, str], journal: IO[bytes], timeout: float) -> None:
    done = subprocess.run(
        command.argv, env=env, stdout=journal, stderr=journal, timeout=timeout, check=False
    )
    if done.returncode and not command.ignore_failure:
        raise IgnitionError(f"{shlex.join(command.argv)} exited with {done.returncode}")


def start_service(
    service: Service,
    extra_env: Mapping[str, str],
    journal: IO[bytes],
    *,
    root: Path | None = None,
    timeout: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Start the service as systemd's ``Type=simple`` does: each ``ExecStartPre=`` to
    its end (a failure stops the start unless ``-``), then ``ExecStart=`` in the
    background; returns that main process. ``extra_env`` goes over the unit's
    environment; with ``root``, docker command lines read host paths there."""
    env = _environ(service, extra_env)
    for command in service.start_pre:
        _run(_in_root(command, root), env, journal, timeout)
    start = _in_root(service.start, root)
    return subprocess.Popen(start.argv, env=env, stdout=journal, stderr=journal)


def stop_service(
    service: Service,
    main: subprocess.Popen[bytes],
    extra_env: Mapping[str, str],
    journal: IO[bytes],
    *,
    root: Path | None = None,
    timeout: float = 60.0,
) -> int:
    """Stop it as systemd does: each ``ExecStop=``, then SIGTERM to the main process if
    it is still there; returns its exit status."""
    env = _environ(service, extra_env)
    for command in service.stop:
        _run(_in_root(command, root), env, journal, timeout)
    if main.poll() is None:
        main.terminate()
    return main.wait(timeout)
