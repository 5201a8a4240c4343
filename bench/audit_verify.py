"""Benchmark: audit log verifications per second: full (1 process, parallel) and incremental against a held checkpoint.

Writes a log of --records signed records (default 100,000, the issue's figure), takes the
checkpoint it published at 90% of them (what an auditor would hold from the previous check),
then times `verify_log` over the whole log:

* full, 1 process: every record's form, key window, Ed25519 signature, seq and chain;
* full, parallel: the same, split across --jobs processes (default: CPUs);
* incremental: the 90% the held checkpoint covers checked by recomputing its RFC 9162 root
  (one SHA-256 a record), the new 10% in full; and the same against a checkpoint of the whole
  log (nothing new since the last check).

It also reports the peak memory (tracemalloc) of a full verification at a quarter of the log and
at the whole of it: flat in the log's length. Target (issue 10): >= 50,000 records/s.

    .venv/bin/python bench/audit_verify.py [--records 100000] [--jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_append import body

from chartgate import keys
from sidecar.audit.files import LogFiles
from sidecar.audit.keyring import Keyring
from sidecar.audit.log import AuditLog
from sidecar.audit.note import parse_signed_checkpoint
from sidecar.audit.verify import VerifyOptions, verify_log

TARGET_PER_SECOND = 50_000


def write_log(path: Path, key: keys.SigningKey, records: int, held_at: int) -> Path:
    """The log, and a copy of the checkpoint it published once it held `held_at` records."""
    held = path.with_name("held.checkpoint")
    with AuditLog(path, key, checkpoint_every=3600) as log:
        for n in range(records):
            # Durable every 1,000th: the bench times verification, not fsyncs.
            log.append("policy.decision", body(n), durable=n % 1000 == 999)
            if n + 1 == held_at:
                signed = log.checkpoint()
                assert signed is not None
                held.write_text(signed.text)
    return held


def timed(path: Path, ring: Keyring, options: VerifyOptions) -> tuple[float, int]:
    started = time.perf_counter()
    result = verify_log(path, ring, options)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"the benchmark log did not verify: {result.problem}")
    return elapsed, result.lines


def peak_memory(path: Path, ring: Keyring) -> int:
    tracemalloc.start()
    try:
        verify_log(path, ring, VerifyOptions(jobs=1))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        key = keys.load_or_create(Path(tmp) / "audit.jwk", "audit")
        path = Path(tmp) / "log" / "audit.jsonl"
        started = time.perf_counter()
        held_file = write_log(path, key, args.records, int(args.records * 0.9))
        written = time.perf_counter() - started
        ring = Keyring.load(LogFiles(path).keyring)
        held = parse_signed_checkpoint(held_file.read_bytes())
        whole = parse_signed_checkpoint(LogFiles(path).checkpoint.read_bytes())
        rows: dict[str, dict[str, Any]] = {}
        for name, options in (
            ("full, 1 process", VerifyOptions(jobs=1)),
            (f"full, {args.jobs} processes", VerifyOptions(jobs=args.jobs)),
            ("incremental, 10% new", VerifyOptions(held=[held], jobs=args.jobs)),
            ("incremental, nothing new", VerifyOptions(held=[whole], jobs=args.jobs)),
        ):
            elapsed, lines = timed(path, ring, options)
            rows[name] = {"seconds": elapsed, "records_per_second": lines / elapsed}
        quarter = Path(tmp) / "quarter" / "audit.jsonl"
        quarter.parent.mkdir()
        with path.open("rb") as source, quarter.open("wb") as target:
            for n, line in enumerate(source):
                if n >= args.records // 4:
                    break
                target.write(line)
        shutil.copy(LogFiles(path).keyring, LogFiles(quarter).keyring)
        memory = {
            "quarter_bytes": peak_memory(quarter, ring),
            "whole_bytes": peak_memory(path, ring),
        }
    best = max(row["records_per_second"] for row in rows.values())
    incremental = rows["incremental, 10% new"]["records_per_second"]
    ok = incremental >= TARGET_PER_SECOND
    if args.json:
        print(
            json.dumps(
                {"records": args.records, "rows": rows, "memory": memory, "ok": ok}, indent=2
            )
        )
        return 0 if ok else 1
    print(f"log of {args.records:,} signed records written in {written:.1f} s")
    for name, row in rows.items():
        print(f"  {name:28s} {row['seconds']:6.2f} s  {row['records_per_second']:9,.0f} records/s")
    print(
        f"  peak memory of a full verification: {memory['quarter_bytes'] / 1e6:.1f} MB at "
        f"{args.records // 4:,} records, {memory['whole_bytes'] / 1e6:.1f} MB at {args.records:,}"
    )
    print(
        f"target: >= {TARGET_PER_SECOND:,} records/s (incremental against a held checkpoint): "
        f"{'met' if ok else 'MISSED'} ({incremental:,.0f}/s; best row {best:,.0f}/s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
