"""Sending each connected host its whole desired set (``desired``) whenever what the
set is made of changes.

One dispatcher per server watches the informer and wakes only the sessions whose
inputs changed: their replicas' records and their host record (the informer counts
those per host), or what every set is made of (revisions, secrets, the registry
mirror, the upgrade walk).
With thousands of hosts, waking every session on every change (each report of any
host) would cost O(hosts x changes); a round costs O(connected hosts) comparisons.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fleet.controlplane._tasks import running
from fleet.controlplane.desired import (
    SpecCache,
    build_containers,
    desired_inputs,
    desired_placed,
    placed_fingerprint,
)
from fleet.controlplane.outbox import SessionOutbox
from fleet.proto import fleet_pb2 as pb
from fleet.secrets import SecretBox
from fleet.store import ClusterState, Informer

__all__ = ["DesiredPush", "HostPush"]

log = logging.getLogger(__name__)

_PUSH_COALESCE = 0.05  # seconds a session waits after a change before it looks
# A host's next set goes out no sooner than this after its last one: changes that keep
# coming go together. A change after a quiet spell goes at once.
_PUSH_MIN_GAP = 0.5
# While changes reach many hosts at once (an apply of 50 apps commits one app after
# another, each a change to every host; a host loss's moves, app by app), the gap is
# longer: at 1,000 hosts a set per commit was 10-20 sets a host, each built here and
# reconciled there container by container, and the hosts' reconciles were what the
# moves of a host loss waited for. A rollout's waves reach a few hosts each: they keep
# the short gap. Every set a host takes costs a reconcile there and its reports here
# (stored, counted, watched back): in the 100,000-replica apply at 1,000 hosts (its
# commits last about 10 s) a 2 s gap built 9,200 sets, first ones included, and all ran
# in 35-40 s; a 4 s gap built 4,800, and all ran in 27-35 s (four runs); host loss was
# no slower (16-20 s).
_PUSH_WIDE_GAP = 4.0
_WIDE_CHANGE = 64  # hosts whose sets one look of the dispatcher found changed
# The wide gap ends early once no host's set has changed for this long: it is there to
# fold changes that keep coming into fewer sets, and once they stop nothing more will be
# folded in. Waiting it out sent a large apply's last sets 3.5-5 s after its last app
# was placed (two runs at 1,000 hosts).
_PUSH_QUIET = 1.0


def _is_fingerprint(text: str) -> bool:
    """Whether an agent's ``held_fingerprint`` looks like one this code makes (any other
    text is taken for none: the set is sent)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(slots=True, eq=False)
class HostPush:
    """One connected host's pushes: what it was sent last, and the task that sends its
    next set while one is owed. A host at rest has none: a task waiting for the next
    change, with its coroutines, future and context, was 0.9 KiB of the 9.1 that fleet
    kept for a connected host (``benchmarks/hostcost.py``; #24 item 3)."""

    host_id: str
    outbox: SessionOutbox
    sent: str  # the fingerprint of the set the agent holds ("": none known)
    inputs: object = None  # what the last set built was made of (``desired_inputs``)
    sent_at: float = -math.inf  # monotonic
    owed: bool = False  # its set may have changed since it was last looked at
    task: asyncio.Task[None] | None = None


class DesiredPush:
    def __init__(
        self,
        informer: Informer,
        secrets: SecretBox | None,
        on_change: Callable[[ClusterState], None] = lambda state: None,
    ) -> None:
        """``on_change`` is called first in every round of the dispatcher, with the
        state it looks at (the agent stream ends denied sessions there)."""
        self._informer = informer
        self._secrets = secrets
        self._on_change = on_change
        self._specs = SpecCache(secrets)
        self._hosts: dict[str, HostPush] = {}  # the connected hosts' pushes
        self._sessions_changed = 0  # counts the sessions' comings and goings
        self._wide_until = -math.inf  # monotonic: the wide gap holds until then
        self._dispatcher: asyncio.Task[None] | None = None
        # One set built a turn of the loop: a change that wakes 1,000 sessions put
        # 1,000 builds (about a millisecond each) in the event loop's queue at once,
        # and every read and heartbeat arriving then waited behind all of them (a
        # second and more in a 100,000-replica apply). A session waiting for this lock
        # waits outside that queue, and a build's holder lets the loop run what came
        # meanwhile before the next build (``run``).
        self._building = asyncio.Lock()
        # Set once no host's set has changed for ``_PUSH_QUIET`` seconds.
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._changed_at = -math.inf  # monotonic: when a look last woke a session
        self._quiet_timer: asyncio.TimerHandle | None = None

    def start(self, host_id: str, outbox: SessionOutbox, held: str = "") -> HostPush:
        """Put the host's whole desired set in ``outbox`` now and whenever it changes,
        until ``stop``. ``held``: the fingerprint of the set the agent says it holds (its
        Register's), which is not sent again: in a restart's storm of reconnects,
        building and sending 5,000 sets the hosts already had (and their reconciles and
        reports) was loop time the reconnects waited for."""
        push = HostPush(host_id, outbox, held if _is_fingerprint(held) else "")
        self._hosts[host_id] = push
        self._sessions_changed += 1
        self._dispatcher = running(self._dispatcher, self._dispatch, "desired-dispatch")
        self._wake(push)  # the first set goes out at once
        return push

    def stop(self, push: HostPush) -> None:
        """The host's session ended: no more sets."""
        if push.task is not None:
            push.task.cancel()
            push.task = None
        if self._hosts.get(push.host_id) is push:
            del self._hosts[push.host_id]
            self._sessions_changed += 1

    def _wake(self, push: HostPush) -> None:
        push.owed = True
        if push.task is None:
            push.task = asyncio.create_task(self._send(push))

    async def _send(self, push: HostPush) -> None:
        """Build the host's set and put it in its outbox for as long as one is owed."""
        try:
            while push.owed:
                now = time.monotonic()
                wide = now < self._wide_until
                gap = (_PUSH_WIDE_GAP if wide else _PUSH_MIN_GAP) - (now - push.sent_at)
                if gap > 0 and wide:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(gap):  # (or until the changes stop)
                            await self._quiet.wait()
                elif gap > 0:
                    await asyncio.sleep(gap)
                push.owed = False
                # One set at a time in the outbox: changes that come while a host is
                # slow to read go out together in the next set, built once it has
                # taken this one (5,000 sessions each queueing every set of a ramp
                # held memory for sets that no longer mattered).
                await push.outbox.join()
                async with self._building:
                    push.inputs, message, push.sent = self._message(
                        push.host_id, push.inputs, push.sent
                    )
                    await asyncio.sleep(0)  # (the lock's comment)
                if message is not None:
                    await push.outbox.put(message)
                    push.sent_at = time.monotonic()
        except Exception:
            # Said where operators look, and tried again at the host's next change (a
            # task's error would otherwise surface only when it is collected, if then).
            log.exception("host %s: its desired set could not be built", push.host_id)
        finally:
            if push.task is asyncio.current_task():
                push.task = None

    def _message(self, host_id: str, inputs: object, sent: str) -> tuple[object, bytes | None, str]:
        """The host's desired set if it changed since ``sent`` (its fingerprint),
        serialized (it may wait in the outbox a while: ``outbox.Outgoing``), with what it
        was made of. A plain function, so that the state it reads is not held
        by the session while it waits: a thousand sessions each holding the snapshot
        of its last push kept a thousand copies of the tables alive (2 GiB at 100,000
        replicas)."""
        state = self._informer.state()
        # A cheap look at what the set is made of skips building it again.
        now_inputs = desired_inputs(state, host_id)
        if now_inputs == inputs:
            return inputs, None, sent
        # Told from the last set before it is built: at 1,000 hosts building every
        # host's set (100 containers each) was most of what a host loss cost here.
        placed = desired_placed(state, host_id, self._specs)
        host = state.hosts.get(host_id)
        command = host.value.command if host is not None else None
        mirror = state.registry_mirror.value.mirror if state.registry_mirror else ""
        made_of = placed_fingerprint(placed) + (command.id if command else "") + "|" + mirror
        print_ = hashlib.sha256(made_of.encode()).hexdigest()
        if print_ == sent:
            return now_inputs, None, sent
        desired = pb.DesiredSet(version=state.revision, registry_mirror=mirror, fingerprint=print_)
        build_containers(placed, into=desired.containers)
        if command is not None:
            desired.command.id, desired.command.command = command.id, command.command
        return now_inputs, pb.ServerMessage(desired=desired).SerializeToString(), print_

    async def _dispatch(self) -> None:
        """On every batch of changes, wake the sessions whose inputs changed."""
        subscription = self._informer.subscribe()
        signatures: dict[str, tuple[int, int] | None] = {}
        looked: tuple[int, int, int] | None = None  # what the last look saw
        try:
            while True:
                await subscription.wait()
                await asyncio.sleep(_PUSH_COALESCE)  # fold a burst into one look
                state = self._informer.state()
                self._on_change(state)
                changes = state.changes
                if changes is None:  # a state that does not say what changed
                    signatures.clear()
                else:
                    # No host's inputs changed and no session came or went since the
                    # last look (most changes: reports, reconnects): nothing to wake, and
                    # no need to look at every session to know it.
                    now_looking = (changes.shared, changes.host_inputs_seq, self._sessions_changed)
                    if now_looking == looked:
                        self._specs.forget_unused(state)
                        continue
                    looked = now_looking
                hosts_changed = woken = 0
                for host_id, push in list(self._hosts.items()):
                    signature = (
                        (changes.shared, changes.host_inputs.get(host_id, 0)) if changes else None
                    )
                    before = signatures.get(host_id)
                    if signature is None or before != signature:
                        signatures[host_id] = signature
                        self._wake(push)
                        woken += 1
                        if signature is not None and before is not None:
                            hosts_changed += signature[1] != before[1]  # its own replicas
                if woken:
                    self._changed()
                if hosts_changed >= _WIDE_CHANGE:
                    self._wide_until = time.monotonic() + _PUSH_WIDE_GAP
                for gone in signatures.keys() - self._hosts.keys():
                    del signatures[gone]
                self._specs.forget_unused(state)
        finally:
            self._informer.unsubscribe(subscription)

    def _changed(self) -> None:
        """A look woke sessions: not quiet until ``_PUSH_QUIET`` seconds without one."""
        self._changed_at = time.monotonic()
        self._quiet.clear()
        if self._quiet_timer is None:
            self._quiet_timer = asyncio.get_running_loop().call_later(_PUSH_QUIET, self._quiet_yet)

    def _quiet_yet(self) -> None:
        left = self._changed_at + _PUSH_QUIET - time.monotonic()
        if left > 0:
            self._quiet_timer = asyncio.get_running_loop().call_later(left, self._quiet_yet)
        else:
            self._quiet_timer = None
            self._quiet.set()

    async def close(self) -> None:
        """Stop the dispatcher (the sessions' pushes end with their sessions)."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
