"""``fleet certs``: make a CA, issue certificates from it, show what one says, and write
the bundle of files one machine of a pool needs (``bundle``).

A thin layer over ``fleet.pki``; the subject convention is in ``fleet.pki.subjects``,
what a bundle holds in ``fleet.pki.bundle``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fleet._text import strip_control
from fleet.cli.output import fail
from fleet.contexts import Context, Contexts
from fleet.errors import FleetError
from fleet.pki import bundle as bundles
from fleet.pki import issuing, subjects
from fleet.pki.files import CertPaths, load_ca
from fleet.transport import default_pki_dirs

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
        "Default: $FLEET_PKI_DIR, else pki/ beside the CLI's config file "
        "(~/.config/fleet/pki), where the CLI finds its certificate by itself.",
        show_default=False,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing files.")]
_DEFAULT_DIR = default_pki_dirs()[0]


def _make(files: Callable[[], CertPaths]) -> CertPaths:
    """Write a CA or certificate and print its two paths; a refusal exits 2."""
    try:
        paths = files()
    except FleetError as error:
        fail(str(error))
    typer.echo(paths.cert)
    typer.echo(paths.key)
    return paths


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
    """Make a new CA (ca.crt, ca.key). Refuses to replace one without --force.

    Examples:
      fleet certs init                    # fleet's CA in ~/.config/fleet/pki
      fleet certs init --etcd --dir etcd-pki"""
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
    context: Annotated[
        str,
        typer.Option(
            "--save-context",
            metavar="CONTEXT",
            help="client only: save a CLI context of this name that connects to --server "
            "with this certificate (`fleet context use CONTEXT` then makes it current).",
            show_default=False,
        ),
    ] = "",
    server: Annotated[
        str,
        typer.Option(
            "--server",
            help="With --save-context: the control plane's address(es), HOST:PORT[,...].",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Issue a KIND certificate for NAME, signed by the CA in --dir; for a client, save a
    context that uses it if asked (as `docker context create` and kubeconfig entries).

    Examples:
      fleet certs issue server cp1 --san cp1.example.com --san 10.0.0.5
      fleet certs issue agent h1
      fleet certs issue client ci --role deployer
      fleet certs issue client ann --save-context prod --server cp1.example:7400"""
    if context and kind is not subjects.Kind.client:
        fail("--save-context is for client certificates (the CLI's)")
    if context and not server:
        fail("--save-context needs --server: the address the context connects to")
    if server and not context:
        fail("--server only says where a saved context connects: give --save-context too")
    if context:
        try:
            Contexts.load().check_name(context)
        except FleetError as error:
            fail(str(error))
    paths = _make(
        lambda: issuing.issue(dir, kind, name, sans=san or (), role=role, days=days, force=force)
    )
    if context:
        _save_context(context, server, dir, paths)


def _save_context(name: str, server: str, directory: Path, paths: CertPaths) -> None:
    contexts = Contexts.load()
    contexts.put(
        Context(
            name=name,
            server=server,
            tls_ca=str((directory / "ca.crt").resolve()),
            tls_cert=str(paths.cert.resolve()),
            tls_key=str(paths.key.resolve()),
        )
    )
    contexts.current = contexts.current or name
    contexts.save()
    now = "the current one" if contexts.current == name else f"use it: fleet context use {name}"
    typer.echo(f"context {name} saved ({contexts.path}); {now}", err=True)


class BundleKind(StrEnum):
    server = "server"
    agent = "agent"
    etcd_member = "etcd-member"


SECRETS_KEY_NAME = "secrets.key"  # the pool's secrets key, kept beside fleet's CA


@app.command()
def bundle(
    kind: Annotated[BundleKind, typer.Argument(help="Whose machine the bundle is for.")],
    name: Annotated[str, typer.Argument(help="The control plane's name, or the host id.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Where to write it (copy it to /etc/fleet on the machine)."
        ),
    ],
    dir: DirOpt = _DEFAULT_DIR,
    etcd_dir: Annotated[
        Path | None,
        typer.Option(
            "--etcd-dir",
            help="etcd's own CA (fleet certs init --etcd): a server bundle gets an etcd "
            "client certificate from it; an etcd-member bundle is made from it alone.",
        ),
    ] = None,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            metavar="ADDRESS",
            help="The machine's address, an IP or DNS name (repeatable): a server's "
            "certificate must name every address agents and clients use.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write what one machine needs into --out, laid out as /etc/fleet.

    server: fleet's CA, a server certificate for NAME, an etcd client certificate
    (--etcd-dir) and the pool's secrets key, made once as secrets.key beside the CA in
    --dir: every control-plane replica must hold that same key, and each bundle carries
    it. agent: fleet's CA and an agent certificate for host NAME. etcd-member: etcd's
    CA and a member certificate for its client and peer ports (for /etc/etcd/pki).
    Certificates are issued in --dir (or --etcd-dir) when missing or stale, else reused.

    Examples:
      fleet certs bundle agent h1 --out h1-bundle
      fleet certs bundle server cp1 --san 10.0.0.5 --out cp1-bundle"""
    from fleet.secrets import ensure_key_file

    try:
        if kind is BundleKind.server:
            if not san:
                fail("a server bundle needs --san: the addresses agents and clients reach it at")
            load_ca(dir)  # no key is made beside a CA that is not there
            key = ensure_key_file(dir / SECRETS_KEY_NAME)
            written = bundles.server_bundle(
                out, pki_dir=dir, name=name, sans=san, secrets_key=key, etcd_dir=etcd_dir
            )
        elif kind is BundleKind.agent:
            written = bundles.agent_bundle(out, pki_dir=dir, host_id=name)
        else:
            if etcd_dir is None or not san:
                fail("an etcd-member bundle needs --etcd-dir (etcd's CA) and the member's --san")
            written = bundles.etcd_member_bundle(out, etcd_dir=etcd_dir, name=name, sans=san)
    except FleetError as error:
        fail(str(error))
    for path in written:
        typer.echo(path)


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="A PEM certificate.")],
) -> None:
    """Print what a certificate says: subject, fleet identity, SANs, validity.

    Examples:
      fleet certs show"""
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
