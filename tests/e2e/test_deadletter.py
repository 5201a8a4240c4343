"""Dead letters end to end: a write out of retries is parked, then listed, replayed and discarded by an operator.

A real stack whose store answers 503 to every write until the test lifts it; the operator works
through `chartgate deadletter` (the CLI, a subprocess) against the Review API with a token from the
development issuer. Counted in the store: a replay writes once; a discard writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chartgate.demo import TENANT, demo_sidecar_config
from chartgate.devissuer.issuer import DevIssuer
from chartgate.stack import Stack, start_adapter, start_fhir_store, start_sidecar
from chartgate.v1 import gateway_pb2
from sidecar.policy.library import shipped_policy_dir
from tests.e2e.test_write_faults import WRITTEN, control, inject, propose, settled, stored
from tests.support import seed_patient

PATIENT = "demo-patient-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("deadletter")
    stack = Stack(workdir=workdir)
    try:
        start_fhir_store(stack, extra_args=["--allow-fault-control"])
        start_adapter(stack, extra_args=["--breaker-threshold", "100"])
        config = demo_sidecar_config(workdir, shipped_policy_dir())
        start_sidecar(
            stack,
            {
                **config,
                "sweep_seconds": 0.2,
                "retry_base_seconds": 0.1,
                "retry_cap_seconds": 0.2,
                "retry_max_attempts": 3,
            },
        )
        seed_patient(stack.fhir_base, PATIENT)
        yield stack
    finally:
        stack.stop()


def operator_token(stack: Stack, *roles: str) -> Path:
    token = DevIssuer(stack.workdir / "dev-issuer").mint(
        "olga", roles=list(roles), tenants=[TENANT], fhir_user="Practitioner/olga"
    )
    path = stack.workdir / f"token-{'-'.join(roles) or 'none'}"
    path.write_text(token)
    return path


def cli(stack: Stack, token: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "chartgate.cli", "deadletter", args[0]),
            *("--target", stack.review_target, "--token-file", str(token), *args[1:]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, done.stderr


def dead_letter(stack: Stack, value: float, key: str) -> gateway_pb2.Proposal:
    proposal = propose(stack, value, key)
    final = settled(stack, proposal.proposal_id)
    assert final.state == gateway_pb2.PROPOSAL_STATE_DEAD_LETTERED
    return final


def audit_kinds(stack: Stack) -> list[dict[str, Any]]:
    lines = (stack.workdir / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def test_an_exhausted_write_is_parked_then_replayed_once_by_an_operator(stack: Stack) -> None:
    inject(stack, {"unavailable": {"probability": 1.0}})
    parked = dead_letter(stack, 91, "dl-replay")
    assert parked.reasons[-1].code == "delivery.exhausted"
    operator = operator_token(stack, "chartgate-operator")
    code, items, _ = cli(stack, operator, "list")
    assert code == 0
    [item] = [i for i in items if i["proposal"]["proposal_id"] == parked.proposal_id]
    assert item["attempts"] == 3
    assert [h["outcome"] for h in item["history"]] == ["server_error"] * 3
    assert {h["http_status"] for h in item["history"]} == {503}
    # A clinician is not an operator: refused, nothing changes.
    clinician = operator_token(stack, "clinician")
    code, _, err = cli(stack, clinician, "replay", parked.proposal_id)
    assert code == 1
    assert "review.forbidden" in err
    httpx.delete(control(stack)).raise_for_status()  # the EHR is back
    code, [replayed], _ = cli(stack, operator, "replay", parked.proposal_id)
    assert code == 0
    assert replayed["proposal"]["state"] == "PROPOSAL_STATE_ACCEPTED"
    assert len(stored(stack, parked.proposal_id)) == 1
    # Replaying again is refused (it is no longer a dead letter) and writes nothing more.
    code, _, err = cli(stack, operator, "replay", parked.proposal_id)
    assert code == 1
    assert "proposal.not_found" in err
    assert len(stored(stack, parked.proposal_id)) == 1
    [record] = [
        r["body"]
        for r in audit_kinds(stack)
        if r["kind"] == "deadletter.replayed" and r["body"]["proposal_id"] == parked.proposal_id
    ]
    assert record["result"] == "resent"
    assert record["operator"].endswith("#olga")


def test_a_discard_writes_nothing_and_one_the_ehr_holds_is_accepted_instead(
    stack: Stack,
) -> None:
    inject(stack, {"unavailable": {"probability": 1.0}})
    gone = dead_letter(stack, 92, "dl-discard")
    operator = operator_token(stack, "chartgate-operator")
    code, [discarded], _ = cli(stack, operator, "discard", gone.proposal_id)
    assert code == 0
    assert discarded["proposal"]["state"] == "PROPOSAL_STATE_FAILED_FINAL"
    assert stored(stack, gone.proposal_id) == []
    # A write the EHR stored although its answer was lost, and whose look-ups all failed: the
    # discard finds it and says so.
    inject(
        stack,
        {
            "schedule": [
                {"fault": "drop_after_commit", "interactions": ["transaction"]},
                {"fault": "server_error", "count": 1000, "interactions": ["search"]},
            ]
        },
    )
    held = dead_letter(stack, 93, "dl-found")
    httpx.delete(control(stack)).raise_for_status()
    assert len(stored(stack, held.proposal_id)) == 1
    code, [found], _ = cli(stack, operator, "discard", held.proposal_id)
    assert code == 0
    assert found["proposal"]["state"] == "PROPOSAL_STATE_ACCEPTED"
    assert len(stored(stack, held.proposal_id)) == 1
    time.sleep(0.5)
    assert settled(stack, held.proposal_id).state in WRITTEN
