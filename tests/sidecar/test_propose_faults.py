"""Faults between the ledger insert and the decision: a proposal never stays `validated`, and is written once.

The pipeline runs in-process with its real parts (SQLite ledger, signed audit log, the shipped
policy on the embedded engine, real token minting); the audit log is wrapped to fail on chosen
records, and the adapter hop is a counter (it is the EHR write being counted).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from chartgate import keys
from sidecar.adapter_client import AdapterOutcome
from sidecar.audit.log import AuditLog
from sidecar.config import SidecarConfig
from sidecar.consent import ConsentDirectory
from sidecar.errors import AuditUnavailable, LedgerUnavailable
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.library import shipped_policy_dir
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import ProposalService, ProposeCommand
from sidecar.storage.records import ProposalContext
from sidecar.storage.sqlite.store import SqliteStore as Ledger
from sidecar.tokens.mint import TokenMinter

PATIENT = "p-123"
TELECOM = {"resourceType": "Patient", "id": PATIENT, "telecom": [{"system": "phone", "value": "1"}]}


class FailingAudit:
    """The real audit log, failing the appends of the kinds in `fail` (while it is non-empty)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.fail: set[str] = set()

    def append(self, kind: str, body: Mapping[str, Any], *, durable: bool = True) -> Any:
        if kind in self.fail:
            raise OSError(28, "No space left on device")
        return self.log.append(kind, body, durable=durable)


class CountingAdapter:
    """Every write the EHR would receive, counted per proposal."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.lock = threading.Lock()

    def write(self, token: str, canonical_payload: bytes) -> AdapterOutcome:
        with self.lock:
            self.writes.append(canonical_payload)
        return AdapterOutcome(ok=True, fhir_id=PATIENT, fhir_version="2", http_status=200)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[ProposalService, FailingAudit, CountingAdapter, Ledger]:
    consents = tmp_path / "consents.json"
    consents.write_text(
        json.dumps([{"id": "c-1", "patient": PATIENT, "status": "active", "purposes": ["TREAT"]}])
    )
    config = SidecarConfig(
        agent_id="scribe-agent",
        tenant_id="st-mary",
        agent_scopes=("patient/Patient.u",),
        consents_file=consents,
    )
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    audit = FailingAudit(
        AuditLog(tmp_path / "audit.jsonl", keys.load_or_create(tmp_path / "a.jwk", "audit"))
    )
    adapter = CountingAdapter()
    minter = TokenMinter(
        keys.load_or_create(tmp_path / "t.jwk", "token"),
        issuer="chartgate-sidecar",
        audience="chartgate-adapter",
        ttl_seconds=60,
    )
    service = ProposalService(
        config,
        ledger,
        EmbeddedEngine(shipped_policy_dir()),
        ConsentDirectory(consents),
        minter,
        adapter,
        audit,
    )
    return service, audit, adapter, ledger


def command(key: str) -> ProposeCommand:
    return ProposeCommand(
        idempotency_key=key,
        tool="fhir.update",
        resource_type="Patient",
        resource_json=json.dumps(TELECOM),
        context=ProposalContext(
            patient_id=PATIENT,
            encounter_id="",
            purpose_of_use="TREAT",
            on_behalf_of="",
            model_version="",
            prompt_version="",
            confidence=0.9,
            mode="live",
            evidence_refs=(),
            trace_id=uuid.uuid4().hex,
        ),
    )


@pytest.mark.parametrize("failing", ["proposal.received", "policy.decision", "token.minted"])
def test_an_audit_failure_before_the_decision_is_repaired_by_the_next_attempt(
    parts: tuple[ProposalService, FailingAudit, CountingAdapter, Ledger], failing: str
) -> None:
    service, audit, adapter, ledger = parts
    audit.fail = {failing}
    with pytest.raises(AuditUnavailable) as info:
        service.propose(command("k-1"))
    assert info.value.status is grpc.StatusCode.UNAVAILABLE
    assert info.value.reason == "audit.unavailable"
    assert not adapter.writes  # nothing left the sidecar unaudited
    audit.fail = set()
    record = service.propose(command("k-1"))
    assert record.state is State.ACCEPTED
    assert len(adapter.writes) == 1
    assert service.propose(command("k-1")).state is State.ACCEPTED  # and only once
    assert len(adapter.writes) == 1
    stuck = ledger._conn.execute("SELECT count(*) FROM proposals WHERE state = 'validated'")
    assert stuck.fetchone()[0] == 0


def test_concurrent_retries_of_a_stuck_proposal_write_once(
    parts: tuple[ProposalService, FailingAudit, CountingAdapter, Ledger],
) -> None:
    service, audit, adapter, _ = parts
    audit.fail = {"policy.decision"}
    with pytest.raises(AuditUnavailable):
        service.propose(command("k-2"))
    audit.fail = set()
    states: list[State] = []
    errors: list[BaseException] = []

    def retry() -> None:
        try:
            states.append(service.propose(command("k-2")).state)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(adapter.writes) == 1
    assert State.ACCEPTED in states


def test_a_ledger_failure_is_ledger_unavailable(
    parts: tuple[ProposalService, FailingAudit, CountingAdapter, Ledger],
) -> None:
    service, _, adapter, ledger = parts
    ledger._conn.execute("DROP TABLE proposals")
    with pytest.raises(LedgerUnavailable) as info:
        service.propose(command("k-3"))
    assert info.value.status is grpc.StatusCode.UNAVAILABLE
    assert not adapter.writes


def test_an_approval_whose_window_ended_mints_no_token_and_writes_nothing(
    parts: tuple[ProposalService, FailingAudit, CountingAdapter, Ledger],
) -> None:
    # An approved proposal a process left behind, found after its approval window ended.
    service, audit, adapter, store = parts
    record = service.propose(command("k-lapse"))
    assert record.state is State.ACCEPTED  # autonomous: make one that waited for approval
    held = store.insert_or_get(
        replace(
            record,
            proposal_id="pr-held",
            idempotency_key="k-held",
            state=State.APPROVED,
            tier="approval",
            expires_at="2000-01-01T00:00:00.000000+00:00",
        )
    )[0]
    lapsed = service.resume(held)
    assert lapsed.state is State.EXPIRED
    assert lapsed.reasons[-1]["code"] == "approval.lapsed"
    assert len(adapter.writes) == 1  # only the autonomous one
    kinds = [json.loads(line)["kind"] for line in audit.log.path.read_text().splitlines()]
    assert kinds.count("token.minted") == 1
