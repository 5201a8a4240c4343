"""Benchmark: one policy decision on the embedded engine (rego-cpp), shipped library, representative input.

Prints p50/p99 in microseconds for the whole `EmbeddedEngine.evaluate` (input conversion, query,
decision parsing) and for its parts, plus throughput with several threads.

    .venv/bin/python bench/policy_eval.py [--n 1500] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar.policy.embedded import ENTRYPOINT, EmbeddedEngine
from sidecar.policy.regocpp import compile_policy, new_interpreter, query_entrypoint, set_input

REPO = Path(__file__).resolve().parent.parent
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# The documented example (docs/policy.md): a vital-sign Observation, one consent, two scopes.
INPUT: dict[str, Any] = {
    "time": {"now_ns": 1795377600000000000, "rfc3339": "2026-11-22T20:00:00+00:00"},
    "agent": {
        "id": "scribe-agent",
        "tenant": "st-mary",
        "scopes": [
            f"patient/Observation.c?category={OBSERVATION_CATEGORY}|vital-signs",
            "patient/Patient.u",
        ],
    },
    "action": {
        "tool": "fhir.create",
        "operation": "create",
        "resource_type": "Observation",
        "target": "Observation",
        "fields": ["category", "code", "status", "subject", "valueQuantity"],
        "summary": {
            "status": "final",
            "category": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}],
            "code": [{"system": "http://loinc.org", "code": "8867-4"}],
        },
        "payload_sha256": "9f2c" * 16,
    },
    "patient": {"id": "p-123"},
    "encounter": {"id": "enc-9"},
    "purpose_of_use": "TREAT",
    "on_behalf_of": "Practitioner/dr-lee",
    "consents": [
        {
            "id": "consent-1",
            "patient": "p-123",
            "status": "active",
            "purposes": ["TREAT"],
            "actors": ["*"],
            "data_classes": ["*"],
            "period": {"start_ns": 0, "end_ns": 0},
        }
    ],
    "tenant": {"id": "st-mary"},
    "model": {"version": "scribe-2026-10", "prompt_version": "p-41"},
    "confidence": 0.93,
    "mode": "live",
    "evidence_refs": ["DocumentReference/abc"],
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
}


def measure(fn: Callable[[], object], n: int) -> tuple[float, float]:
    for _ in range(min(200, n // 10)):
        fn()
    samples: list[int] = []
    for _ in range(n):
        started = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="evaluations per measurement")
    parser.add_argument("--threads", type=int, default=4, help="threads for the throughput run")
    args = parser.parse_args()

    started = time.perf_counter()
    engine = EmbeddedEngine(REPO / "rego")
    built = time.perf_counter() - started
    decision = engine.evaluate(INPUT)
    assert decision.allow, decision  # the representative input is allowed (tier approval)
    print(f"revision {engine.revision}: {decision.tier.value}, compiled in {built * 1000:.0f} ms")

    compiled = compile_policy(engine.policy, [ENTRYPOINT])
    interpreter = new_interpreter()
    set_input(interpreter, INPUT)
    rows = [
        ("evaluate (whole)", measure(lambda: engine.evaluate(INPUT), args.n)),
        ("  input conversion", measure(lambda: set_input(interpreter, INPUT), args.n)),
        (
            "  query entrypoint",
            measure(lambda: query_entrypoint(interpreter, compiled.bundle, ENTRYPOINT), args.n),
        ),
        ("  input JSON size", (float(len(json.dumps(INPUT))), 0.0)),
    ]
    for label, (p50, p99) in rows:
        if label.strip().startswith("input JSON"):
            print(f"{label:22} {p50:8.0f} bytes")
        else:
            print(f"{label:22} p50 {p50:8.1f} us   p99 {p99:8.1f} us")

    per_thread = max(200, args.n // args.threads)
    barrier = threading.Barrier(args.threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            engine.evaluate(INPUT)

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    rate = args.threads * per_thread / elapsed
    print(f"throughput, {args.threads} threads: {rate:,.0f} decisions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
