"""The fault driver: every few seconds it picks a fault (kind, target, duration) with
its own seeded random stream and starts it in a thread of its own, whatever else is
on, so faults overlap; each heals itself when its time is up (or when the driver
stops). Each fault's window is recorded for the checker.

Limits keep the pool recoverable, not safe: one fault per target at a time, at most
two of the four hosts faulted at once, one etcd member of three (quorum kept), one
control plane of two. Clock jumps are not done: the system clock is the whole
machine's (time namespaces move only the monotonic and boot clocks), and jumping it
would break every other process on this shared machine and the etcd leases of all.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from fleet.testing.soak.cluster import SERVERS, SoakCluster
from fleet.testing.soak.model import FaultWindow

__all__ = ["KINDS", "FaultDriver"]

log = logging.getLogger(__name__)

# kind -> weight in the draw
KINDS: dict[str, int] = {
    "cp-kill": 3,  # kill -9 of a control plane, the leader 3 times in 4
    "cp-term": 1,  # SIGTERM of a control plane
    "agent-kill": 3,  # kill -9 of an agent
    "dockerd-restart": 2,
    "net-cut": 3,  # the host's veth down, then up
    "netem": 2,  # 30% packet loss both ways on the host's link
    "etcd-stop": 2,  # one etcd member stopped
    # One etcd member frozen (SIGSTOP, then SIGCONT): a member whose disk stops
    # answering (an fsync that hangs) or that stalls; its peers go on without it, and
    # it comes back with stale state to catch up on. (No slowed disk: this kernel has
    # no dm-delay, and a frozen member is the worst a slow disk gets.)
    "etcd-pause": 1,
    "power-off": 2,  # agent, dockerd, containerd, shims and containers SIGKILLed at once
}
MAX_HOSTS_FAULTED = 2


@dataclass(frozen=True)
class _Plan:
    kind: str
    target: str
    hosts: frozenset[str]
    duration: float
    inject: Callable[[], None]
    heal: Callable[[], None]


class FaultDriver:
    """Runs faults from ``start()`` until ``stop()``; ``windows`` is their record."""

    def __init__(
        self,
        cluster: SoakCluster,
        seed: int,
        *,
        gap: tuple[float, float] = (2, 7),
        quiet_every: float = 300.0,
        quiet_for: float = 75.0,
    ) -> None:
        self.cluster = cluster
        self.rng = random.Random(f"faults-{seed}")
        self.gap = gap
        # Every ``quiet_every`` seconds the faults on are let heal and none starts for
        # ``quiet_for`` more: the events check skips the starts near a fault, and with a
        # fault every few seconds it would judge almost none (the clients go on).
        self.quiet_every, self.quiet_for = quiet_every, quiet_for
        self.quiet_spells: list[tuple[float, float]] = []  # (from, to), epoch seconds
        self.windows: list[FaultWindow] = []
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.kinds = dict(KINDS)
        why = cluster.netem_available()
        if why:
            del self.kinds["netem"]
            self.notes.append(f"netem is not drawn: tc netem does not work here ({why})")
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # targets with a fault on
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._main = threading.Thread(target=self._run, name="faults", daemon=True)

    def start(self) -> None:
        self._main.start()

    def stop(self) -> None:
        """No new fault; heal those on and wait for them."""
        self._stop.set()
        self._main.join()
        for thread in self._threads:
            thread.join(180)

    def snapshot(self) -> list[FaultWindow]:
        with self._lock:
            return list(self.windows)

    def _run(self) -> None:
        next_quiet = time.time() + self.quiet_every
        while not self._stop.is_set():
            if time.time() >= next_quiet:
                self._quiet()
                next_quiet = time.time() + self.quiet_every
                continue
            plan = self._plan()
            if plan is not None:
                thread = threading.Thread(target=self._apply, args=(plan,), daemon=True)
                self._threads.append(thread)
                thread.start()
            self._stop.wait(self.rng.uniform(*self.gap))

    def _quiet(self) -> None:
        """Wait for the faults on to heal, then ``quiet_for`` without any."""
        while not self._stop.is_set():
            with self._lock:
                if not self._busy:
                    break
            self._stop.wait(1.0)
        began = time.time()
        self._stop.wait(self.quiet_for)
        self.quiet_spells.append((began, time.time()))
        log.info("a quiet spell of %.0f s without faults", time.time() - began)

    def _plan(self) -> _Plan | None:
        """Draw a fault that the limits allow now (None: the draw found none)."""
        c = self.cluster
        kind = self.rng.choices(list(self.kinds), weights=list(self.kinds.values()))[0]
        duration = self.rng.uniform(3, 25)
        with self._lock:
            busy = set(self._busy)
        hosts_busy = {t for t in busy if t.startswith("h")}
        free_hosts = [h.name for h in c.pool.hosts if h.name not in busy]
        if kind.startswith("cp-"):
            if any(t in SERVERS for t in busy):
                return None
            leader = c.leader()
            pick = self.rng.random()
            target = leader if leader in SERVERS and pick < 0.75 else self.rng.choice(SERVERS)
            kill = kind == "cp-kill"
            return _Plan(
                kind,
                target,
                frozenset(),
                duration,
                lambda: c.stop_server(target, kill=kill),
                lambda: c.start_server(target),
            )
        if kind in ("etcd-stop", "etcd-pause"):
            if any(t.startswith("etcd") for t in busy):
                return None
            index = self.rng.randrange(len(c.etcd.members))
            if kind == "etcd-pause":
                inject, heal = (
                    lambda: c.freeze_etcd(index, True),
                    lambda: c.freeze_etcd(index, False),
                )
            else:
                inject, heal = (
                    lambda: c.etcd_member(index, False),
                    lambda: c.etcd_member(index, True),
                )
            return _Plan(kind, f"etcd-m{index}", frozenset(), duration, inject, heal)
        if len(hosts_busy) >= MAX_HOSTS_FAULTED or not free_hosts:
            return None
        host = self.rng.choice(sorted(free_hosts))
        h = c.pool.host(host)
        actions: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "agent-kill": (lambda: c.kill_agent(host), lambda: c.start_agent(host)),
            "dockerd-restart": (lambda: c.restart_dockerd(host), lambda: None),
            "net-cut": (lambda: c.cut(host, True), lambda: c.cut(host, False)),
            "netem": (lambda: c.netem(h, True), lambda: c.netem(h, False)),
            "power-off": (lambda: c.power(host, False), lambda: c.power(host, True)),
        }
        inject, heal = actions[kind]
        if kind == "dockerd-restart":
            duration = 0.0
        return _Plan(kind, host, frozenset({host}), duration, inject, heal)

    def _heal(self, plan: _Plan) -> None:
        """Heal, trying again twice: a fault left on would leave the pool broken."""
        for attempt in range(3):
            try:
                plan.heal()
                return
            except Exception as error:
                if attempt == 2:
                    raise
                self.errors.append(f"healing {plan.kind} {plan.target} (retried): {error!r}")
                time.sleep(2)

    def _apply(self, plan: _Plan) -> None:
        with self._lock:
            if plan.target in self._busy:
                return
            self._busy.add(plan.target)
            window = FaultWindow(plan.kind, plan.target, plan.hosts, time.time())
            self.windows.append(window)
            index = len(self.windows) - 1
        log.info("fault %s on %s for %.0fs", plan.kind, plan.target, plan.duration)
        try:
            try:
                plan.inject()
            finally:
                self._stop.wait(plan.duration)
                self._heal(plan)
        except Exception as error:  # a fault that failed is reported, never hidden
            self.errors.append(f"{plan.kind} {plan.target}: {error!r}")
            log.exception("fault %s on %s", plan.kind, plan.target)
        finally:
            with self._lock:
                self.windows[index] = replace(window, end=time.time())
                self._busy.discard(plan.target)
