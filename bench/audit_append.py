"""Benchmark: AuditLog.append latency (durable, group-committed), one thread and eight threads.

Writes to a fresh temporary directory on the given filesystem (default: the system temp dir; pass
the directory the sidecar really uses, since fsync cost is the filesystem's) and prints median and
p99 append latency, throughput and records per fsync. Runs in a few seconds.

    .venv/bin/python bench/audit_append.py [--dir /var/lib/chartgate] [--count 1000]
"""

from __future__ import annotations

import argparse
import hashlib
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="filesystem to write on")
    parser.add_argument("--count", type=int, default=1000, help="appends per scenario")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        key = keys.load_or_create(Path(tmp) / "audit.jwk", "audit")
        for threads in (1, 8):
            path = Path(tmp) / f"audit-{threads}.jsonl"
            with AuditLog(path, key) as log:
                run(log, threads, min(100, args.count))  # warm up
                fsyncs_before = log.fsync_count
                latencies, wall = run(log, threads, args.count)
                fsyncs = log.fsync_count - fsyncs_before
            latencies.sort()
            median = statistics.median(latencies) * 1e6
            p99 = latencies[int(len(latencies) * 0.99) - 1] * 1e6
            print(
                f"{threads} thread(s): median {median:7.0f} us  p99 {p99:7.0f} us  "
                f"{len(latencies) / wall:7.0f} appends/s  "
                f"{len(latencies) / max(fsyncs, 1):5.1f} records/fsync"
            )


if __name__ == "__main__":
    main()
