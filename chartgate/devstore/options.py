"""Command-line options of the store shared by `python -m chartgate.devstore` and `chartgate fhir-store`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """The fault, auth and vendor options, shared with `chartgate fhir-store`."""
    parser.add_argument(
        "--faults",
        type=Path,
        default=None,
        metavar="FILE",
        help="inject faults from this FaultPlan JSON (docs/devstore-faults.md)",
    )
    parser.add_argument(
        "--allow-fault-control",
        action="store_true",
        help="serve /_faults and /_auth/* to loopback clients (tests and the demo only)",
    )
    parser.add_argument(
        "--clients",
        type=Path,
        default=None,
        metavar="FILE",
        help="SMART Backend Services clients JSON: turns the token endpoint and bearer checks on "
        "(docs/smart.md); without it every interaction is open",
    )
    parser.add_argument(
        "--behave-like",
        default=None,
        metavar="VENDOR",
        help="refuse what this vendor profile (adapters/vendors/profiles, docs/adapters.md) "
        "refuses: its writes, conditional create, required content; default: plain FHIR R4",
    )
