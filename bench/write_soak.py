"""Soak: N autonomous writes through sidecar + adapter + the local FHIR store failing at random, counted in the store.

Every fault kind the store injects (docs/devstore-faults.md) strikes at random from a seed: 500,
503 with Retry-After, 429 with Retry-After, slow answers past the adapter's deadline, connections
dropped before and after the commit, the EHR's own 422, and failed searches (look-ups). The agent
is a plain one: it proposes each write once with its own idempotency key and, when Propose pushes
back (RESOURCE_EXHAUSTED), comes back after the hint with the same key. Then it waits for every
proposal to end, and counts the resources the store holds per stamped proposal identifier.

    .venv/bin/python bench/write_soak.py [--proposals 2000] [--clients 8] [--seed 9] [--json]

Exits 1 when any proposal is not in a terminal state (accepted, failed_final, dead_lettered), an
accepted one is not stored exactly once, anything is stored twice, or a write is stored although
its proposal reports it failed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chartgate.demo import OBS_CATEGORY, PATIENT, demo_sidecar_config
from chartgate.stack import Stack, start_adapter, start_fhir_store, start_sidecar
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.client import ChartgateClient, ProposalRefused
from sidecar.policy.library import shipped_policy_dir
from tests.support import seed_patient

# Written: accepted, then read back (reconciled, or mismatch when the EHR stored it otherwise).
WRITTEN = {"accepted", "reconciled", "mismatch"}
TERMINAL = WRITTEN | {"failed_final", "dead_lettered"}


def fault_plan(seed: int) -> dict[str, Any]:
    # The generic profile writes in a transaction (the resource and its Provenance); a vendor
    # profile without transactions writes with a plain create.
    writes = ["create", "transaction"]
    return {
        "seed": seed,
        "server_error": {"probability": 0.05, "interactions": [*writes, "search"]},
        "unavailable": {"probability": 0.05, "retry_after_seconds": 1, "interactions": writes},
        "throttle": {"probability": 0.05, "retry_after_seconds": 1, "interactions": writes},
        # Past the adapter's 2 s deadline: stored, never heard of (ambiguous).
        "slow": {
            "probability": 0.02,
            "delay_seconds": 2.5,
            "phase": "after",
            "interactions": writes,
        },
        "drop_before_commit": {"probability": 0.04, "interactions": writes},
        "drop_after_commit": {"probability": 0.08, "interactions": writes},
        "reject": {"probability": 0.02, "status": 422, "interactions": writes},
    }


SIDECAR = {
    "sweep_seconds": 0.2,
    "retry_base_seconds": 0.2,
    "retry_cap_seconds": 2.0,
    "retry_index_delay_seconds": 0.5,
    "retry_max_attempts": 8,
    "retry_max_total_seconds": 120.0,
    "adapter_timeout_seconds": 5.0,
    "max_queued_writes": 50,
}


def vital(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": "2026-11-30T09:00:00+00:00",
        "valueQuantity": {"value": 40 + n % 100, "unit": "/min"},
        "note": [{"text": f"soak {n}"}],
    }


class Agent:
    """Proposes once per key; after RESOURCE_EXHAUSTED comes back after the hint, same key."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.pushed_back = 0
        self.hints: list[float] = []
        self.lock = threading.Lock()

    def propose(self, n: int) -> str:
        with ChartgateClient(self.target) as client:
            while True:
                try:
                    return client.propose(
                        tool="fhir.create",
                        resource=vital(n),
                        patient_id=PATIENT,
                        confidence=0.97,
                        idempotency_key=f"soak-{n}",
                    ).proposal_id
                except ProposalRefused as exc:
                    if exc.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    with self.lock:
                        self.pushed_back += 1
                        self.hints.append(exc.retry_after_seconds)
                    time.sleep(max(exc.retry_after_seconds, 0.1))


def ledger_rows(workdir: Path) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """Each proposal's state, delivery record and reconciliation record."""
    with sqlite3.connect(f"file:{workdir / 'sidecar' / 'ledger.sqlite3'}?mode=ro", uri=True) as db:
        return {
            pid: (state, json.loads(delivery or "{}"), json.loads(reconciliation or "{}"))
            for pid, state, delivery, reconciliation in db.execute(
                "SELECT proposal_id, state, delivery, reconciliation FROM proposals"
            )
        }


def stored_count(fhir_base: str, proposal_id: str) -> int:
    response = httpx.get(
        f"{fhir_base}/Observation",
        params={"identifier": f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}", "_summary": "count"},
        timeout=30,
    )
    response.raise_for_status()
    return int(response.json()["total"])


def run(proposals: int, clients: int, seed: int, settle_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="write-soak-") as tmp:
        workdir = Path(tmp)
        stack = Stack(workdir=workdir)
        try:
            start_fhir_store(stack, extra_args=["--allow-fault-control"])
            start_adapter(stack, extra_args=["--fhir-timeout", "2"])
            config = demo_sidecar_config(workdir, shipped_policy_dir())
            start_sidecar(stack, {**config, **SIDECAR})
            seed_patient(stack.fhir_base, PATIENT)
            control = stack.fhir_base.removesuffix("/fhir") + "/_faults"
            httpx.post(control, json=fault_plan(seed)).raise_for_status()
            agent = Agent(stack.sidecar_target)
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                ids = list(pool.map(agent.propose, range(proposals)))
            proposed_in = time.monotonic() - started
            deadline = time.monotonic() + settle_seconds
            while True:
                rows = ledger_rows(workdir)
                # Settled, and read back: an accepted write waits for its reconciliation.
                open_ = [p for p in ids if rows[p][0] not in TERMINAL - {"accepted"}]
                if not open_ or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            settled_in = time.monotonic() - started
            faults = httpx.get(control).json()
            httpx.delete(control).raise_for_status()  # count what is stored without faults
            stored = {p: stored_count(stack.fhir_base, p) for p in ids}
        finally:
            stack.stop()
    states = Counter(rows[p][0] for p in ids)
    classes: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    for p in ids:
        delivery = rows[p][1]
        attempts[int(delivery.get("attempts", 0))] += 1
        for step in delivery.get("history", []):
            label = step.get("class", "?")
            if label == "lookup":
                label = f"lookup:{step.get('result', '?')}"
            classes[label] += 1
    written = Counter(min(stored[p], 2) for p in ids)
    lags = sorted(float(rows[p][2]["lag_seconds"]) for p in ids if "lag_seconds" in rows[p][2])
    accepted_not_once = [p for p in ids if rows[p][0] in WRITTEN and stored[p] != 1]
    failed_but_stored = [p for p in ids if rows[p][0] not in WRITTEN and stored[p] > 0]
    not_terminal = [p for p in ids if rows[p][0] not in TERMINAL]
    return {
        "proposals": proposals,
        "clients": clients,
        "seed": seed,
        "proposed_seconds": round(proposed_in, 1),
        "settled_seconds": round(settled_in, 1),
        "pushed_back": agent.pushed_back,
        "push_back_hint_p50_seconds": round(sorted(agent.hints)[len(agent.hints) // 2], 2)
        if agent.hints
        else 0.0,
        "faults_injected": faults.get("injected", {}),
        "store_requests": faults.get("requests", 0),
        "final_states": dict(sorted(states.items())),
        "attempt_outcomes": dict(sorted(classes.items())),
        "attempts_per_proposal": dict(sorted(attempts.items())),
        "reconciliation_lag_p50_seconds": round(lags[len(lags) // 2], 2) if lags else None,
        "reconciliation_lag_p99_seconds": round(lags[int(len(lags) * 0.99)], 2) if lags else None,
        "written_once": written[1],
        "written_twice_or_more": written[2],
        "written_never": written[0],
        "accepted_not_stored_once": len(accepted_not_once),
        "stored_but_reported_failed": len(failed_but_stored),
        "not_terminal": len(not_terminal),
        "ok": not (accepted_not_once or failed_but_stored or not_terminal or written[2]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--settle-seconds", type=float, default=300.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.proposals, args.clients, args.seed, args.settle_seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
        print(
            "PASS: every proposal ended; accepted ones stored once; none twice; none stored "
            "but reported failed"
            if result["ok"]
            else "FAIL: see the counts above"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
