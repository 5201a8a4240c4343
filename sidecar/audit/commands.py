"""`chartgate audit ...`: verify, checkpoint, prove (RFC 9162), search, export (FHIR R4 NDJSON), keys.

Exit codes: 0 success; 1 the log (or proof) failed a check; 2 an input could not be used (an
unreadable or malformed keyring, checkpoint or log, a bad argument).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sidecar.audit.keyring import Keyring, KeyringError, merge
from sidecar.audit.note import NoteError, SignedCheckpoint, parse_signed_checkpoint

ROOT_HELP = "audit log tools: verify, checkpoint, prove, search, export, keys"


def add_audit_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `audit` command tree to the `chartgate` subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser("audit", help=ROOT_HELP, description=ROOT_HELP)
    actions = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    v = actions.add_parser(
        "verify",
        help="verify audit logs: signatures, chain, keys, checkpoints (every fault, named)",
        description="Check every record of each log (a directory: every *.jsonl in it) and, "
        "given checkpoints you hold, detect a cut-off tail, a rollback or a fork. "
        "Exit 0 when all verify, 1 on any fault, 2 when an input cannot be used.",
    )
    v.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="audit log file or directory")
    keys = v.add_mutually_exclusive_group(required=True)
    keys.add_argument("--keyring", type=Path, help="your pinned keyring (or a JWKS) of audit keys")
    keys.add_argument("--key", type=Path, help="same as --keyring (kept for older scripts)")
    v.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="HELD",
        help="a signed checkpoint you hold (repeatable); records it covers are checked by its "
        "root unless --full",
    )
    v.add_argument("--full", action="store_true", help="check every signature, even under HELD")
    v.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPUs)")
    v.add_argument("--max-faults", type=int, default=100, help="faults to list per log (100)")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    c = actions.add_parser(
        "checkpoint",
        help="verify a log, then print its latest signed checkpoint for you to hold",
    )
    c.add_argument("log", type=Path, metavar="LOG")
    c.add_argument("--keyring", type=Path, required=True, help="your pinned keyring")
    c.add_argument("--checkpoint", type=Path, action="append", default=[], metavar="HELD")
    c.add_argument("--out", type=Path, default=None, help="also write it to this file")

    p = actions.add_parser("prove", help="RFC 9162 inclusion and consistency proofs")
    kinds = p.add_subparsers(dest="proof", required=True, metavar="PROOF")
    i = kinds.add_parser("inclusion", help="prove a record is in a checkpoint's tree")
    i.add_argument("log", type=Path, metavar="LOG")
    target = i.add_mutually_exclusive_group(required=True)
    target.add_argument("--seq", type=int, help="the record's seq (its leaf index)")
    target.add_argument("--receipt", type=Path, help="a receipt (JSON) the sidecar returned")
    i.add_argument("--checkpoint", type=Path, default=None, help="tree (default: the log's)")
    i.add_argument("--keyring", type=Path, default=None, help="check the checkpoint's signature")
    k = kinds.add_parser("consistency", help="prove a later checkpoint extends an earlier one")
    k.add_argument("log", type=Path, metavar="LOG")
    k.add_argument("--old", type=Path, required=True, help="the earlier checkpoint (held)")
    k.add_argument("--new", type=Path, default=None, help="the later one (default: the log's)")
    k.add_argument("--keyring", type=Path, default=None, help="check both signatures")

    s = actions.add_parser("search", help="find records (by an index beside each log)")
    s.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    for name in ("patient", "encounter", "agent", "reviewer", "tenant", "proposal", "kind"):
        s.add_argument(f"--{name}", default=None)
    s.add_argument("--since", default=None, help="RFC 3339 time (inclusive)")
    s.add_argument("--until", default=None, help="RFC 3339 time (inclusive)")
    s.add_argument("--limit", type=int, default=1000)
    s.add_argument("--rebuild", action="store_true", help="rebuild the index from the log")
    s.add_argument("--with-source", action="store_true", help="wrap each record with log, line")

    e = actions.add_parser("export", help="export records as FHIR R4 AuditEvent and Provenance")
    e.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    e.add_argument("--format", choices=["fhir"], default="fhir", help="fhir: NDJSON resources")
    e.add_argument("--out", type=Path, default=None, help="NDJSON file (default: stdout)")
    e.add_argument("--keyring", type=Path, default=None, help="verify the logs first")

    keys_parser = actions.add_parser("keys", help="keyrings: show, merge")
    key_actions = keys_parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    show = key_actions.add_parser("show", help="list keys: kid, thumbprint, role, log, window")
    show.add_argument("keyring", type=Path)
    m = key_actions.add_parser("merge", help="one keyring from several (duplicate kids refused)")
    m.add_argument("out", type=Path)
    m.add_argument("keyrings", nargs="+", type=Path)
    return parser


def audit_command(args: argparse.Namespace) -> int:
    """Run the `audit` action in `args`; the process exit code."""
    action: str = args.audit_command
    try:
        if action == "verify":
            return _verify(args)
        if action == "checkpoint":
            return _checkpoint(args)
        if action == "prove":
            return _prove(args)
        if action == "search":
            return _search(args)
        if action == "export":
            return _export(args)
        if action == "keys":
            return _keys(args)
    except (KeyringError, NoteError, _UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    raise AssertionError(action)  # pragma: no cover


class _UsageError(ValueError):
    pass


def _verify(args: argparse.Namespace) -> int:
    from sidecar.audit.verify import verify_command

    return verify_command(
        list(args.logs),
        args.keyring or args.key,
        held_paths=list(args.checkpoint),
        full=args.full,
        jobs=args.jobs,
        limit=args.max_faults,
        quiet_progress=args.quiet,
    )


def _read_checkpoint(path: Path) -> SignedCheckpoint:
    with path.open("rb") as handle:
        return parse_signed_checkpoint(handle.read(64 * 1024))


def _checked(signed: SignedCheckpoint, keyring_path: Path | None, what: str) -> str:
    """Check a checkpoint's signature against a keyring; what was checked, for the output."""
    if keyring_path is None:
        return f"{what}: signature not checked (no --keyring)"
    from sidecar.audit.verify import VerifyInputError, checkpoint_signer

    try:
        signer = checkpoint_signer(signed, Keyring.load(keyring_path))
    except VerifyInputError as exc:
        raise _UsageError(f"{what}: {exc}") from None
    if signer is None:
        raise _UsageError(f"{what} is signed by no key of {keyring_path}")
    return f"{what}: signed by {signer.kid}"


def _checkpoint(args: argparse.Namespace) -> int:
    from sidecar.audit.files import LogFiles
    from sidecar.audit.verify import verify_command

    status = verify_command(
        args.log, args.keyring, held_paths=list(args.checkpoint), quiet_progress=True
    )
    if status != 0:
        print("error: the log does not verify; no checkpoint printed", file=sys.stderr)
        return status
    path = LogFiles(args.log).checkpoint
    if not path.exists():
        print(f"error: {args.log} has published no checkpoint ({path})", file=sys.stderr)
        return 1
    text = path.read_text(encoding="utf-8")
    print(f"\n# checkpoint of {args.log}, verified above; hold it for the next check:")
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        print(f"# written to {args.out}")
    return 0


def _prove(args: argparse.Namespace) -> int:
    from sidecar.audit.files import LogFiles
    from sidecar.audit.proofs import ProofError, prove_consistency, prove_inclusion

    log: Path = args.log
    try:
        if args.proof == "inclusion":
            leaf_expected = ""
            if args.receipt is not None:
                receipt = json.loads(args.receipt.read_text(encoding="utf-8"))
                if not isinstance(receipt, dict):
                    raise _UsageError("a receipt is a JSON object")
                # As AuditLog.receipt gives it (`index`), or as a Proposal's decision_receipt
                # prints (`leaf_index`, proto JSON `leafIndex`).
                if "decision_receipt" in receipt or "decisionReceipt" in receipt:
                    receipt = receipt.get("decision_receipt") or receipt.get("decisionReceipt")
                    if not isinstance(receipt, dict):
                        raise _UsageError("decision_receipt is a JSON object")
                raw_index = next(
                    (receipt[k] for k in ("index", "leaf_index", "leafIndex") if k in receipt), 0
                )
                index = int(raw_index)
                leaf_expected = str(receipt.get("leaf_hash", receipt.get("leafHash", "")))
                signed = parse_signed_checkpoint(str(receipt["checkpoint"]))
            else:
                index = args.seq
                signed = _read_checkpoint(args.checkpoint or LogFiles(log).checkpoint)
            checked = _checked(signed, args.keyring, "checkpoint")
            proof = prove_inclusion(log, index, signed.size)
            ok = proof.verify(signed.root) and (
                not leaf_expected or leaf_expected == proof.leaf.hex()
            )
            out = {**proof.to_json(), "origin": signed.origin, "root": signed.root.hex()}
            print(json.dumps(out, indent=2))
            print(f"# {checked}")
        else:
            old = _read_checkpoint(args.old)
            new = _read_checkpoint(args.new or LogFiles(log).checkpoint)
            if old.origin != new.origin:
                raise _UsageError(f"the checkpoints are of two logs: {old.origin}, {new.origin}")
            checks = [_checked(old, args.keyring, "old"), _checked(new, args.keyring, "new")]
            consistency = prove_consistency(log, old.size, new.size)
            ok = consistency.verify(old.root, new.root)
            print(json.dumps({**consistency.to_json(), "origin": new.origin}, indent=2))
            print(f"# {'; '.join(checks)}")
    except (ProofError, KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, NoteError | KeyringError | _UsageError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("# proof verifies (RFC 9162)" if ok else "FAILED: the proof does not verify")
    return 0 if ok else 1


def _search(args: argparse.Namespace) -> int:
    from sidecar.audit.index import Query, iter_hits_json, search_logs
    from sidecar.audit.verify import find_logs

    logs = find_logs(args.logs)
    query = Query(
        patient=args.patient,
        encounter=args.encounter,
        agent=args.agent,
        reviewer=args.reviewer,
        tenant=args.tenant,
        proposal=args.proposal,
        kind=args.kind,
        since=args.since,
        until=args.until,
        limit=max(1, args.limit),
    )
    try:
        hits = search_logs(logs, query, rebuild=args.rebuild)
    except KeyringError as exc:  # a bad --since/--until
        raise _UsageError(str(exc)) from None
    for line in iter_hits_json(hits, with_source=args.with_source or len(logs) > 1):
        print(line)
    print(f"# {len(hits)} record(s)", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from sidecar.audit.export import export_fhir
    from sidecar.audit.verify import find_logs, log_origin, verify_command

    logs = find_logs(args.logs)
    if args.keyring is not None:
        status = verify_command(logs, args.keyring, quiet_progress=True)
        if status != 0:
            print("error: the logs do not verify; nothing exported", file=sys.stderr)
            return status
    ring = Keyring.load(args.keyring) if args.keyring is not None else Keyring.of([])
    named = [(path, log_origin(path, ring)[0]) for path in logs]
    target = args.out.open("w", encoding="utf-8") if args.out else nullcontext(sys.stdout)
    with target as out:
        stats = export_fhir(named, out)
    print(
        f"# exported {stats.audit_events} AuditEvent and {stats.provenances} Provenance "
        "resource(s) (FHIR R4, NDJSON)",
        file=sys.stderr,
    )
    return 0


def _keys(args: argparse.Namespace) -> int:
    if args.keys_action == "show":
        ring = Keyring.load(args.keyring)
        for entry in ring:
            print(entry.describe())
        return 0
    merged = merge(Keyring.load(path) for path in args.keyrings)
    merged.save(args.out)
    print(f"{len(merged)} key(s) written to {args.out}")
    return 0
