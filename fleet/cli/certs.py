"""``fleet certs``: make a CA, issue certificates from it, and show what one says.

A thin layer over ``fleet.pki``; the subject convention is in ``fleet.pki.subjects``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fleet._text import strip_control
from fleet.cli.output import fail
from fleet.errors import FleetError
from fleet.pki import issuing, subjects
from fleet.pki.files import CertPaths

__all__ = ["app"]

app = typer.Typer(
    help="Mutual TLS certificates: a CA, then server, agent and client certificates; "
    "etcd gets a CA of its own (init --etcd) for its members and the control plane.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="FLEET_PKI_DIR",
        help="The PKI directory (ca.crt, ca.key, <kind>-<name>.crt/.key). "
        "Default: $FLEET_PKI_DIR or ./.fleet/pki.",
        show_default=False,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing files.")]
_DEFAULT_DIR = Path(".fleet/pki")


def _make(files: Callable[[], CertPaths]) -> None:
    """Write a CA or certificate and print its two paths; a refusal exits 2."""
    try:
        paths = files()
    except FleetError as error:
        fail(str(error))
    typer.echo(paths.cert)
    typer.echo(paths.key)


@app.command()
def init(
    dir: DirOpt = _DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 3650,
    etcd: Annotated[
        bool,
        typer.Option(
            "--etcd",
            help="Make etcd's own CA (in a directory of its own), which signs etcd-member "
            "and etcd-client certificates only: fleet's CA must never open etcd.",
        ),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Make a new CA (ca.crt, ca.key). Refuses to replace one without --force."""
    _make(lambda: issuing.init_ca(dir, days=days, force=force, etcd=etcd))


@app.command()
def issue(
    kind: Annotated[subjects.Kind, typer.Argument(help="What the certificate is for.")],
    name: Annotated[str, typer.Argument(help="Server or client name; for an agent, its host id.")],
    dir: DirOpt = _DEFAULT_DIR,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            metavar="ADDRESS",
            help="Server address, an IP or DNS name (repeatable). "
            "Default: localhost, 127.0.0.1, ::1.",
            show_default=False,
        ),
    ] = None,
    role: Annotated[
        subjects.Role | None,
        typer.Option("--role", help="Client role (default admin).", show_default=False),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
    force: ForceOpt = False,
) -> None:
    """Issue a KIND certificate for NAME, signed by the CA in --dir."""
    _make(lambda: issuing.issue(dir, kind, name, sans=san or (), role=role, days=days, force=force))


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="A PEM certificate.")],
) -> None:
    """Print what a certificate says: subject, fleet identity, SANs, validity."""
    try:
        cert = x509.load_pem_x509_certificate(file.read_bytes())
    except OSError as error:
        fail(f"cannot read {file}: {error.strerror}")
    except ValueError:
        fail(f"{file} is not a PEM certificate")
    rows = [("subject", cert.subject.rfc4514_string()), ("issuer", cert.issuer.rfc4514_string())]
    rows += _identity_rows(cert)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        rows.append(("sans", ", ".join(str(n.value) for n in sans)))
    except x509.ExtensionNotFound:
        pass
    rows += [
        ("not before", f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("not after", f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("sha256", cert.fingerprint(hashes.SHA256()).hex(":")),
    ]
    for label, value in rows:
        # A certificate is anyone's file: its names reach the terminal without escapes.
        typer.echo(f"{label + ':':<12}{strip_control(value)}")


def _identity_rows(cert: x509.Certificate) -> list[tuple[str, str]]:
    try:
        identity = subjects.identity_from_subject(cert.subject)
    except FleetError as error:
        if _is_ca(cert):
            return [("kind", "etcd ca" if subjects.is_etcd_ca(cert) else "ca")]
        units = [a.value for a in cert.subject if a.oid == x509.NameOID.ORGANIZATIONAL_UNIT_NAME]
        etcd_kinds = {subjects.Kind.etcd_member.value, subjects.Kind.etcd_client.value}
        if len(units) == 1 and units[0] in etcd_kinds:
            names = [a.value for a in cert.subject if a.oid == x509.NameOID.COMMON_NAME]
            return [("kind", str(units[0])), ("name", str(names[0]) if names else "-")]
        return [("kind", f"- ({error})")]
    rows = [("kind", identity.kind.value), ("name", identity.name)]
    if identity.role is not None:
        rows.append(("role", identity.role.value))
    return rows


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
