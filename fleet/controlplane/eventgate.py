"""Which of the agents' events are stored: repeats coalesced, each host and each app
held to a rate, and what was held back said, with a count. Pure: time comes in as
``now``.

One agent certificate once stored 284,000 events in 10 s (etcd grew to 345 MB and
``fleet events`` failed for everyone), and a flapping health check makes two events a
second per container for as long as it flaps. So, as Kubernetes does with its events:

- **repeats coalesce**: an event like one stored in the last ``repeat_window`` seconds
  (same host, app, slot, kind and message) is counted, not stored; when the window ends
  the last of them is stored with ``count`` (how many there were), and the next window
  begins: a flapping check costs one event a window, not two a second;
- **rates**: each host, and each app across hosts, draws from a token bucket
  (``host_rate``/s with bursts of ``host_burst``; ``app_rate``/s, ``app_burst``); what
  finds it empty is dropped;
- **nothing is dropped silently**: every ``report_every`` seconds one
  ``events-dropped`` event per host says how many were dropped, and why.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from fleet._time import iso_at
from fleet.proto import fleet_pb2 as pb

__all__ = ["EventGate", "GateLimits"]

RepeatKey = tuple[str, str, int, str, str]  # host, app, slot, kind, message


@dataclass(frozen=True)
class GateLimits:
    host_rate: float = 20.0  # events a second, per host, sustained
    host_burst: float = 400.0  # a host starting 100 containers at once sends ~300
    app_rate: float = 200.0  # per app, over every host
    app_burst: float = 4000.0
    repeat_window: float = 60.0  # seconds a repeat is counted rather than stored
    report_every: float = 10.0  # seconds between notices of what was dropped
    most_repeats: int = 20_000  # distinct recent events remembered (memory bound)


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass(slots=True)
class _Repeat:
    since: float  # when this window began (its first event was stored then)
    count: int = 0  # repeats since, not stored
    # The last repeat, a copy of its own: an event of the agent's message keeps all of
    # that message alive, and the first of a run is not needed (it was stored).
    last: pb.Event | None = None

    def repeated(self, event: pb.Event) -> None:
        self.count += 1
        if self.last is None:
            self.last = pb.Event()
        self.last.CopyFrom(event)


# A run is remembered by the hash of its ``RepeatKey``, and as the time its window began
# until it repeats: a 5,000-host ramp stores about 100,000 events that never repeat, and
# the 20,000 runs remembered for a window held 7.8 MiB as key tuples (with each event's
# own copy of its message) and ``_Repeat``s, 3.8 as hashes and times. Two runs share a
# hash by chance once in 2**64; the later would then be counted as a repeat of the other.
_Run = float | _Repeat


def _since(run: _Run) -> float:
    return run.since if isinstance(run, _Repeat) else run


def _take(buckets: dict[str, _Bucket], name: str, rate: float, burst: float, now: float) -> bool:
    """A token from ``name``'s bucket (made full on first use), if it has one."""
    bucket = buckets.get(name)
    if bucket is None:
        bucket = buckets[name] = _Bucket(rate, burst, burst, now)
    return bucket.take(now)


class EventGate:
    def __init__(self, limits: GateLimits | None = None) -> None:
        self.limits = limits or GateLimits()
        self._hosts: dict[str, _Bucket] = {}
        self._apps: dict[str, _Bucket] = {}
        self._repeats: OrderedDict[int, _Run] = OrderedDict()  # by hash(RepeatKey)
        self._dropped: dict[str, dict[str, int]] = {}  # host -> why -> how many
        self._reported_at: float | None = None

    def admit(self, host: str, events: list[pb.Event], now: float) -> list[pb.Event]:
        """The events of ``host`` to store now (the others are counted)."""
        stored: list[pb.Event] = []
        for event in events:
            key: RepeatKey = (host, event.app, event.slot, event.kind, event.message)
            run_id = hash(key)
            run = self._repeats.get(run_id)
            if run is not None and now - _since(run) < self.limits.repeat_window:
                if not isinstance(run, _Repeat):
                    run = self._repeats[run_id] = _Repeat(since=run)
                run.repeated(event)
                continue
            why = self._over_rate(host, event.app, now)
            if why is not None:
                counts = self._dropped.setdefault(host, {})
                counts[why] = counts.get(why, 0) + 1
                continue
            if isinstance(run, _Repeat) and run.count:
                # A run that goes on: this one is stored with the run's count.
                event.count = run.count + 1
            self._repeats[run_id] = now
            self._repeats.move_to_end(run_id)
            stored.append(event)
        self._bound_repeats(stored)
        return stored

    def due(self, now: float) -> list[pb.Event]:
        """What is owed now: one event with its count for each run of repeats whose
        window ended, and a notice per host of what was dropped."""
        found: list[pb.Event] = []
        # Runs are kept in the order their windows began (each new window moves its
        # run to the end), so only the runs whose window ended are looked at: a walk
        # of all 20,000 after every batch of events held the server's loop in a ramp.
        renewed: list[tuple[int, _Run]] = []
        while self._repeats:
            run_id, run = next(iter(self._repeats.items()))
            if now - _since(run) < self.limits.repeat_window:
                break
            del self._repeats[run_id]
            if isinstance(run, _Repeat) and run.count:
                self._summary_into(found, run)
                # It may go on repeating: the next run is counted from now.
                renewed.append((run_id, now))
        self._repeats.update(renewed)
        if self._reported_at is None:
            self._reported_at = now
        if now - self._reported_at >= self.limits.report_every:
            found += self._drop_notices(now)
            self._reported_at = now
        return found

    def flush(self, now: float) -> list[pb.Event]:
        """Everything owed, windows ended or not: each run's repeats counted so far and
        the drop notices. For a control plane that stops: what it only counted would
        be lost with it."""
        found: list[pb.Event] = []
        for run in self._repeats.values():
            self._summary_into(found, run)
        self._repeats.clear()
        found += self._drop_notices(now)
        self._reported_at = now
        return found

    def _over_rate(self, host: str, app: str, now: float) -> str | None:
        limits = self.limits
        if not _take(self._hosts, host, limits.host_rate, limits.host_burst, now):
            return f"over the host's limit of {limits.host_rate:g} events/s"
        if app and not _take(self._apps, app, limits.app_rate, limits.app_burst, now):
            return f"over app {app}'s limit of {limits.app_rate:g} events/s"
        return None

    def _summary_into(self, found: list[pb.Event], run: _Run) -> None:
        if isinstance(run, _Repeat) and run.count and run.last is not None:
            summary = pb.Event()
            summary.CopyFrom(run.last)
            summary.count = run.count
            found.append(summary)

    def _bound_repeats(self, stored: list[pb.Event]) -> None:
        """Forget the oldest runs beyond ``most_repeats`` (owning up to their counts)."""
        while len(self._repeats) > self.limits.most_repeats:
            _, run = self._repeats.popitem(last=False)
            self._summary_into(stored, run)

    def _drop_notices(self, now: float) -> list[pb.Event]:
        notices = []
        for host, reasons in sorted(self._dropped.items()):
            total = sum(reasons.values())
            why = "; ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
            notices.append(
                pb.Event(
                    time=iso_at(now),
                    source="controlplane",
                    host=host,
                    kind="events-dropped",
                    message=(
                        f"{total} event(s) from this host dropped in the last "
                        f"{self.limits.report_every:g}s ({why})"
                    ),
                )
            )
        self._dropped.clear()
        # Buckets of hosts and apps that have been quiet long enough to be full again
        # are the same as new ones: forget them (memory stays with the active ones).
        for buckets in (self._hosts, self._apps):
            for name in [
                n for n, b in buckets.items() if (now - b.at) * b.rate + b.tokens >= b.burst
            ]:
                del buckets[name]
        return notices
