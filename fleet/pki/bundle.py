"""What one machine of a pool needs, in one directory to copy there: ``fleet certs bundle``.

A server bundle is laid out as ``/etc/fleet`` (the paths deploy/ configures)::

    pki/ca.crt  pki/server.crt  pki/server.key        fleet's CA, this control plane's
    etcd/ca.crt etcd/client.crt etcd/client.key       etcd's CA, its way into etcd
    secrets.key                                        the pool's one secrets key

so every control-plane machine gets the same secrets key by the same step that gives it
its certificate. An agent bundle is ``pki/ca.crt``, ``pki/agent.crt``, ``pki/agent.key``;
an etcd member's is ``ca.crt``, ``member.crt``, ``member.key`` (for ``/etc/etcd/pki``).

Certificates are issued in the CA's directory (where ``fleet certs issue`` puts them)
when missing, broken, near expiry or lacking a SAN asked for, else reused, so running a
bundle again renews what needs it and changes nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.pki.files import CertPaths, ensure_dir, load_ca, read, write_file
from fleet.pki.local import ensure_leaves
from fleet.pki.subjects import ETCD_KINDS, Kind

__all__ = ["agent_bundle", "etcd_member_bundle", "server_bundle"]


@dataclass(frozen=True)
class _Copy:
    source: Path
    dest: str  # relative to the bundle
    private: bool = False


def server_bundle(
    out: Path,
    *,
    pki_dir: Path,
    name: str,
    sans: Sequence[str],
    secrets_key: Path,
    etcd_dir: Path | None = None,
) -> list[Path]:
    """A control plane's bundle for ``name`` in ``out``; the files written. ``sans``
    are the addresses agents and clients reach it at."""
    server = _leaf(pki_dir, Kind.server, name, sans)
    copies = [
        _Copy(CertPaths.for_ca(pki_dir).cert, "pki/ca.crt"),
        _Copy(server.cert, "pki/server.crt"),
        _Copy(server.key, "pki/server.key", private=True),
        _Copy(secrets_key, "secrets.key", private=True),
    ]
    if etcd_dir is not None:
        client = _leaf(etcd_dir, Kind.etcd_client, name, ())
        copies += [
            _Copy(CertPaths.for_ca(etcd_dir).cert, "etcd/ca.crt"),
            _Copy(client.cert, "etcd/client.crt"),
            _Copy(client.key, "etcd/client.key", private=True),
        ]
    return _write_bundle(out, copies)


def agent_bundle(out: Path, *, pki_dir: Path, host_id: str) -> list[Path]:
    """An agent's bundle for host ``host_id`` in ``out``; the files written."""
    agent = _leaf(pki_dir, Kind.agent, host_id, ())
    return _write_bundle(
        out,
        [
            _Copy(CertPaths.for_ca(pki_dir).cert, "pki/ca.crt"),
            _Copy(agent.cert, "pki/agent.crt"),
            _Copy(agent.key, "pki/agent.key", private=True),
        ],
    )


def etcd_member_bundle(out: Path, *, etcd_dir: Path, name: str, sans: Sequence[str]) -> list[Path]:
    """An etcd member's bundle (its certificate serves its client and its peer port)."""
    member = _leaf(etcd_dir, Kind.etcd_member, name, sans)
    return _write_bundle(
        out,
        [
            _Copy(CertPaths.for_ca(etcd_dir).cert, "ca.crt"),
            _Copy(member.cert, "member.crt"),
            _Copy(member.key, "member.key", private=True),
        ],
    )


def _leaf(directory: Path, kind: Kind, name: str, sans: Sequence[str]) -> CertPaths:
    """``kind``'s certificate for ``name`` in ``directory``, issued unless one that
    still does is there; the CA must exist (``fleet certs init`` makes it, on purpose)."""
    load_ca(directory)  # names the missing CA and the command that makes it
    leaves, _ = ensure_leaves(
        directory,
        [(kind, name, tuple(sans), None)],
        etcd=kind in ETCD_KINDS,
    )
    return leaves[kind]


def _write_bundle(out: Path, copies: Sequence[_Copy]) -> list[Path]:
    """Copy each file into ``out`` (keys 0600 in 0700 directories, certificates 0644)."""
    written = []
    for copy in copies:
        dest = out / copy.dest
        ensure_dir(dest.parent)
        write_file(dest, read(copy.source), 0o600 if copy.private else 0o644)
        written.append(dest)
    return written
