"""What Docker does when a container exits: its restart policy, written as for ``docker run``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from fleet.spec._fields import Model
from fleet.spec._quote import show as _show

__all__ = ["RestartPolicy"]


class RestartPolicy(Model):
    """Docker's restart policy: ``no``, ``always``, ``on-failure`` or ``on-failure:N``."""

    kind: Literal["no", "always", "on-failure"] = "always"
    max_retries: int | None = Field(default=None, ge=0, description="only with on-failure")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, dict | RestartPolicy):
            return data
        if not isinstance(data, str):
            raise ValueError(f"expected no, always, on-failure or on-failure:N, got {_show(data)}")
        kind, colon, retries = data.strip().partition(":")
        if kind not in ("no", "always", "on-failure") or (colon and kind != "on-failure"):
            raise ValueError(f"expected no, always, on-failure or on-failure:N, got {_show(data)}")
        if not colon:
            return {"kind": kind}
        if not retries.isascii() or not retries.isdigit():
            raise ValueError(f"expected on-failure:N with N a whole number >= 0, got {_show(data)}")
        return {"kind": kind, "max_retries": int(retries)}

    @model_validator(mode="after")
    def _retries_only_on_failure(self) -> Self:
        if self.max_retries is not None and self.kind != "on-failure":
            raise ValueError(f"max_retries applies only to on-failure, not {self.kind}")
        return self

    def __str__(self) -> str:
        return self.kind if self.max_retries is None else f"{self.kind}:{self.max_retries}"
