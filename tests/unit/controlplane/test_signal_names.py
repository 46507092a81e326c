"""The signals ``fleet kill --signal`` takes: names with or without SIG in any case, or
numbers, passed to Docker in one spelling; anything else refused saying what is."""

from __future__ import annotations

import pytest

from fleet.controlplane.api.signals import check_signal
from fleet.errors import InvalidArgument


@pytest.mark.parametrize(
    ("given", "sent"),
    [("HUP", "SIGHUP"), ("sighup", "SIGHUP"), ("usr1", "SIGUSR1"), ("", "SIGKILL"), ("9", "9")],
)
def test_signal_names_and_numbers(given: str, sent: str) -> None:
    assert check_signal(given) == sent


@pytest.mark.parametrize(
    ("given", "why"), [("NOPE", "not a signal name"), ("0", "1 to 64"), ("65", "1 to 64")]
)
def test_what_is_no_signal_is_refused(given: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        check_signal(given)
