"""`chartgate deadletter list|show|replay|discard`: the dead-letter queue from a terminal, one JSON object per line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sidecar.review.client import ReviewClient, ReviewRefused
from sidecar.review.commands import TOKEN_ENV, add_connection_options, print_message, read_token


def add_deadletter_parser(sub: Any) -> None:
    """The `deadletter` subcommand and its actions (wired by chartgate/cli.py)."""
    p = sub.add_parser(
        "deadletter",
        help="writes parked after their retries were spent: list, show, replay, discard",
    )
    actions = p.add_subparsers(dest="deadletter_command", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="dead letters in the operator's tenants, oldest first")
    add_connection_options(a)
    a.add_argument("--tenant", default="", help="one of the operator's tenants")
    a.add_argument("--limit", type=int, default=100)
    for name, help_text in (
        ("show", "one dead letter with every delivery attempt"),
        (
            "replay",
            "look it up (found: accepted); else re-check policy if it changed and send it "
            "with a fresh token and retry budget",
        ),
        ("discard", "look it up (found: accepted); else end it failed_final"),
    ):
        a = actions.add_parser(name, help=help_text)
        add_connection_options(a)
        a.add_argument("proposal_id")


def deadletter_command(args: argparse.Namespace) -> int:
    """Run one action; exit 0 on success, 1 when refused (the reason printed), 2 without a
    token. Every replay and discard is audited with the operator's identity."""
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
            if args.deadletter_command == "list":
                for item in client.dead_letters(args.tenant, args.limit):
                    print_message(item)
            else:
                print_message(client.dead_letter(args.deadletter_command, args.proposal_id))
        except ReviewRefused as exc:
            print(f"refused: {exc.code.name} {exc.reason}: {exc.message}", file=sys.stderr)
            return 1
    return 0
