"""`chartgate dev-issuer serve|token|jwks`: run the development OIDC issuer, or mint a reviewer token with its key.

`configure_parser` adds the actions to any argparse parser (the `chartgate` command's
`dev-issuer` subcommand) and `run` executes the parsed arguments; `main` does both on its own.
Heavy imports wait until `run`, so building the `chartgate` parser stays cheap.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chartgate.devissuer.defaults import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_LISTEN,
    DEFAULT_TENANT,
    MAX_LIFETIME_SECONDS,
)

if TYPE_CHECKING:
    from chartgate.devissuer.issuer import DevUser

DEFAULT_WORKDIR = Path(".chartgate")


def issuer_directory(workdir: Path) -> Path:
    """Where the dev issuer keeps its key and JWKS under a Chartgate workdir."""
    return workdir / "dev-issuer"


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _lifetime(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= MAX_LIFETIME_SECONDS:
        raise argparse.ArgumentTypeError(f"lifetime must be 1..{MAX_LIFETIME_SECONDS} seconds")
    return int(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the serve, token and jwks actions (dest `dev_issuer_action`) to `parser`."""
    sub = parser.add_subparsers(dest="dev_issuer_action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, issuer_help: str) -> None:
        p.add_argument(
            "--workdir",
            type=Path,
            default=DEFAULT_WORKDIR,
            help="Chartgate workdir; the key lives in WORKDIR/dev-issuer/ (default ./.chartgate)",
        )
        p.add_argument("--issuer", default=None, help=issuer_help)
        p.add_argument(
            "--users", type=Path, default=None, help="users JSON (default: alice, bob, carol, ...)"
        )

    s = sub.add_parser(
        "serve",
        help="serve discovery, JWKS, /authorize and /token over HTTP",
        description="Run the development OIDC issuer (a development target, not a product: "
        "anyone who reaches it can sign in as any configured user, no password).",
    )
    common(s, "the iss value and base URL (default http://LISTEN)")
    s.add_argument(
        "--listen", type=_host_port, default=DEFAULT_LISTEN, help=f"HOST:PORT ({DEFAULT_LISTEN})"
    )
    s.add_argument("--clients", type=Path, default=None, help="OAuth clients JSON")
    s.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="bind an address other than loopback (anyone who reaches it can sign in as anyone)",
    )

    t = sub.add_parser(
        "token",
        help="print a signed reviewer token",
        description="Print a reviewer JWT signed with the dev issuer's key in WORKDIR/dev-issuer/.",
    )
    common(t, f"the iss value (default {DEFAULT_ISSUER})")
    t.add_argument("--sub", required=True, help="the reviewer's subject, e.g. alice")
    t.add_argument(
        "--roles",
        action="append",
        default=None,
        help="comma-separated roles, repeatable (default: the dev user's roles, else none)",
    )
    t.add_argument(
        "--tenant",
        action="append",
        default=None,
        help=f"tenant, repeatable (default: the dev user's tenants, else {DEFAULT_TENANT})",
    )
    t.add_argument("--fhir-user", default=None, help="fhirUser (default Practitioner/SUB)")
    t.add_argument("--audience", default=DEFAULT_AUDIENCE, help=f"aud (default {DEFAULT_AUDIENCE})")
    t.add_argument("--lifetime", type=_lifetime, default=300, help="seconds (default 300)")

    j = sub.add_parser("jwks", help="print the public JWKS (for an issuer's jwks_file)")
    j.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="Chartgate workdir (./.chartgate)"
    )


def run(args: argparse.Namespace) -> int:
    """Execute parsed `dev-issuer` arguments; the exit code."""
    from chartgate.devissuer.issuer import DEFAULT_USERS, DevIssuer, load_users

    directory = issuer_directory(args.workdir)
    action: str = args.dev_issuer_action
    if action == "jwks":
        print(json.dumps(DevIssuer(directory).keys.jwks(), indent=2))
        return 0
    try:
        users = load_users(args.users) if args.users else DEFAULT_USERS
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"chartgate dev-issuer: cannot load users {args.users}: {exc}", file=sys.stderr)
        return 2
    if action == "serve":
        return _serve(args, directory, users)
    issuer = DevIssuer(directory, args.issuer or DEFAULT_ISSUER, users=users)
    user = issuer.users.get(args.sub)
    roles = (
        [r for value in args.roles for r in value.split(",") if r]
        if args.roles is not None
        else list(user.roles if user else ())
    )
    tenants = args.tenant or list(user.tenants if user else (DEFAULT_TENANT,))
    fhir_user = args.fhir_user or (user.fhir_user if user else f"Practitioner/{args.sub}")
    print(
        issuer.mint(
            args.sub,
            roles=roles,
            tenants=tenants,
            fhir_user=fhir_user,
            audience=args.audience,
            lifetime_seconds=args.lifetime,
        )
    )
    return 0


def _serve(args: argparse.Namespace, directory: Path, users: Sequence[DevUser]) -> int:
    from chartgate.devissuer.app import serve
    from chartgate.devissuer.issuer import DEFAULT_CLIENTS, DevIssuer, load_clients

    host, port = args.listen
    if not _is_loopback(host) and not args.allow_non_loopback:
        print(
            f"chartgate dev-issuer: refusing to listen on {host}: anyone who reaches it can sign "
            "in as any user (pass --allow-non-loopback to do it anyway)",
            file=sys.stderr,
        )
        return 2
    try:
        clients = load_clients(args.clients) if args.clients else DEFAULT_CLIENTS
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"chartgate dev-issuer: cannot load clients {args.clients}: {exc}", file=sys.stderr)
        return 2
    url_host = f"[{host}]" if ":" in host else host
    issuer = DevIssuer(
        directory,
        args.issuer or f"http://{url_host}:{port}",
        users=users,
        clients=clients,
    )
    serve(host, port, issuer)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m chartgate.devissuer ACTION ...`: parse and run."""
    parser = argparse.ArgumentParser(
        prog="chartgate dev-issuer",
        description="A local OpenID Connect issuer for the demo and tests "
        "(a development target, not a product: no passwords).",
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))
