"""Why a connection to the control plane was refused, in words a user can act on.

gRPC reports a refused TLS handshake as UNAVAILABLE, as it does a server that is not
running; only the status details tell them apart. What they say (grpcio 1.85, whose
BoringSSL speaks TLS 1.3; each case tried against a real server):

- we refused the server's certificate, with OpenSSL's reason: ``...: Tls handshake
  failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:
  OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate:
  OK`` (or ``certificate has expired``, ``certificate is not yet valid``);
- its certificate does not name the address dialled: ``...: Custom verification check
  failed with error: UNAUTHENTICATED: Hostname Verification Check failed.``;
- the server speaks plaintext: ``... WRONG_VERSION_NUMBER ...``;
- the server refused ours, whatever the reason (another CA, expired, not yet valid, no
  certificate, a server's certificate), or we sent plaintext to its TLS port: ``failed
  to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:7400: Socket
  closed``. In TLS 1.3 the client has done its part of the handshake when the server
  checks the client's certificate: it sees the connection close, never the alert.

So the server's refusals are diagnosed here from our own files (dates, issuer, usage),
and a certificate that cannot pass now is refused before connecting
(``check_certificate``), as is a key that is not the certificate's (``check_key``, also
before serving). The server's alerts (``tlsv1 alert unknown ca``, ``sslv3 alert
bad certificate``) are read too, should a peer ever report one; grpcio 1.85 did not.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.errors import InvalidArgument, PermissionDenied
from fleet.pki.pem import issued_by, parse_cert, parse_key, same_key

if TYPE_CHECKING:  # transport imports this module
    from fleet.transport import TlsFiles, Transport

__all__ = ["agent_refused", "check_certificate", "check_key", "explain_refusal", "stream_trouble"]

_FAILED_TO_CONNECT = "failed to connect to all addresses"
_CLOSED = "Socket closed"
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)")
_HOSTNAME = "Hostname Verification Check failed"
_PLAINTEXT = "WRONG_VERSION_NUMBER"
_HANDSHAKE = re.compile(r"(?:tls|ssl) handshake failed[^:]*: (.*)", re.IGNORECASE)
_ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13)[ _]alert[ _]([a-z_ ]*[a-z])", re.IGNORECASE)
# OpenSSL's verify reasons that mean "not signed by a CA we trust".
_UNTRUSTED = (
    "unable to get local issuer certificate",
    "unable to get issuer certificate",
    "self signed certificate",
    "self-signed certificate",
    "certificate signature failure",
)
_TRUST_FLAGS = "--tls-ca, FLEET_TLS_CA or ca.crt in FLEET_PKI_DIR"
_KINDS = ("server", "agent", "client")
_ROLE = "role:"


# ------------------------------------------------------------------ before connecting


def check_certificate(files: TlsFiles, cert_pem: bytes, now: datetime) -> None:
    """InvalidArgument if our own certificate cannot pass any handshake at ``now``: not
    PEM, expired or not yet valid. (Its issuer is not checked here: while a CA is being
    replaced, a server may trust a CA its clients do not.)"""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise InvalidArgument(f"{files.cert}{_origin(files)} is not a PEM certificate") from None
    problem = _dates(cert, now)
    if problem is not None:
        raise InvalidArgument(
            f"the certificate {files.cert}{_origin(files)} {problem}, so the server would "
            f"refuse it: {_reissue(cert, files.cert)}"
        )


def check_key(files: TlsFiles, cert_pem: bytes, key_pem: bytes) -> None:
    """InvalidArgument if the key is not the certificate's: no handshake can pass with
    such a pair, and gRPC would say only that it failed (or, for a server, that it could
    not bind its port)."""
    cert = parse_cert(cert_pem, f"{files.cert}{_origin(files)}")
    key = parse_key(key_pem, f"the TLS key {files.key}{_origin(files)}")
    if not same_key(cert, key):
        raise InvalidArgument(
            f"the TLS key {files.key} is not the key of the certificate {files.cert}"
            f"{_origin(files)}: a certificate works only with the key it was issued for; "
            f"give the key written beside it, or {_reissue(cert, files.cert)}"
        )


# ------------------------------------------------------------------ after a failure


def explain_refusal(details: str, transport: Transport, server: str, now: datetime) -> str | None:
    """What was refused, by whom and why, when ``details`` (of an UNAVAILABLE status from
    ``server``) tell of a failed TLS handshake; None when they do not (the server is down
    or unreachable)."""
    failed = f"the TLS handshake with {server} failed"
    if _HOSTNAME in details:
        host = server.rpartition(":")[0].strip("[]")
        return (
            f"{failed}: we refused the server's certificate: it does not name {host}, the "
            f"address we connected to; connect by a name it holds, or issue it again with "
            f"`--san {host}`{_used(transport)}"
        )
    verify = _VERIFY_FAILED.search(details)
    if verify is not None:
        reason = verify.group(1).strip()
        return (
            f"{failed}: we refused the server's certificate: "
            f"{_server_problem(reason, transport)}{_used(transport)}"
        )
    if _PLAINTEXT in details:
        return (
            f"{failed}: the server does not speak TLS (was it started with --insecure?); "
            "only a client given --insecure talks to such a server"
        )
    alert = _ALERT.search(details)
    if alert is not None:
        reason = alert.group(1).replace("_", " ").lower()
        return (
            f"{failed}: the server refused our certificate ({reason}): "
            f"{_our_problem(transport, now)}{_used(transport)}"
        )
    if _CLOSED in details and _FAILED_TO_CONNECT in details:
        return _closed(server, transport, now)
    handshake = _HANDSHAKE.search(details)
    if handshake is not None:
        return f"{failed}: {handshake.group(1)}{_used(transport)}"
    return None


def stream_trouble(server: str, details: str, *, was_open: bool) -> str:
    """What went wrong with the stream to ``server``, for an agent's log: gRPC's own
    words ("Socket closed", "Internal error from Core") say little by themselves."""
    if was_open:
        return f"the stream to control plane {server} broke ({details})"
    if _FAILED_TO_CONNECT in details:
        return (
            f"cannot reach control plane {server} ({details}); "
            "is `fleet server` running there, and the address right (--server)?"
        )
    return f"control plane {server}: {details}"


def _closed(server: str, transport: Transport, now: datetime) -> str:
    """The server closed the connection while it was being set up."""
    if transport.insecure:
        return (
            f"the server at {server} closed the connection at once: it most likely serves "
            "TLS (it was not started with --insecure); connect with a client certificate "
            "(--tls-ca/--tls-cert/--tls-key) instead of --insecure"
        )
    if transport.tls is None:
        return (
            f"the server at {server} closed the connection during the TLS handshake: this "
            "port asks for a client certificate, which a token does not replace; send "
            "tokens to the port of the server's --token-listen"
        )
    return (
        f"the TLS handshake with {server} failed: the server refused our certificate (it "
        f"closed the connection when it saw it): {_our_problem(transport, now)}"
        f"{_used(transport)}"
    )


def _server_problem(reason: str, transport: Transport) -> str:
    """Why we did not accept the server's certificate, from OpenSSL's ``reason``."""
    if reason.startswith(_UNTRUSTED):
        return (
            f"it is not signed by the CA we trust, {_trusted(transport)} ({reason}); give "
            f"the CA that signed the server's certificate: {_TRUST_FLAGS}"
        )
    if reason == "certificate has expired":
        return (
            "it has expired: issue the server a new one (`fleet certs issue server NAME "
            "--force`) and restart it"
        )
    if reason == "certificate is not yet valid":
        return (
            "it is not valid yet: the clock of this machine, or of the one that issued it, is wrong"
        )
    if reason == "unsupported certificate purpose":
        return "it is not a server certificate (its extended key usage does not allow serverAuth)"
    return reason


def _our_problem(transport: Transport, now: datetime) -> str:
    """The likely reason the server refused our certificate, from our own files."""
    files = transport.tls
    if files is None:
        return "we presented no client certificate"
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        cas = x509.load_pem_x509_certificates(files.ca.read_bytes())
    except (OSError, ValueError):
        return (
            "likely causes: it is signed by a CA the server does not trust, expired, or "
            "not a client certificate"
        )
    dates = _dates(cert, now)
    if dates is not None:
        return f"{files.cert} {dates}: {_reissue(cert, files.cert)}"
    if not _may_connect(cert):
        return (
            f"{files.cert} is not a client certificate (its extended key usage does not "
            "allow clientAuth): use a client or agent certificate (`fleet certs issue "
            "client NAME`)"
        )
    if not any(issued_by(cert, ca) for ca in cas):
        return (
            f"{files.cert} is not signed by the CA in {files.ca}, which signed the "
            "server's certificate (we checked it); the server most likely trusts that CA "
            "only: use a certificate it issued (`fleet certs issue client NAME --dir DIR`)"
        )
    until = cert.not_valid_after_utc
    return (
        f"{files.cert} is signed by the CA in {files.ca} and valid until "
        f"{until:%Y-%m-%d %H:%M} UTC by this machine's clock; the server may trust another "
        "CA (its --tls-ca) or its clock may disagree; its log says which (gRPC's "
        "'Handshake failed with error')"
    )


# ------------------------------------------------------------------ agents


def agent_refused(
    host_id: str, server: str, details: str, files: TlsFiles | None
) -> PermissionDenied:
    """The error an agent stops with when the control plane refuses who it is: retrying
    cannot change a certificate."""
    said = f"the control plane at {server} refused this agent ({details})"
    named = _agent_named(files.cert) if files is not None else None
    if files is not None and named is not None and named != host_id:
        return PermissionDenied(
            f"{said}: its certificate {files.cert} names host {named!r}, the agent was "
            f"started as --host-id {host_id!r}; fix --host-id, or issue a certificate for "
            f"{host_id!r} (`fleet certs issue agent {host_id}`)"
        )
    shown = f" {files.cert}" if files is not None else ""
    if "was removed from the pool" in details:
        # Its certificate is denied: the details say by whom, when and how to rejoin.
        return PermissionDenied(f"{said}; the certificate it presented:{shown or ' (none)'}")
    return PermissionDenied(
        f"{said}; fix the agent's certificate{shown} or --host-id and start it again"
    )


# ------------------------------------------------------------------ helpers


def _origin(files: TlsFiles) -> str:
    return f" (from {files.origin})" if files.origin else ""


def _used(transport: Transport) -> str:
    """Which files the connection used, and where their names came from."""
    files = transport.tls
    if files is None:
        return f"; CA used: {transport.token_ca}" if transport.token_ca else ""
    origin = f", from {files.origin}" if files.origin else ""
    return f"; files used: CA {files.ca}, certificate {files.cert}{origin}"


def _trusted(transport: Transport) -> str:
    if transport.tls is not None:
        return f"the one in {transport.tls.ca}"
    if transport.token_ca is not None:
        return f"the one in {transport.token_ca}"
    return "this machine's CAs"


def _dates(cert: x509.Certificate, now: datetime) -> str | None:
    """What is wrong with ``cert``'s validity at ``now``, if anything."""
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if now < cert.not_valid_before_utc:
        return (
            f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this "
            "machine's clock right?)"
        )
    return None


def _subject(cert: x509.Certificate) -> tuple[str | None, str | None, str | None]:
    """(kind, name, role) under fleet's subject convention (``fleet.pki.subjects``), else
    Nones."""
    units = [
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    kinds = [u for u in units if u in _KINDS]
    roles = [u.removeprefix(_ROLE) for u in units if u.startswith(_ROLE)]
    return (
        kinds[0] if len(kinds) == 1 else None,
        names[0] if len(names) == 1 else None,
        roles[0] if len(roles) == 1 else None,
    )


def _agent_named(path: Path) -> str | None:
    """The host id an agent certificate names, if ``path`` holds one."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    kind, name, _ = _subject(cert)
    return name if kind == "agent" else None


def _reissue(cert: x509.Certificate, path: Path) -> str:
    """How to get a new certificate like ``cert``."""
    kind, name, role = _subject(cert)
    if kind is None or name is None:
        return "issue a new one from its CA"
    flags = f" --role {role}" if kind == "client" and role else ""
    return (
        f"issue a new one with `fleet certs issue {kind} {name}{flags} --dir {path.parent} --force`"
    )


def _may_connect(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s extended key usage (if it has one) allows a client."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage
