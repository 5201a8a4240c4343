"""Benchmark: durable AuditLog appends per second (group commit), with 1, 8 and 32 writer threads.

Each append is a signed record acknowledged only once fdatasync covered it. Writes to a fresh
temporary directory on the given filesystem (default: the system temp dir; pass the directory
the sidecar really uses, since fsync cost is the filesystem's). Scenarios are interleaved and
repeated; the table shows the median of the repeats: appends/s, median and p99 latency, and
records per fsync. Target (issue 10): >= 10,000 durable appends/s with 8 concurrent writers.

    .venv/bin/python bench/audit_append.py [--dir /var/lib/chartgate] [--count 4000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chartgate import keys
from sidecar.audit.log import AuditLog

TARGET_WRITERS = 8
TARGET_PER_SECOND = 10_000
WRITERS = (1, 8, 32)


def body(n: int) -> dict[str, Any]:
    """A policy.decision-sized body: ids, a hash, a decision."""
    return {
        "proposal_id": f"prop-{n:08d}",
        "allow": True,
        "tier": "approval",
        "reasons": [{"code": "needs_approval", "rule": "tier.approval"}],
        "policy_revision": "rev-0123456789abcdef",
        "engine": "embedded",
        "state": "pending_approval",
        "payload_sha256": hashlib.sha256(str(n).encode()).hexdigest(),
    }


def run(log: AuditLog, threads: int, count: int) -> tuple[list[float], float]:
    """Append `count` records from `threads` threads; return per-append latencies (s), wall time."""
    per_thread = count // threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        barrier.wait()
        own = latencies[index]
        for n in range(per_thread):
            started = time.perf_counter()
            log.append("policy.decision", body(index * per_thread + n))
            own.append(time.perf_counter() - started)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in workers:
        thread.join()
    return [x for chunk in latencies for x in chunk], time.perf_counter() - started


def measure(directory: Path, key: keys.SigningKey, threads: int, count: int) -> dict[str, float]:
    path = directory / f"audit-{threads}-{time.monotonic_ns()}.jsonl"
    with AuditLog(path, key) as log:
        run(log, threads, min(200, count))  # warm up
        before = log.fsync_count
        cpu = time.process_time()
        latencies, wall = run(log, threads, count)
        cpu = time.process_time() - cpu
        fsyncs = log.fsync_count - before
    latencies.sort()
    return {
        "per_second": len(latencies) / wall,
        "median_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        "records_per_fsync": len(latencies) / max(fsyncs, 1),
        # This process's CPU (every thread, user and kernel, fsyncs included) per record: what
        # the figure would be on an idle machine is about 1e6 / this, per core it can use.
        "cpu_us_per_record": cpu / len(latencies) * 1e6,
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="filesystem to write on")
    parser.add_argument("--count", type=int, default=4000, help="appends per scenario and repeat")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats (median shown)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args()

    results: dict[int, list[dict[str, float]]] = {n: [] for n in WRITERS}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        key = keys.load_or_create(Path(tmp) / "audit.jwk", "audit")
        for _ in range(args.repeat):
            for threads in WRITERS:
                results[threads].append(measure(Path(tmp), key, threads, args.count))
    summary = {
        threads: {
            name: statistics.median(r[name] for r in runs)
            for name in (
                "per_second",
                "median_us",
                "p99_us",
                "records_per_fsync",
                "cpu_us_per_record",
                "load_average",
            )
        }
        for threads, runs in results.items()
    }
    achieved = summary[TARGET_WRITERS]["per_second"]
    ok = achieved >= TARGET_PER_SECOND
    if args.json:
        print(json.dumps({"writers": summary, "target": TARGET_PER_SECOND, "ok": ok}, indent=2))
    else:
        for threads, row in summary.items():
            print(
                f"{threads:2d} writer(s): {row['per_second']:7.0f} durable appends/s  "
                f"median {row['median_us']:6.0f} us  p99 {row['p99_us']:6.0f} us  "
                f"{row['records_per_fsync']:5.1f} records/fsync  "
                f"{row['cpu_us_per_record']:4.0f} us CPU/record  (load {row['load_average']:.1f})"
            )
        print(
            f"target: >= {TARGET_PER_SECOND:,} durable appends/s with {TARGET_WRITERS} writers: "
            f"{'met' if ok else 'MISSED'} ({achieved:,.0f}/s)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
