"""``Written``: a record is taken once, only for the bytes it was dumped into; a newer
write of a key replaces an older one; a failed write is dropped; it holds at most
``most`` records, letting the oldest go."""

from __future__ import annotations

import sys

from fleet.store.written import Written


def test_a_record_is_taken_once_for_its_own_bytes() -> None:
    written = Written()
    record = object()
    written.hold(b"k", b"v1", record)
    assert written.take(b"k", b"other") is None  # other bytes: decoded, it stays held
    assert written.take(b"other-key", b"v1") is None
    assert written.take(b"k", b"v1") is record
    assert written.take(b"k", b"v1") is None  # once
    assert len(written) == 0


def test_a_newer_write_of_a_key_replaces_the_older_and_outlives_its_event() -> None:
    written = Written()
    older, newer = object(), object()
    written.hold(b"k", b"v1", older)
    written.hold(b"k", b"v2", newer)
    assert written.take(b"k", b"v1") is None  # the older write's event: decoded
    assert written.take(b"k", b"v2") is newer


def test_a_failed_write_is_dropped_but_not_a_newer_one() -> None:
    written = Written()
    written.hold(b"a", b"v1", object())
    written.drop(b"a", b"v1")
    assert len(written) == 0
    newer = object()
    written.hold(b"b", b"v2", newer)
    written.drop(b"b", b"v1")  # an older write of b failed: b's newer one stays
    assert written.take(b"b", b"v2") is newer


def test_it_holds_at_most_most_records_letting_the_oldest_go() -> None:
    written = Written(most=3)
    records = [object() for _ in range(5)]
    for n, record in enumerate(records):
        written.hold(f"k{n}".encode(), b"v", record)
    assert len(written) == 3
    assert written.take(b"k0", b"v") is None
    assert written.take(b"k1", b"v") is None
    assert [written.take(f"k{n}".encode(), b"v") for n in (2, 3, 4)] == records[2:]
    # A key written again goes last: it is not the next one let go.
    written.hold(b"a", b"v", 1)
    written.hold(b"b", b"v", 2)
    written.hold(b"a", b"v2", 3)
    written.hold(b"c", b"v", 4)
    written.hold(b"d", b"v", 5)
    assert written.take(b"b", b"v") is None
    assert written.take(b"a", b"v2") == 3


def test_it_keeps_the_record_not_the_bytes_it_was_dumped_into() -> None:
    # In a ramp the watch falls tens of thousands of reports behind the writes: their
    # bytes go with their transactions, and the watch's copy is matched by its digest.
    written = Written()
    value = bytes(400)
    before = sys.getrefcount(value)
    written.hold(b"k", value, "record")
    assert sys.getrefcount(value) == before
    assert written.take(b"k", bytes(400)) == "record"  # equal bytes, another object


def test_it_holds_neither_the_key_nor_a_table_grown_by_a_ramp_once_emptied() -> None:
    # A report's key is 90 bytes, and a ramp holds up to 50,000 records while the watch
    # is behind: the table a dict grew to stays at its largest until it is cleared.
    written = Written()
    key = b"/fleet/reports/h1/web/000000/0000000001"
    before = sys.getrefcount(key)
    written.hold(key, b"v", "record")
    assert sys.getrefcount(key) == before
    for i in range(10_000):
        written.hold(b"k%d" % i, b"v", i)
    grown = sys.getsizeof(written._held)
    assert [written.take(b"k%d" % i, b"v") for i in range(10_000)] == list(range(10_000))
    assert written.take(key, b"v") == "record"
    assert sys.getsizeof(written._held) < grown / 100


def test_a_listed_state_lets_everything_go() -> None:
    """The informer listed again: nothing held will be shown by the watch."""
    written = Written()
    written.hold(b"k", b"v1", object())
    written.clear()
    assert len(written) == 0 and written.take(b"k", b"v1") is None
