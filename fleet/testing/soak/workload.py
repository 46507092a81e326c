"""The soak's workload: its apps, and client threads that change them all along (apply,
scale, set image, undo, delete, drain, uncordon), each call recorded with how it
ended and the app's generation read straight from etcd before and after it.

Calls on one app never overlap (a lock per app), so a refused call's "changed
nothing" can be judged from the generation; the threads run at once, on different
apps and hosts, with the faults.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from fleet.client import FleetClient
from fleet.errors import (
    Conflict,
    FailedPrecondition,
    FleetError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from fleet.spec import load_documents
from fleet.testing.soak.checker import ANY
from fleet.testing.soak.cluster import SoakCluster
from fleet.testing.soak.model import OpRecord, Outcome

__all__ = ["PROBED_APPS", "Workload", "broken_spec", "global_spec", "job_spec", "web_spec"]

# Errors that say fleet did not do it; any other end (the connection broke, a deadline)
# leaves the outcome unknown.
_REFUSALS = (Conflict, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied)
PROBED_APPS = ("web",)
WEB_MIN_AVAILABLE = 3


def web_spec(image: str, replicas: int = 4) -> str:
    """The web app: a health check, ``min_available``, make-before-break rollouts."""
    return f"""
name: web
image: {image}
replicas: {replicas}
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
min_available: {WEB_MIN_AVAILABLE}
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 1s, retries: 2}}
update: {{max_surge: 1, max_unavailable: 0, min_ready: 1s}}
"""


def global_spec(image: str) -> str:
    return f"""
name: gl
image: {image}
mode: global
resources: {{cpu: 0.05, memory: 16Mi}}
"""


def broken_spec(image: str) -> str:
    """An app whose image is now and then one no registry holds; no automatic rollback
    (the client puts it right), so etcd holds what the clients asked."""
    return f"""
name: brk
image: {image}
replicas: 2
resources: {{cpu: 0.05, memory: 16Mi}}
update: {{max_surge: 1, max_unavailable: 0, progress_deadline: 20s, auto_rollback: false}}
"""


def job_spec(name: str, image: str) -> str:
    return f"""
name: {name}
image: {image}
mode: job
completions: 2
parallelism: 2
command: ["sh", "-c", "sleep 3"]
resources: {{cpu: 0.05, memory: 16Mi}}
"""


class Workload:
    """Client threads over the cluster's apps; ``ops`` records every call."""

    def __init__(self, cluster: SoakCluster, seed: int) -> None:
        self.cluster = cluster
        self.seed = seed
        self.ops: list[OpRecord] = []
        self._ops_lock = threading.Lock()
        self._app_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._jobs: list[str] = []
        self._job_count = 0
        self.images = [cluster.images[t] for t in sorted(cluster.images)]

    # ------------------------------------------------------------------ recording

    def _generation(self, app: str) -> int | None:
        """The app's generation in etcd (None: no record), read directly."""
        key = self.cluster.layout.app(app)
        _, kvs = self.cluster.etcd_reader.prefix(key)
        for k, value in kvs:
            if k == key:
                return int(json.loads(value)["generation"])
        return None

    def _image(self, app: str) -> str:
        key = self.cluster.layout.app(app)
        _, kvs = self.cluster.etcd_reader.prefix(key)
        return next(str(json.loads(v)["spec"]["image"]) for k, v in kvs if k == key)

    def call(
        self,
        thread: str,
        client: FleetClient,
        op: str,
        target: str,
        args: str,
        action: Callable[[FleetClient], object],
        wants: tuple[tuple[str, str], ...] = (),
        app_op: bool = True,
    ) -> Outcome:
        """Run one call under the app's lock and record it."""
        lock = self._app_locks.setdefault(target, threading.Lock())
        with lock:
            before = self._safe_generation(target) if app_op else None
            start = time.time()
            outcome: Outcome = "ok"
            error = ""
            try:
                action(client)
            except _REFUSALS as refused:
                outcome, error = "refused", f"{type(refused).__name__}: {refused}"
            except FleetError as failed:
                outcome, error = "ambiguous", f"{type(failed).__name__}: {failed}"
            end = time.time()
            after = self._safe_generation(target) if app_op else None
            if op == "undo" and outcome == "ok":
                wants = (("image", self._image(target)),)
            record = OpRecord(
                thread, op, target, args, start, end, outcome, error[:300], before, after, wants
            )
        with self._ops_lock:
            self.ops.append(record)
        return outcome

    def _safe_generation(self, app: str) -> int | None:
        for _ in range(20):
            try:
                return self._generation(app)
            except ConnectionError:
                time.sleep(0.5)
        raise ConnectionError("etcd did not answer for 10 s")

    # ------------------------------------------------------------------ set-up

    def initial(self, client: FleetClient) -> None:
        v1 = self.images[0]
        specs = [web_spec(v1), global_spec(v1), broken_spec(v1)]
        wants = {
            "web": (("exists", "true"), ("replicas", "4"), ("image", v1)),
            "gl": (("exists", "true"), ("image", v1)),
            "brk": (("exists", "true"), ("replicas", "2"), ("image", v1)),
        }
        for spec, (app, want) in zip(specs, wants.items(), strict=True):
            docs = load_documents(spec, f"{app}.yaml")
            self.call("setup", client, "apply", app, "initial", lambda c, d=docs: c.apply(d), want)  # type: ignore[misc]

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        for name, body in (
            ("web", self._web),
            ("brk-jobs", self._brk_jobs),
            ("drains", self._drains),
            ("gl-racer", self._racer),
        ):
            rng = random.Random(f"workload-{self.seed}-{name}")
            thread = threading.Thread(target=self._loop, args=(name, body, rng), daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _loop(
        self, name: str, body: Callable[[str, FleetClient, random.Random], None], rng: random.Random
    ) -> None:
        with self.cluster.client() as client:
            while not self._stop.is_set():
                # etcd unreadable around a call: that call is not recorded
                with contextlib.suppress(ConnectionError):
                    body(name, client, rng)
                self._stop.wait(rng.uniform(2, 6))

    def _web(self, name: str, client: FleetClient, rng: random.Random) -> None:
        choice = rng.choice(["scale", "set-image", "set-image", "undo", "apply"])
        if choice == "scale":
            n = rng.randint(4, 6)
            self.call(
                name,
                client,
                "scale",
                "web",
                str(n),
                lambda c: c.scale("web", n),
                (("replicas", str(n)),),
            )
        elif choice == "set-image":
            image = rng.choice(self.images)
            self.call(
                name,
                client,
                "set-image",
                "web",
                image,
                lambda c: c.set_image("web", image),
                (("image", image),),
            )
        elif choice == "undo":
            self.call(
                name, client, "undo", "web", "", lambda c: c.rollout_undo("web"), (("image", ANY),)
            )
        else:
            image, n = rng.choice(self.images), rng.randint(4, 6)
            docs = load_documents(web_spec(image, n), "web.yaml")
            want = (("exists", "true"), ("replicas", str(n)), ("image", image))
            self.call(name, client, "apply", "web", f"{image} x{n}", lambda c: c.apply(docs), want)

    def _brk_jobs(self, name: str, client: FleetClient, rng: random.Random) -> None:
        choice = rng.choice(["break", "fix", "undo", "job", "job"])
        if choice in ("break", "fix"):
            image = self.cluster.broken_image if choice == "break" else rng.choice(self.images)
            self.call(
                name,
                client,
                "set-image",
                "brk",
                image,
                lambda c: c.set_image("brk", image),
                (("image", image),),
            )
        elif choice == "undo":
            self.call(
                name, client, "undo", "brk", "", lambda c: c.rollout_undo("brk"), (("image", ANY),)
            )
        else:
            self._job_count += 1
            job = f"job-{self._job_count}"
            docs = load_documents(job_spec(job, rng.choice(self.images)), f"{job}.yaml")
            outcome = self.call(
                name, client, "apply", job, "job", lambda c: c.apply(docs), (("exists", "true"),)
            )
            if outcome != "refused":
                self._jobs.append(job)
            if len(self._jobs) > 2:
                old = self._jobs.pop(0)
                self.call(
                    name,
                    client,
                    "delete",
                    old,
                    "",
                    lambda c: c.delete_app(old),
                    (("exists", "false"),),
                )

    def _drains(self, name: str, client: FleetClient, rng: random.Random) -> None:
        host = rng.choice([h.name for h in self.cluster.pool.hosts])
        self.call(name, client, "drain", host, "", lambda c: c.drain_host(host), app_op=False)
        self._stop.wait(rng.uniform(5, 15))
        self.call(
            name,
            client,
            "uncordon",
            host,
            "",
            lambda c: c.set_host_state(host, "ready"),
            app_op=False,
        )

    def _racer(self, name: str, client: FleetClient, rng: random.Random) -> None:
        """The global app's image, and scales of web racing the web thread's calls."""
        if rng.random() < 0.5:
            image = rng.choice(self.images)
            self.call(
                name,
                client,
                "set-image",
                "gl",
                image,
                lambda c: c.set_image("gl", image),
                (("image", image),),
            )
        else:
            n = rng.randint(4, 6)
            self.call(
                name,
                client,
                "scale",
                "web",
                str(n),
                lambda c: c.scale("web", n),
                (("replicas", str(n)),),
            )

    # ------------------------------------------------------------------ the end

    def settle(self, deadline: float) -> None:
        """After the faults: every host uncordoned and the broken app on a good image,
        each call repeated until it succeeds (or ``deadline``)."""
        with self.cluster.client() as client:
            calls: list[
                tuple[str, str, Callable[[FleetClient], Any], tuple[tuple[str, str], ...], bool]
            ] = [
                (h.name, "uncordon", lambda c, h=h.name: c.set_host_state(h, "ready"), (), False)  # type: ignore[misc]
                for h in self.cluster.pool.hosts
            ]
            good = self.images[0]
            calls.append(
                ("brk", "set-image", lambda c: c.set_image("brk", good), (("image", good),), True)
            )
            for target, op, action, wants, app_op in calls:
                while time.time() < deadline:
                    try:
                        if (
                            self.call("settle", client, op, target, "", action, wants, app_op)
                            == "ok"
                        ):
                            break
                    except ConnectionError:
                        pass
                    time.sleep(1)
