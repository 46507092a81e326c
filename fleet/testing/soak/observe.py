"""Reads the truth for the checker: each host's dockerd through the Docker SDK, fleet's
keys straight from etcd (its JSON gateway, any member that answers; never fleet's API),
the processes' memory from /proc, and whether web containers answer HTTP."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests

from fleet.store.keys import (
    ALIVE,
    HOST_LABELS,
    HOSTS,
    JOBS,
    REVISIONS,
    ROLLOUTS,
    STATUS,
    KeyLayout,
)
from fleet.testing.dockerhosts import DOCKER_API_VERSION, DockerHost
from fleet.testing.images import HTTP_PORT
from fleet.testing.soak.model import AppView, Container, EtcdView, Placement, Snapshot

__all__ = ["Observer", "read_start_events"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdReader:
    """Range reads over etcd's JSON gateway, from the first member that answers."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for url in self.urls:
            request = urllib.request.Request(
                url + path, data=json.dumps(body).encode(), method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=3) as response:
                    found: dict[str, Any] = json.loads(response.read())
                    return found
            except (OSError, ValueError) as error:
                last = error
        raise ConnectionError(f"no etcd member answered: {last}")

    def prefix(
        self, prefix: bytes, *, keys_only: bool = False, revision: int = 0
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """(etcd's revision, [(key, value)]) of every key under ``prefix``."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(_range_end(prefix))}
        if keys_only:
            body["keys_only"] = True
        if revision:
            body["revision"] = revision
        result = self._post("/v3/kv/range", body)
        kvs = [
            (base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")))
            for kv in result.get("kvs") or []
        ]
        return int(result["header"]["revision"]), kvs


def _app_view(name: str, raw: bytes) -> AppView:
    record = json.loads(raw)
    spec = record["spec"]
    return AppView(
        name=name,
        generation=int(record["generation"]),
        revision=int(record["revision"]),
        replicas=int(spec.get("replicas", 1)),
        mode=str(spec.get("mode", "replicated")),
        image=str(spec.get("image", "")),
        min_available=spec.get("min_available"),
    )


def _placement(raw: bytes) -> Placement:
    record = json.loads(raw)
    nxt = record.get("next") or {}
    return Placement(
        app=record["app"],
        slot=int(record["slot"]),
        revision=int(record["revision"]),
        host=record["host"],
        next_revision=int(nxt["revision"]) if nxt else None,
        next_host=nxt.get("host") if nxt else None,
        stopped=bool(record.get("stopped", False)),
    )


def read_etcd(reader: EtcdReader, layout: KeyLayout) -> EtcdView:
    """Every folder the checker reads, all at one etcd revision."""
    revision, pool_kv = reader.prefix(layout.pool())  # the pool key (and any pool...)
    pool_id = ""
    for key, value in pool_kv:
        if key == layout.pool():
            pool_id = str(json.loads(value).get("pool_id", ""))

    def folder(prefix: bytes, keys_only: bool = True) -> list[tuple[Any, bytes]]:
        _, kvs = reader.prefix(prefix, keys_only=keys_only, revision=revision)
        parsed = []
        for key, value in kvs:
            found = layout.parse_or_warn(key)
            if found is not None:
                parsed.append((found.parts, value))
        return parsed

    apps = {parts[0]: _app_view(parts[0], v) for parts, v in folder(layout.apps(), False)}
    revisions = {
        (p[0], p[1]): json.loads(v) for p, v in folder(layout.folder_prefix(REVISIONS), False)
    }
    templates = {key: str(r.get("template_hash", "")) for key, r in revisions.items()}
    images = {key: str((r.get("spec") or {}).get("image", "")) for key, r in revisions.items()}
    hosts = {
        parts[0]: str(json.loads(v).get("state", "ready"))
        for parts, v in folder(layout.folder_prefix(HOSTS), False)
    }
    return EtcdView(
        pool_id=pool_id,
        apps=apps,
        replicas=tuple(_placement(v) for _, v in folder(layout.replicas(), False)),
        revisions=frozenset(templates),
        templates=templates,
        images=images,
        rollouts=frozenset(p[0] for p, _ in folder(layout.folder_prefix(ROLLOUTS))),
        jobs=frozenset(p[0] for p, _ in folder(layout.folder_prefix(JOBS))),
        hosts=hosts,
        alive=frozenset(p[0] for p, _ in folder(layout.folder_prefix(ALIVE))),
        status=frozenset(p[0] for p, _ in folder(layout.folder_prefix(STATUS))),
        reports=frozenset(tuple(p) for p, _ in folder(layout.reports())),
        host_labels=frozenset(p[0] for p, _ in folder(layout.folder_prefix(HOST_LABELS))),
    )


def read_start_events(
    reader: EtcdReader, layout: KeyLayout
) -> list[tuple[str, str, str, int, float, int]]:
    """(host, container id, app, slot, time, count) of every stored ``start`` event."""
    from datetime import datetime

    _, kvs = reader.prefix(layout.events())
    found = []
    for key, value in kvs:
        parsed = layout.parse_or_warn(key)
        source = parsed.parts[0].source if parsed is not None else ""
        with contextlib.suppress(ValueError):
            batch = json.loads(value)
            for event in batch if isinstance(batch, list) else [batch]:
                if event.get("kind") != "start":
                    continue
                stamp = str(event.get("time", "")).replace("Z", "+00:00")
                found.append(
                    (
                        str(event.get("host") or source),
                        str(event.get("containerId", "")),
                        str(event.get("app", "")),
                        int(event.get("slot", 0)),
                        datetime.fromisoformat(stamp).timestamp() if stamp else 0.0,
                        int(event.get("count", 0)),
                    )
                )
    return found


def rss_bytes(pid: int) -> int | None:
    """A process's resident set, from /proc (None: it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _probe(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=3) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Observer:
    """Takes ``Snapshot``s: Docker on every host (containers labelled ``fleet.app``),
    etcd, RSS of the processes ``pids()`` names, HTTP probes of ``probe_apps``."""

    def __init__(
        self,
        hosts: Sequence[DockerHost],
        etcd: EtcdReader,
        layout: KeyLayout,
        pids: Callable[[], dict[str, int]],
        probe_apps: Sequence[str],
        unpullable: frozenset[str] = frozenset(),
    ) -> None:
        self.hosts = list(hosts)
        self.unpullable = unpullable
        self.etcd = etcd
        self.layout = layout
        self.pids = pids
        self.probe_apps = set(probe_apps)
        self._clients: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(max_workers=6)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()

    def _client(self, host: DockerHost) -> Any:
        if host.name not in self._clients:
            self._clients[host.name] = docker.DockerClient(
                base_url=host.docker_url, version=DOCKER_API_VERSION, timeout=10
            )
        return self._clients[host.name]

    def _containers(self, host: DockerHost) -> list[Container] | None:
        if not host.ping():
            return None
        try:
            summaries = self._client(host).api.containers(all=True, filters={"label": "fleet.app"})
        except (docker.errors.DockerException, requests.RequestException, OSError):
            client = self._clients.pop(host.name, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            return None
        found = []
        for s in summaries:
            labels = s.get("Labels") or {}
            port = next(
                (
                    int(p["PublicPort"])
                    for p in s.get("Ports") or []
                    if p.get("PrivatePort") == HTTP_PORT and p.get("PublicPort")
                ),
                None,
            )
            with contextlib.suppress(KeyError, ValueError):
                found.append(
                    Container(
                        host=host.name,
                        id=s["Id"],
                        name=(s.get("Names") or ["?"])[0].lstrip("/"),
                        app=labels["fleet.app"],
                        slot=int(labels["fleet.slot"]),
                        revision=int(labels["fleet.revision"]),
                        pool=labels.get("fleet.pool", ""),
                        template=labels.get("fleet.spec-hash", ""),
                        running=s.get("State") == "running",
                        image=str(s.get("Image", "")),
                        started_at=str(s.get("Created", "")),
                        port=port,
                    )
                )
        return found

    def snapshot(self) -> Snapshot:
        """The truth now: Docker first, then etcd (a container made in between is seen
        as a stray for one snapshot, which no bound is short enough to mind)."""
        at = time.time()
        read = list(self._pool.map(self._containers, self.hosts))
        unreadable = frozenset(h.name for h, r in zip(self.hosts, read, strict=True) if r is None)
        containers = [c for r in read if r for c in r]
        address = {h.name: h.address for h in self.hosts}
        probed = [c for c in containers if c.running and c.app in self.probe_apps and c.port]
        answers = dict(
            zip(
                [c.id for c in probed],
                self._pool.map(lambda c: _probe(address[c.host], c.port or 0), probed),
                strict=True,
            )
        )
        containers = [
            c if c.id not in answers else _with_serving(c, answers[c.id]) for c in containers
        ]
        try:
            etcd: EtcdView | None = read_etcd(self.etcd, self.layout)
        except (ConnectionError, KeyError, ValueError):
            etcd = None
        rss = {}
        for name, pid in self.pids().items():
            value = rss_bytes(pid)
            if value is not None:
                rss[name] = value
        return Snapshot(at, tuple(containers), unreadable, etcd, rss, self.unpullable)


def _with_serving(c: Container, serving: bool) -> Container:
    from dataclasses import replace

    return replace(c, serving=serving)
