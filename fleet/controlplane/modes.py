"""The slots of global apps and jobs. Pure.

- **global**: one slot per ready, connected host that matches the app's constraints and
  has room; a slot stays with its host for life (never moved: it stops with the host),
  and goes when the host stops matching or is drained with ``--include-global`` (then
  only once nothing else is left there). Slot numbers are never reused in one step.
- **job**: slot i is the i-th completion. At most ``parallelism`` unfinished slots
  exist at once; a slot whose container exits 0 succeeded and is kept (stopped, with its
  logs) until ``ttl_after_finished`` after the job ends. ``backoff_limit`` failures in
  total fail the job: what still runs is stopped, and kept for its logs too.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet._time import epoch, iso_at
from fleet.controlplane.availability import Observed
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import JobRecord, JobRun, ReplicaRecord

__all__ = ["GlobalSlots", "global_slots", "job_progress", "job_slots"]

_TERMINAL = ("exited", "dead", "failed")


def _matches(state: ClusterState, spec: AppSpec, host_id: str) -> bool:
    labels = state.selectable_labels(host_id)
    return all(c.matches(labels) for c in spec.constraints)


@dataclass(frozen=True)
class GlobalSlots:
    keep: set[int]  # existing slots that stay
    new: dict[int, str]  # new slot -> the host it is for


def global_slots(
    state: ClusterState, spec: AppSpec, existing: dict[int, ReplicaRecord]
) -> GlobalSlots:
    """Which of a global app's slots stay, and which hosts get a new one."""
    global_apps = {name for name, a in state.apps.items() if a.value.spec.mode == "global"}

    def others_on(host_id: str) -> bool:
        return any(r.app not in global_apps for r, _ in state.containers_on(host_id))

    keep: set[int] = set()
    covered: set[str] = set()
    for slot, replica in sorted(existing.items()):
        host = state.hosts.get(replica.host)
        if host is None or not _matches(state, spec, replica.host) or replica.host in covered:
            continue
        drain = host.value.drain
        if (
            host.value.state in ("draining", "drained")
            and drain is not None
            and drain.include_global
            and not others_on(replica.host)
        ):
            continue  # the last thing on a host drained with --include-global
        keep.add(slot)
        covered.add(replica.host)
    free = (n for n in range(len(existing) + len(state.hosts) + 1) if n not in existing)
    new = {}
    for host_id in sorted(state.hosts):
        record = state.hosts[host_id].value
        if host_id in covered or record.state != "ready" or host_id not in state.alive:
            continue
        if _matches(state, spec, host_id):
            new[next(free)] = host_id
    return GlobalSlots(keep, new)


def job_progress(
    stored: JobRecord | None,
    app: str,
    spec: AppSpec,
    existing: dict[int, ReplicaRecord],
    observed: Observed,
    now: float,
) -> tuple[JobRecord, list[tuple[str, str]]]:
    """The job's record after what the agents report now, and events (kind, message)."""
    job = stored or JobRecord(app=app, started_at=iso_at(now))
    succeeded = dict(job.succeeded)
    failures = dict(job.failures)
    exit_codes = dict(job.exit_codes)
    for slot, replica in sorted(existing.items()):
        report = observed.report(replica.containers()[0])
        if report is None:
            continue
        ended = report.state in _TERMINAL
        if ended:
            exit_codes[slot] = report.exit_code
        if report.state == "exited" and report.exit_code == 0 and slot not in succeeded:
            succeeded[slot] = JobRun(exit_code=0, host=replica.host, finished_at=iso_at(now))
        # Each agent restart of a job container followed a failure (on-failure).
        failed = report.restarts + (1 if ended and report.exit_code != 0 else 0)
        if report.container_id and failed > failures.get(report.container_id, 0):
            failures[report.container_id] = failed
    updated = job.model_copy(
        update={"succeeded": succeeded, "failures": failures, "exit_codes": exit_codes}
    )
    events: list[tuple[str, str]] = []
    if updated.state == "running":
        if len(succeeded) >= spec.job_completions:
            message = f"{len(succeeded)} of {spec.job_completions} completion(s) succeeded"
            updated = updated.model_copy(
                update={"state": "complete", "finished_at": iso_at(now), "message": message}
            )
            events.append(("job-complete", message))
        elif updated.failure_count >= max(1, spec.job_backoff_limit):
            message = (
                f"{updated.failure_count} failure(s) reached backoff_limit "
                f"{spec.job_backoff_limit}; last exit codes {sorted(set(exit_codes.values()))}"
            )
            updated = updated.model_copy(
                update={"state": "failed", "finished_at": iso_at(now), "message": message}
            )
            events.append(("job-failed", message))
    return updated, events


def job_slots(
    job: JobRecord,
    spec: AppSpec,
    existing: dict[int, ReplicaRecord],
    observed: Observed,
    now: float,
) -> tuple[set[int], set[int], set[int], float | None]:
    """(slots wanted, slots to start now, slots to stop, when the finished containers
    expire). A slot whose container failed for good (its restart policy gave up) is
    dropped and started again as a new container while the job runs."""
    finished_at = epoch(job.finished_at)
    if job.state != "running" and finished_at is not None:
        expires = finished_at + spec.job_ttl
        if now >= expires:
            return set(), set(), set(), None
        stop = {s for s in existing if s not in job.succeeded}
        return set(existing), set(), stop, expires
    gave_up = set()
    for slot, replica in existing.items():
        report = observed.report(replica.containers()[0])
        if report is not None and slot not in job.succeeded and _gave_up(report.state, spec):
            gave_up.add(slot)
    keep = set(existing) - gave_up
    active = [s for s in keep if s not in job.succeeded]
    room = max(0, spec.job_parallelism - len(active))
    waiting = [
        i
        for i in range(spec.job_completions)
        if i not in keep and i not in job.succeeded and i not in gave_up
    ]
    start = set(waiting[:room])
    return keep | start, start, set(), None


def _gave_up(container_state: str, spec: AppSpec) -> bool:
    if container_state == "failed":
        return True  # on-failure:N used up its N
    return container_state in ("exited", "dead") and spec.restart.kind == "no"
