"""`python -m chartgate.devstore`: run the local FHIR R4 store (a development target) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from chartgate.devstore.app import serve
from chartgate.devstore.options import add_store_options


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chartgate.devstore",
        description="Local FHIR R4 store for development and tests; base URL http://HOST:PORT/fhir",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file (created if missing)")
    parser.add_argument("--base-path", default="/fhir", help="URL path of the base (default /fhir)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    add_store_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        serve(
            args.host,
            args.port,
            args.db,
            args.base_path,
            faults=args.faults,
            allow_fault_control=args.allow_fault_control,
            clients=args.clients,
            behave_like=args.behave_like,
        )
    except ValueError as exc:  # a bad --faults or --clients file or --behave-like, named
        print(f"chartgate fhir-store: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
