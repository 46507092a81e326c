"""Host labels: who sets them, and what a constraint sees of a host.

A constraint (``constraints: ["tier=secure"]``) or an upgrade walk's ``--selector``
matches a host's *selectable* labels, made of three sources of different weight:

- **admin labels**, set on the control plane (``fleet label host h1 tier=secure``,
  admin only) and stored apart from the host's registration, which its agent's session
  writes: the only labels a host cannot give itself. Anything that keeps work (and the
  secrets it carries) away from hosts selects on these.
- **agent labels**, what the host's agent claims (``fleet agent --label role=edge``),
  selectable as ``agent.role=edge``: the prefix says whose word it is. A compromised
  host claims whatever attracts work.
- **facts** its agent reports (``os``, ``arch``, ``kernel``, ...), by name and only
  those listed in ``FACTS``: as much the host's claim as its agent labels, and meant
  for what a host can run (an image's architecture), not for whom it may be trusted
  with.

Admin labels cannot take an agent label's or a fact's name, so a constraint's key says
which source it reads.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pydantic import ValidationError

from fleet._text import strip_control
from fleet.errors import FailedPrecondition, InvalidArgument
from fleet.spec import Constraint

__all__ = [
    "AGENT_PREFIX",
    "FACTS",
    "MAX_LABELS",
    "agent_claim",
    "check_admin_label",
    "edit_labels",
    "known_facts",
    "selectable",
]

AGENT_PREFIX = "agent."
# What agents report of their host (``docker info``, /etc/os-release, the boot id, the
# id Zincati gives it in FleetLock requests): the only facts stored and selectable;
# anything else an agent sends is dropped.
FACTS = frozenset(
    {
        "os",
        "os_type",
        "os_name",
        "os_version",
        "os_id",
        "arch",
        "kernel",
        "docker_version",
        "boot_id",
        "zincati_id",
        "docker_daemon",  # which Docker daemon the agent manages: see registration
    }
)
MAX_LABELS = 64  # per host and source
_MAX_VALUE = 253


def known_facts(facts: Mapping[str, str]) -> dict[str, str]:
    """``facts`` without the names fleet does not know (a host cannot pass a label off
    as a fact)."""
    return {key: value for key, value in facts.items() if key in FACTS}


def selectable(
    admin: Mapping[str, str], agent: Mapping[str, str], facts: Mapping[str, str]
) -> dict[str, str]:
    """The labels constraints match: the host's known facts, its agent's labels as
    ``agent.<key>``, and its admin labels (which no other source can shadow)."""
    labels = known_facts(facts)
    labels.update({AGENT_PREFIX + key: value for key, value in agent.items()})
    labels.update(admin)
    return labels


def agent_claim(constraint: Constraint) -> Constraint | None:
    """The same selector over the host's own claim (``role=edge`` -> ``agent.role=edge``),
    for a constraint on an admin label that a host's ``--label`` would have met before
    labels were split; None where there is no such reading (``!=``, agent labels, facts)."""
    if constraint.op == "!=" or constraint.key.startswith(AGENT_PREFIX):
        return None
    if constraint.key in FACTS:
        return None
    return constraint.model_copy(update={"key": AGENT_PREFIX + constraint.key})


def check_admin_label(key: str, value: str) -> None:
    """InvalidArgument unless ``key=value`` is a label an admin may set: one a constraint
    can select, outside the names of agent labels and facts."""
    shown = f"{key}={value}"[:80]
    if key.startswith(AGENT_PREFIX):
        raise InvalidArgument(
            f"label {shown!r}: keys starting with {AGENT_PREFIX} are what hosts claim "
            "(fleet agent --label); an admin label needs another key"
        )
    if key in FACTS:
        raise InvalidArgument(
            f"label {shown!r}: {key} is a fact its agent reports ({', '.join(sorted(FACTS))}); "
            "an admin label needs another key"
        )
    if len(value) > _MAX_VALUE or strip_control(value) != value:
        raise InvalidArgument(
            f"label {shown!r}: a value is at most {_MAX_VALUE} printable characters"
        )
    try:
        Constraint.model_validate(f"{key}={value}" if value else key)
    except ValidationError:
        raise InvalidArgument(
            f"label {shown!r}: expected KEY=VALUE with a key of letters, digits, '.', '_', "
            "'/' and '-' (starting with a letter or digit) and a value without spaces, "
            "'=' or '!'"
        ) from None


def edit_labels(
    current: Mapping[str, str],
    put: Mapping[str, str],
    remove: Collection[str],
    *,
    overwrite: bool,
    host: str,
) -> dict[str, str]:
    """``current`` with ``put`` set and ``remove`` gone, as ``kubectl label`` does: a
    label that has another value changes only with ``overwrite``; removing a label that
    is not there changes nothing."""
    both = sorted(set(put) & set(remove))
    if both:
        raise InvalidArgument(f"label {both[0]!r} is both set and removed")
    labels = dict(current)
    for key, value in put.items():
        check_admin_label(key, value)
        old = labels.get(key)
        if old is not None and old != value and not overwrite:
            raise FailedPrecondition(
                f"host {host} already has label {key}={old}; --overwrite replaces it"
            )
        labels[key] = value
    for key in remove:
        labels.pop(key, None)
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"a host takes at most {MAX_LABELS} labels, not {len(labels)}")
    return labels
