"""`chartgate console`: run the reviewer console. `configure_parser` adds its flags to a parser and `run` executes them.

Heavy imports (Starlette, uvicorn, gRPC) wait until `run`, so building the `chartgate` parser
stays cheap.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from console.defaults import DEFAULT_CLIENT_ID, DEFAULT_LISTEN, DEFAULT_REDIRECT_URI

# Flag destinations that override the same-named config setting when given.
_OVERRIDES = ("issuer", "client_id", "redirect_uri", "review_target", "listen", "audit_logs")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the console's flags to `parser` (the `chartgate console` subcommand, or `main`)."""
    parser.add_argument(
        "--config", type=Path, default=None, help="console JSON config (docs/console.md)"
    )
    parser.add_argument("--issuer", default=None, help="OpenID Connect issuer URL")
    parser.add_argument(
        "--client-id", dest="client_id", default=None, help=f"OAuth client id ({DEFAULT_CLIENT_ID})"
    )
    parser.add_argument(
        "--redirect-uri",
        dest="redirect_uri",
        default=None,
        help=f"this console's public callback URL ({DEFAULT_REDIRECT_URI})",
    )
    parser.add_argument(
        "--review-target",
        dest="review_target",
        default=None,
        help="HOST:PORT of a sidecar's Review API",
    )
    parser.add_argument("--listen", default=None, help=f"HOST:PORT to bind ({DEFAULT_LISTEN})")
    parser.add_argument(
        "--audit-log",
        dest="audit_logs",
        type=Path,
        action="append",
        default=None,
        help="an audit log whose index the search page reads (repeatable; docs/console.md)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the configuration from the file and flags, then serve until SIGTERM/SIGINT."""
    from pydantic import ValidationError

    from console.config import ConsoleConfig

    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None}
    try:
        config = ConsoleConfig.load(args.config, **overrides)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"chartgate console: invalid configuration: {exc}", file=sys.stderr)
        return 2
    from console.app import serve

    serve(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m console ...`: parse and run."""
    parser = argparse.ArgumentParser(
        prog="chartgate console",
        description="The reviewer console: web pages over the Review API, with OIDC sign-in.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(args)
