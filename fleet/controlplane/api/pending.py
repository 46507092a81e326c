"""Why an app's unplaced slots are pending, as ``fleet get apps`` shows it: the leading
replica's controller knows from its last round; a follower plans the app itself, at
most every few seconds, or only says which slots wait."""

from __future__ import annotations

from collections.abc import Callable

from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.view import HostViews
from fleet.store import ClusterState

__all__ = ["PendingReasons"]

_PLAN_REUSE = 3.0  # seconds a follower reuses its plan of an app's pending slots


class PendingReasons:
    def __init__(self, views: HostViews) -> None:
        self._views = views
        # The leading replica's controller: why each unplaced slot is pending, from its
        # last round (None while this replica does not lead).
        self.leading: Callable[[], dict[str, dict[int, str]] | None] = lambda: None
        # app -> (when, why its slots are pending): a follower's own plans, reused for
        # a few seconds, since each costs a scheduling run over the app's missing slots.
        self._plans: dict[str, tuple[float, dict[int, str]]] = {}

    def of(self, state: ClusterState, app: str, now: float, *, explain: bool) -> dict[int, str]:
        """Why ``app``'s unplaced slots are pending. A follower asked about one app
        (``explain``) plans it itself, at most every few seconds; asked about all, it
        says only which slots wait, since a plan of every app at 100,000 replicas took
        seconds of the server's one thread."""
        leading = self.leading()
        if leading is not None:
            return leading.get(app, {})
        # Replicas on a host that is gone (removed) wait to move, as the leader plans.
        lost = frozenset(set(state.hosts_with_replicas()) - state.hosts.keys())
        if not explain:
            spec = state.apps[app].value.spec
            if spec.mode != "replicated":
                return {}
            placed = state.replica_slots(app)
            return {
                slot: "waiting for the leading control plane to place it"
                for slot in range(spec.replicas)
                if slot not in placed or placed[slot].value.host in lost
            }
        found = self._plans.get(app)
        if found is None or now - found[0] > _PLAN_REUSE:
            found = self._plans[app] = (
                now,
                plan_replicas(state, app, now, lost, views=self._views).pending,
            )
        for gone in self._plans.keys() - state.apps.keys():
            del self._plans[gone]
        return found[1]
