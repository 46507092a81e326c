"""The event log's encoding of an event is what protobuf's own JSON printer makes, and
reads back as the same event."""

from __future__ import annotations

from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from fleet.proto import fleet_pb2 as pb
from fleet.store.events import _decode, _encode, _event_dict

_text = st.text(max_size=20)
_events = st.builds(
    pb.Event,
    time=_text,
    source=_text,
    host=_text,
    app=_text,
    slot=st.integers(0, 2**32 - 1),
    container_id=_text,
    kind=_text,
    message=_text,
    exit_code=st.integers(-(2**31), 2**31 - 1),
    count=st.integers(0, 2**32 - 1),
)


@given(_events)
def test_an_event_is_encoded_as_protobufs_printer_would(event: pb.Event) -> None:
    expected = json_format.MessageToDict(event)
    assert _event_dict(event) == expected
    assert list(_event_dict(event)) == list(expected)  # the same order of keys, too


@given(st.lists(_events, max_size=5))
def test_encoded_events_read_back_as_they_were(events: list[pb.Event]) -> None:
    assert _decode(_encode(events)) == events
