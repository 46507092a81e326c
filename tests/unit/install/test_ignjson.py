"""Data URLs and JSON as butane writes them, checked against butane's own outputs."""

from __future__ import annotations

import base64
import gzip
import json
from urllib.parse import unquote_to_bytes

from hypothesis import given
from hypothesis import strategies as st

from fleet.install.ignjson import data_url, dumps


def decode(source: str, compression: str) -> bytes:
    """What Ignition writes to disk for a data URL (the test's own reading of RFC 2397)."""
    assert source.startswith("data:")
    meta, _, payload = source[len("data:") :].partition(",")
    data = base64.b64decode(payload) if meta == ";base64" else unquote_to_bytes(payload)
    return gzip.decompress(data) if compression == "gzip" else data


def test_text_is_percent_escaped_as_butane_does() -> None:
    # Flatcar's docs show butane's output for this file (update-strategies.md).
    assert data_url(b"REBOOT_STRATEGY=etcd-lock\n") == ("data:,REBOOT_STRATEGY%3Detcd-lock%0A", "")
    # and butane's translate tests these (base/v0_4/translate_test.go)
    assert data_url(b"file contents\n") == ("data:,file%20contents%0A", "")
    assert data_url(b"tree/file") == ("data:,tree%2Ffile", "")
    # RFC 2396's unreserved marks stay as they are
    assert data_url(b"a-b_c.d!e~f*g'h(i)j") == ("data:,a-b_c.d!e~f*g'h(i)j", "")


def test_binary_is_base64_when_that_is_shorter() -> None:
    key = bytes(range(256))[:48]
    source, compression = data_url(key)
    assert source == "data:;base64," + base64.b64encode(key).decode()
    assert compression == ""


def test_compressible_contents_are_gzipped_with_gos_header() -> None:
    text = b"ETCD_PEER_CERT_FILE=/etc/etcd/pki/member.crt\n" * 20
    source, compression = data_url(text)
    assert compression == "gzip"
    # butane's gzip header (docs/upgrading-openshift.md): no mtime, XFL 2, OS 255
    assert source.startswith("data:;base64,H4sIAAAAAAAC/")
    assert decode(source, compression) == text
    # without auto-compression (butane's NoResourceAutoCompression) it is escaped text
    plain, none = data_url(text, compress=False)
    assert none == "" and plain.startswith("data:,ETCD_PEER_CERT_FILE%3D")


def test_the_same_contents_give_the_same_url() -> None:
    text = b"x" * 500
    assert data_url(text) == data_url(text)


@given(st.binary(max_size=2000), st.booleans())
def test_every_url_decodes_to_its_contents(contents: bytes, compress: bool) -> None:
    source, compression = data_url(contents, compress=compress)
    assert decode(source, compression) == contents
    # the shortest of the encodings is chosen
    escaped = len(data_url(contents, compress=False)[0])
    assert len(source) + len(compression) <= escaped


def test_json_escapes_html_characters_as_go_does() -> None:
    config = {"systemd": {"units": [{"contents": "a && b > c < d\u2028", "name": "x.service"}]}}
    compact = dumps(config, pretty=False)
    assert compact == (
        '{"systemd":{"units":[{"contents":"a \\u0026\\u0026 b \\u003e c \\u003c d\\u2028",'
        '"name":"x.service"}]}}\n'
    )
    assert json.loads(compact) == config
    pretty = dumps(config, pretty=True)
    assert pretty.startswith('{\n  "systemd": {\n    "units": [\n      {\n')
    assert json.loads(pretty) == config
