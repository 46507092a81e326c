"""Tests of fleet._names: the one DNS-label check, which the spec (app and secret names)
and the key layout (every name in a key) both use, against RFC 1123's grammar."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet._names import DNS_LABEL, DNS_LABEL_SCHEMA, is_dns_label
from fleet.errors import InvalidArgument
from fleet.spec import AppSpec
from fleet.store import check_name

_ALLOWED = frozenset(string.ascii_lowercase + string.digits + "-")


def rfc1123_label(s: str) -> bool:
    """The grammar in words: 1 to 63 characters of lowercase ASCII letters, digits and
    '-', starting and ending with a letter or digit."""
    return (
        1 <= len(s) <= 63 and set(s) <= _ALLOWED and not s.startswith("-") and not s.endswith("-")
    )


def test_dns_label() -> None:
    assert is_dns_label("web-1") and is_dns_label("a" * 63) and is_dns_label("0")
    for bad in ["", "Web", "-a", "a-", "a_b", "a" * 64, "web\n", "\nweb", "wéb", "a.b"]:
        assert not is_dns_label(bad)


# Text near the grammar: its own characters, some others that look alike, newlines.
_near = st.text(alphabet=st.sampled_from([*"az09-", "A", "_", ".", "\n", "é", "\x00"]), max_size=70)
_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=70), _near, _labels, _labels.map(lambda s: s + "\n")))
def test_property_is_dns_label_is_the_grammar(s: str) -> None:
    """``is_dns_label`` accepts exactly RFC 1123's labels (no trailing newline either), and
    the JSON schema's pattern says the same of text without newlines."""
    assert is_dns_label(s) == rfc1123_label(s) == (DNS_LABEL.match(s) is not None)
    if "\n" not in s:
        assert (re.search(DNS_LABEL_SCHEMA, s) is not None) == rfc1123_label(s)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_near, _labels))
def test_property_the_spec_and_the_keys_accept_the_same_names(name: str) -> None:
    """An app name is valid in a spec exactly when it may become a key."""
    try:
        check_name(name)
        key_ok = True
    except InvalidArgument:
        key_ok = False
    try:
        AppSpec.model_validate({"name": name, "image": "img"})
        spec_ok = True
    except ValueError:
        spec_ok = False
    assert key_ok == spec_ok == rfc1123_label(name)


@pytest.mark.parametrize("name", ["", "Web", "a" * 64])
def test_the_spec_and_the_keys_describe_a_dns_label_alike(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_name(name)
    with pytest.raises(ValueError) as invalid:
        AppSpec.model_validate({"name": name, "image": "img"})
    description = str(refused.value).split("expected ", 1)[1]
    assert description in str(invalid.value)
