"""Where an app may run: host label selectors (``k=v``, ``k!=v``, ``k``) and how a host's
labels meet them. Which labels a host has, and who sets them, is ``fleet.hostlabels``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import model_validator

from fleet.spec._fields import Model, schema
from fleet.spec._quote import show as _show

__all__ = ["LABEL_KEY", "Constraint", "ConstraintItem"]

# A label key, of a host or of a container.
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SELECTOR_VALUE = re.compile(r"[^\s=!]+")
_SELECTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*((!=|=)[^\s=!]+)?$"


class Constraint(Model):
    """A host label selector: ``k=v`` (equal), ``k!=v`` (absent or different) or ``k`` (exists)."""

    key: str
    op: Literal["=", "!=", "exists"]
    value: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, dict | Constraint):
            return data
        if not isinstance(data, str):
            raise ValueError(_selector_message(data))
        text = data.strip()
        for op in ("!=", "="):  # "!=" first: "k!=v" also contains "="
            if op in text:
                key, _, value = text.partition(op)
                parsed = {"key": key.strip(), "op": op, "value": value.strip()}
                break
        else:
            parsed = {"key": text, "op": "exists", "value": ""}
        if _selector_problem(**parsed):
            raise ValueError(_selector_message(data))
        return parsed

    @model_validator(mode="after")
    def _check(self) -> Self:
        if _selector_problem(self.key, self.op, self.value):
            raise ValueError(_selector_message(str(self)))
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a host with ``labels`` satisfies this selector."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value  # like Kubernetes: a missing label matches

    def __str__(self) -> str:
        return self.key if self.op == "exists" else f"{self.key}{self.op}{self.value}"


def _selector_problem(key: str, op: str, value: str) -> bool:
    if LABEL_KEY.fullmatch(key) is None or len(key) > 253:
        return True
    return (value != "") if op == "exists" else (_SELECTOR_VALUE.fullmatch(value) is None)


def _selector_message(text: object) -> str:
    return (
        "expected a host label selector KEY=VALUE, KEY!=VALUE or KEY (the label exists), "
        f"e.g. role=edge, got {_show(text)}"
    )


# An entry of an app's ``constraints``, as users write it.
ConstraintItem = Annotated[Constraint, schema(type="string", pattern=_SELECTOR_PATTERN)]
