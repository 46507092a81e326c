"""fleet's own image (the repository's Dockerfile), for tests that run fleet from it.

    tag = ensure_fleet_image(host.docker_url)   # "fleet:0.1.0", there in that daemon

The first call in a process builds it with ``scripts/image.sh`` (as ``make image`` does:
wheels from this venv, the local Debian base where python:3.11-slim is missing), which
keeps an image whose source-hash label matches the tree; every other daemon gets a copy
by ``docker save`` / ``docker load``, so one build serves a whole pool.

Processes share a build too (pytest's workers, each with pools of its own): the first
saves the image to ``build/fleet-image-<tree hash>.tar`` and the others load that instead
of building again (a worker used to wait for the other's build, under the script's lock,
and then make its own: 250 s of a test's setup in CI).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors

from fleet import __version__
from fleet.testing.dockerhosts import DOCKER_API_VERSION
from fleet.testing.procs import SYSTEM_PATH, ProcessError

__all__ = ["FLEET_IMAGE", "BuiltImage", "build_fleet_image", "copy_image", "ensure_fleet_image"]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "image.sh"
FLEET_IMAGE = f"fleet:{__version__}"
# debootstrap (the first time on a machine), the wheels and the build itself.
BUILD_TIMEOUT = 900.0
SHARED_DIR = REPO / "build"  # the saved image other processes load (``build_fleet_image``)


@dataclass(frozen=True)
class BuiltImage:
    """The image this process built or found up to date, and where."""

    tag: str
    image_id: str
    size: int  # bytes, as `docker images` counts them
    docker_url: str  # the daemon that built it
    seconds: float  # how long scripts/image.sh took
    report: str  # what scripts/image.sh said (base, size, reused or built)


_lock = threading.Lock()
_built: BuiltImage | None = None


def _client(docker_url: str) -> Any:
    return docker.DockerClient(base_url=docker_url, version=DOCKER_API_VERSION, timeout=600)


def _run_script(docker_url: str) -> tuple[str, float]:
    if not SCRIPT.exists():
        raise ProcessError(f"{SCRIPT} is missing: fleet's image is built from its source tree")
    if not Path(sys.prefix, "bin", "pip").exists():
        raise ProcessError(f"no pip in {sys.prefix}: the wheels are built with this venv's pip")
    env = {
        **os.environ,
        "DOCKER_HOST": docker_url,
        "VENV": sys.prefix,
        "PATH": f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}",
    }
    began = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    seconds = time.monotonic() - began
    report = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise ProcessError(f"scripts/image.sh exited with {done.returncode}:\n{report}")
    return report, seconds


def build_fleet_image(docker_url: str) -> BuiltImage:
    """Build fleet's image in the daemon at ``docker_url`` (or find it up to date there,
    or load the one another process saved from this tree), once per process: later
    calls return the first one, wherever it was built (so that daemon must outlive the
    callers: a test session's pools do)."""
    global _built
    with _lock:
        if _built is None:
            with _shared_lock():
                _built = _load_shared(docker_url) or _build_and_share(docker_url)
        return _built


def tree_hash() -> str:
    """A digest of everything the image is made from in this tree (as ``image.sh``'s
    source hash, without the base's id, which differs from daemon to daemon)."""
    paths = [p for p in (REPO / "fleet").rglob("*") if p.is_file() and p.suffix != ".pyc"]
    paths = [p for p in paths if "__pycache__" not in p.parts]
    names = ("pyproject.toml", "constraints.txt", "Dockerfile", ".dockerignore")
    paths += [REPO / name for name in names] + [SCRIPT, SCRIPT.with_name("base-image.sh")]
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"(missing)")
    return digest.hexdigest()[:16]


@contextmanager
def _shared_lock() -> Iterator[None]:
    SHARED_DIR.mkdir(exist_ok=True)
    with open(SHARED_DIR / ".fleet-image-shared.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other processes wait for one build
        yield


def _shared_paths() -> tuple[Path, Path]:
    saved = SHARED_DIR / f"fleet-image-{tree_hash()}.tar"
    return saved, saved.with_suffix(".json")


def _load_shared(docker_url: str) -> BuiltImage | None:
    """The image another process built from this tree and saved, loaded into the daemon
    at ``docker_url``; None when there is none."""
    saved, about = _shared_paths()
    if not (saved.exists() and about.exists()):
        return None
    began = time.monotonic()
    client = _client(docker_url)
    try:
        with saved.open("rb") as tar:
            client.images.load(tar)
        image = client.images.get(FLEET_IMAGE)
        image.tag("fleet", "latest")
        first = BuiltImage(**json.loads(about.read_text()))
    finally:
        client.close()
    if first.image_id != image.id:
        raise ProcessError(f"{saved} held {image.id}, not the {first.image_id} it was saved as")
    loaded = f"image: loaded from {saved.name} in {time.monotonic() - began:.0f}s"
    return replace(first, docker_url=docker_url, report=f"{first.report}\n{loaded}")


def _build_and_share(docker_url: str) -> BuiltImage:
    report, seconds = _run_script(docker_url)
    client = _client(docker_url)
    try:
        image = client.images.get(FLEET_IMAGE)
        built = BuiltImage(
            FLEET_IMAGE, image.id, int(image.attrs["Size"]), docker_url, seconds, report
        )
        saved, about = _shared_paths()
        for old in SHARED_DIR.glob("fleet-image-*.*"):
            old.unlink()  # another tree's
        partial = saved.with_suffix(".partial")
        with partial.open("wb") as tar:
            for chunk in image.save(named=FLEET_IMAGE):
                tar.write(chunk)
        partial.rename(saved)
        about.write_text(json.dumps(built.__dict__))
    finally:
        client.close()
    return built


def copy_image(tag: str, source_url: str, target_url: str) -> str:
    """Load ``tag`` from one daemon into another (save | load), unless the target has
    the same image under that tag already; returns the image id."""
    source, target = _client(source_url), _client(target_url)
    try:
        image = source.images.get(tag)
        try:
            if target.images.get(tag).id == image.id:
                return str(image.id)
        except docker.errors.ImageNotFound:
            pass
        target.images.load(image.save(named=True))
        return str(target.images.get(tag).id)
    finally:
        source.close()
        target.close()


def ensure_fleet_image(docker_url: str) -> str:
    """fleet's image in the daemon at ``docker_url``, as ``fleet:<version>`` and
    ``fleet:latest``: built there if this process has built none yet, else copied from
    the daemon that built it. Returns ``fleet:<version>``."""
    built = build_fleet_image(docker_url)
    if built.docker_url != docker_url:
        copy_image(built.tag, built.docker_url, docker_url)
        client = _client(docker_url)
        try:
            client.images.get(built.tag).tag("fleet", "latest")
        finally:
            client.close()
    return built.tag
