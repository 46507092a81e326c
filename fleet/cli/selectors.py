"""``-l`` label selectors, as kubectl reads them: ``k=v``, ``k!=v``, ``k`` (exists),
terms joined by commas must all hold. The CLI filters what the API lists with them.

Each term is a ``Constraint`` (the app file's host selector), so ``-l`` and
``constraints:`` read the same words. Apps match their own ``labels``; hosts the labels
a constraint sees (``fleet.hostlabels.selectable``: admin labels, ``agent.<key>``,
known facts); containers their app's labels.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Annotated

import typer
from pydantic import ValidationError

from fleet.cli.output import fail
from fleet.client import FleetClient
from fleet.hostlabels import selectable
from fleet.proto import fleet_pb2 as pb
from fleet.spec import Constraint

__all__ = [
    "Selector",
    "SelectorOpt",
    "app_labels",
    "host_labels",
    "parse_selector",
    "select_apps",
    "select_containers",
    "select_hosts",
    "selected_app_names",
]

SelectorOpt = Annotated[
    str,
    typer.Option(
        "--selector",
        "-l",
        help="Only those with these labels: k=v, k!=v or k (has it); commas for AND.",
        show_default=False,
    ),
]


class Selector:
    """The terms of one ``-l`` value; an empty selector matches everything."""

    def __init__(self, terms: list[Constraint], text: str) -> None:
        self.terms = terms
        self.text = text

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(term.matches(labels) for term in self.terms)

    def __str__(self) -> str:
        return self.text


def parse_selector(text: str) -> Selector:
    """``text`` as a selector; a bad term fails the command (exit 2), saying which."""
    terms = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            terms.append(Constraint.model_validate(part))
        except ValidationError:
            fail(
                f"-l {text!r}: bad term {part!r}: expected KEY=VALUE, KEY!=VALUE or KEY "
                "(the label exists), joined by commas, e.g. -l tier=web,env!=dev"
            )
    return Selector(terms, text)


def app_labels(app: pb.AppInfo) -> dict[str, str]:
    """The labels an app file gave the app (and so its containers)."""
    labels = json.loads(app.spec_json).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def host_labels(host: pb.HostInfo) -> dict[str, str]:
    """A host's labels as a constraint sees them."""
    return selectable(host.labels, host.agent_labels, host.facts)


def select_apps(apps: Iterable[pb.AppInfo], selector: Selector) -> list[pb.AppInfo]:
    return [a for a in apps if selector.matches(app_labels(a))]


def select_hosts(hosts: Iterable[pb.HostInfo], selector: Selector) -> list[pb.HostInfo]:
    return [h for h in hosts if selector.matches(host_labels(h))]


def selected_app_names(apps: Iterable[pb.AppInfo], selector: Selector) -> set[str]:
    return {a.name for a in select_apps(apps, selector)}


def select_containers(
    client: FleetClient, selector: Selector, *, app: str = "", host: str = ""
) -> list[pb.ContainerInfo]:
    """The containers ``client`` lists (of ``app``, on ``host``), those of the apps
    ``selector`` matches when it is given."""
    containers = client.containers(app=app, host=host)
    if not selector:
        return containers
    names = selected_app_names(client.apps(), selector)
    return [c for c in containers if c.app in names]
