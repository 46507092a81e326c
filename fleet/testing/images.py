"""Tiny busybox images built in memory, since no image can be pulled on these machines.

The root filesystem is the static `/bin/busybox` plus one symlink per applet, a minimal
/etc, and `/www/index.html` with text chosen by the caller, so a test can tell versions apart.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import tarfile
from typing import Any, cast

import docker.errors

from fleet.testing.procs import ProcessError

BUSYBOX = "/bin/busybox"
DEFAULT_INDEX_HTML = "hello from fleet-test\n"
HTTP_PORT = 8080
HTTPD_CMD = ["httpd", "-f", "-p", str(HTTP_PORT), "-h", "/www"]


def graceful_cmd(argv: list[str]) -> list[str]:
    """Wrap a command in `sh` that exits 0 on SIGTERM/SIGINT, else with the command's status.

    Busybox httpd or sleep as PID 1 ignore SIGTERM, so `docker stop` would wait 10 s for
    SIGKILL; wrapped, a stop takes about 0.1 s (the command's stdin is /dev/null).
    """
    return ["sh", "-c", 'trap "exit 0" TERM INT; "$@" & wait $!', "sh", *argv]


# The default: busybox httpd serving /www on 8080, stopping at once on SIGTERM.
DEFAULT_CMD = graceful_cmd(HTTPD_CMD)
CONTENT_LABEL = "fleet.testing.content"
# Applets linked even if `busybox --list` could not be read: what tests and web apps use.
ESSENTIAL_APPLETS = (
    "sh", "ash", "sleep", "httpd", "echo", "cat", "env", "wget", "true", "false", "ls",
    "kill", "ps", "top", "nc", "printf", "test", "mkdir", "rm", "date", "hostname", "id",
    "grep", "head", "tail", "wc", "touch", "seq", "uname", "timeout", "nslookup", "ip",
)  # fmt: skip
# A fixed mtime makes the layer, and so its digest, depend only on the content.
_MTIME = 1_700_000_000


@functools.cache
def busybox_applets() -> tuple[str, ...]:
    """The applets compiled into the local static busybox (falling back to a core set)."""
    try:
        out = subprocess.run(
            [BUSYBOX, "--list"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    names = {n.strip() for n in out.split() if n.strip() and "/" not in n}
    names.update(ESSENTIAL_APPLETS)
    names.discard("busybox")
    return tuple(sorted(names))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = _MTIME
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = _MTIME
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    info.mtime = _MTIME
    tar.addfile(info)


def busybox_rootfs_tar(index_html: str = DEFAULT_INDEX_HTML) -> bytes:
    """Return an uncompressed tar of a busybox root filesystem serving `index_html` from /www."""
    try:
        with open(BUSYBOX, "rb") as f:
            busybox = f.read()
    except OSError as exc:
        raise FileNotFoundError(
            f"{BUSYBOX} is missing: install busybox-static (scripts/bootstrap.sh)"
        ) from exc
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "root", "www", "var", "proc", "sys", "dev"):
            _add_dir(tar, d, 0o700 if d == "root" else 0o755)
        _add_dir(tar, "tmp", 0o1777)
        _add_file(tar, "bin/busybox", busybox, 0o755)
        for applet in busybox_applets():
            _add_symlink(tar, f"bin/{applet}", "busybox")
        _add_file(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        _add_file(tar, "etc/group", b"root:x:0:\nnobody:x:65534:\n")
        _add_file(tar, "www/index.html", index_html.encode())
    return buf.getvalue()


def _content_key(index_html: str, cmd: list[str]) -> str:
    """A short digest of what makes one test image differ from another."""
    payload = json.dumps({"index": index_html, "cmd": cmd, "applets": busybox_applets()})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def import_image(
    docker_client: Any,
    repository: str,
    tag: str,
    index_html: str = DEFAULT_INDEX_HTML,
    cmd: list[str] | None = None,
) -> str:
    """Import the busybox rootfs into a daemon as `repository:tag` and return the image id.

    The default command serves /www with `httpd` on port 8080 (also declared with EXPOSE),
    wrapped by `graceful_cmd`; `docker_client` is a `docker.DockerClient`.
    """
    command = list(cmd) if cmd is not None else list(DEFAULT_CMD)
    changes = [
        f"CMD {json.dumps(command)}",
        "WORKDIR /",
        "ENV PATH=/bin",
        f"EXPOSE {HTTP_PORT}/tcp",
        f"LABEL {CONTENT_LABEL}={_content_key(index_html, command)}",
    ]
    raw = docker_client.api.import_image_from_data(
        busybox_rootfs_tar(index_html), repository=repository, tag=tag, changes=changes
    )
    # The answer is a stream of JSON lines; an error shows up as {"error": ...}.
    for line in str(raw).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("error"):
            raise ProcessError(f"importing {repository}:{tag} failed: {msg['error']}")
    image = docker_client.images.get(f"{repository}:{tag}")
    return cast(str, image.id)


def ensure_image(
    docker_client: Any,
    repository: str,
    tag: str,
    index_html: str = DEFAULT_INDEX_HTML,
    cmd: list[str] | None = None,
) -> str:
    """Import the image unless the daemon already has `repository:tag` with the same content."""
    command = list(cmd) if cmd is not None else list(DEFAULT_CMD)
    try:
        image = docker_client.images.get(f"{repository}:{tag}")
    except docker.errors.ImageNotFound:
        return import_image(docker_client, repository, tag, index_html, command)
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(CONTENT_LABEL) == _content_key(index_html, command):
        return cast(str, image.id)
    return import_image(docker_client, repository, tag, index_html, command)
