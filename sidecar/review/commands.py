"""`chartgate review list|show|approve|reject|amend`: the Review API from a terminal, one JSON object per line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from sidecar.review.client import REJECTION_CODES, ReviewClient, ReviewRefused

TOKEN_ENV = "CHARTGATE_REVIEW_TOKEN"  # noqa: S105 - the name of a variable, not a secret


def add_connection_options(a: argparse.ArgumentParser) -> None:
    """--target and --token-file, shared by `review` and `deadletter`."""
    a.add_argument("--target", required=True, help="HOST:PORT of a sidecar's Review API")
    a.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help=f"file holding the bearer token (default: ${TOKEN_ENV})",
    )


def add_review_parser(sub: Any) -> None:
    """The `review` subcommand and its actions (wired by chartgate/cli.py)."""
    p = sub.add_parser("review", help="decide held proposals through the Review API")
    actions = p.add_subparsers(dest="review_command", required=True, metavar="ACTION")

    common = add_connection_options

    a = actions.add_parser("list", help="pending proposals of the reviewer's tenants")
    common(a)
    a.add_argument("--tenant", default="", help="one of the reviewer's tenants")
    a.add_argument("--tier", choices=["approval", "dual_approval"], default=None)
    a.add_argument("--patient", default="", help="a patient id")
    a.add_argument("--resource-type", default="", help="e.g. Observation")
    a.add_argument("--min-age", type=int, default=0, help="held at least this many seconds")
    a.add_argument("--limit", type=int, default=50)
    a = actions.add_parser(
        "mismatches",
        help="written resources the EHR stored differently than intended, with the differences",
    )
    common(a)
    a.add_argument("--tenant", default="", help="one of the reviewer's tenants")
    a.add_argument("--patient", default="", help="a patient id")
    a.add_argument("--resource-type", default="", help="e.g. Observation")
    a.add_argument("--limit", type=int, default=50)
    for name, help_text in (
        ("show", "one proposal: the resource, evidence, tier, reasons, approvals, expiry"),
        ("approve", "approve the payload shown now (or --payload-sha256 the one reviewed)"),
    ):
        a = actions.add_parser(name, help=help_text)
        common(a)
        a.add_argument("proposal_id")
        if name == "approve":
            a.add_argument("--payload-sha256", default=None, help="the payload hash reviewed")
    a = actions.add_parser("reject", help="reject with a structured reason the agent receives")
    common(a)
    a.add_argument("proposal_id")
    a.add_argument("--code", required=True, choices=sorted(REJECTION_CODES))
    a.add_argument("--message", default="", help="what the agent should know (<= 500 chars)")
    a = actions.add_parser("amend", help="replace the resource; it is validated and decided again")
    common(a)
    a.add_argument("proposal_id")
    a.add_argument("--resource", type=Path, required=True, help="the amended resource JSON file")


def read_token(args: argparse.Namespace) -> str:
    """The bearer token from --token-file, else the environment."""
    if args.token_file is not None:
        return str(args.token_file.read_text(encoding="utf-8").strip())
    return os.environ.get(TOKEN_ENV, "").strip()


def print_message(message: Any) -> None:
    """One protobuf message as one JSON line."""
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), sort_keys=True))


def review_command(args: argparse.Namespace) -> int:
    """Run one review action; exit 0 on success, 1 when refused (the reason printed), 2 when the
    token cannot be read."""
    try:
        token = read_token(args)
    except OSError as exc:
        print(f"cannot read the token: {exc}", file=sys.stderr)
        return 2
    if not token:
        print(f"no token: pass --token-file or set ${TOKEN_ENV}", file=sys.stderr)
        return 2
    with ReviewClient(args.target, token) as client:
        try:
            action = args.review_command
            if action == "list":
                for item in client.list_pending(
                    tenant_id=args.tenant,
                    tier=args.tier,
                    patient_id=args.patient,
                    resource_type=args.resource_type,
                    min_age_seconds=args.min_age,
                    limit=args.limit,
                ):
                    print_message(item)
            elif action == "mismatches":
                for item in client.mismatches(
                    tenant_id=args.tenant,
                    patient_id=args.patient,
                    resource_type=args.resource_type,
                    limit=args.limit,
                ):
                    print_message(item)
            elif action == "show":
                print_message(client.show(args.proposal_id))
            elif action == "approve":
                print_message(client.approve(args.proposal_id, args.payload_sha256))
            elif action == "reject":
                print_message(client.reject(args.proposal_id, args.code, args.message))
            else:
                print_message(
                    client.amend(args.proposal_id, args.resource.read_text(encoding="utf-8"))
                )
        except ReviewRefused as exc:
            print(f"refused: {exc.code.name} {exc.reason}: {exc.message}", file=sys.stderr)
            return 1
    return 0
