"""Delivery of a write under every failure class: retried only when safe, looked up when ambiguous, never twice.

The sidecar's real parts run in-process (SQLite store, signed audit log, the shipped policy on the
embedded engine, real token minting); the adapter port is the seam, scripted per attempt, with an
EHR behind it that counts what it stores per payload (a conditional create stores nothing twice).
The clock is the test's, so backoff and Retry-After waits are exact, not slept. The same rules
through real processes and an injecting FHIR store: tests/e2e/test_write_faults.py.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from chartgate import keys
from sidecar.adapter_client import AdapterOutcome, LookupOutcome, ReadBackOutcome
from sidecar.audit.log import AuditLog
from sidecar.config import SidecarConfig
from sidecar.consent import ConsentDirectory
from sidecar.errors import DeliveryUnavailable, WritesThrottled
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Decision, deny
from sidecar.policy.library import shipped_policy_dir
from sidecar.proposals.delivery import Delivery, RetryPolicy
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import ProposalService, ProposeCommand, proposal_id_for
from sidecar.storage.records import ProposalContext
from sidecar.storage.sqlite.store import SqliteStore
from sidecar.tokens.mint import TokenMinter

PATIENT = "p-123"
# Accepted, and (once a sweep read it back) reconciled: written either way.
WRITTEN = frozenset({State.ACCEPTED, State.RECONCILED})
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTICS = "Observation.valueQuantity.code: the unit is not UCUM"


class Killed(BaseException):
    """The sending process died: nothing after the write runs (BaseException, so no handler
    in the service can turn it into an outcome)."""


@dataclass
class Ehr:
    """What the EHR holds: stored copies per payload, and every attempt that reached it."""

    stored: Counter[bytes] = field(default_factory=Counter)
    sends: list[bytes] = field(default_factory=list)
    jtis: list[str] = field(default_factory=list)
    # The `attempt` each write's token carried (the adapter treats any but 1 as a resend).
    attempts: list[int] = field(default_factory=list)
    lookups: int = 0


class ScriptedAdapter:
    """The adapter port: each write takes the next scripted outcome (default: written)."""

    timeout_seconds = 10.0

    def __init__(self, ehr: Ehr) -> None:
        self.ehr = ehr
        self.script: list[str] = []
        self.retry_after = 0.0
        self.lookup_fails = False
        # Runs while a write is in flight (outside the lock): another replica's sweep, say.
        self.during_write: Callable[[], None] | None = None
        self.lock = threading.Lock()

    def _store(self, payload: bytes) -> bool:
        """A conditional create: a second copy of the same write is never stored."""
        existed = self.ehr.stored[payload] > 0
        if not existed:
            self.ehr.stored[payload] += 1
        return existed

    def write(self, token: str, canonical_payload: bytes) -> AdapterOutcome:
        if self.during_write is not None:
            hook, self.during_write = self.during_write, None
            hook()
        with self.lock:
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            self.ehr.jtis.append(claims["jti"])
            self.ehr.attempts.append(claims["authorization_details"][0]["attempt"])
            step = self.script.pop(0) if self.script else "ok"
            if step == "refused":  # connection refused: nothing reached the EHR
                return AdapterOutcome(ok=False, failure="transport", reason="adapter.unreachable")
            if step == "circuit":
                return AdapterOutcome(
                    ok=False,
                    failure="circuit_open",
                    reason="ehr.circuit_open",
                    retry_after=self.retry_after,
                )
            self.ehr.sends.append(canonical_payload)
            if step == "ok":
                existed = self._store(canonical_payload)
                return AdapterOutcome(
                    ok=True, fhir_id="obs-1", fhir_version="1", already_existed=existed,
                    http_status=200 if existed else 201,
                )  # fmt: skip
            if step == "lost":  # committed, then the answer was dropped
                self._store(canonical_payload)
                return AdapterOutcome(ok=False, failure="ambiguous", reason="ehr.no_answer")
            if step == "vanished":  # sent, no answer, and the EHR did not commit it
                return AdapterOutcome(ok=False, failure="ambiguous", reason="ehr.no_answer")
            if step == "killed":  # committed, then the sender died
                self._store(canonical_payload)
                raise Killed
            if step == "503":
                return AdapterOutcome(
                    ok=False, failure="server_error", reason="ehr.server_error", http_status=503
                )
            if step == "429":
                return AdapterOutcome(
                    ok=False,
                    failure="throttled",
                    reason="ehr.throttled",
                    http_status=429,
                    retry_after=self.retry_after,
                )
            if step == "400":
                return AdapterOutcome(
                    ok=False,
                    failure="validation",
                    reason="ehr.invalid",
                    http_status=400,
                    message=DIAGNOSTICS,
                )
            raise AssertionError(step)

    def lookup(self, token: str, canonical_payload: bytes) -> LookupOutcome:
        with self.lock:
            self.ehr.lookups += 1
            if self.lookup_fails:
                return LookupOutcome(found=False, failure="transport", reason="ehr.no_answer")
            if self.ehr.stored[canonical_payload]:
                return LookupOutcome(found=True, fhir_id="obs-1", fhir_version="1")
            return LookupOutcome(found=False)


class Reading(ScriptedAdapter):
    """With read-back: the EHR returns what it stored (altered by `alter` when set)."""

    def __init__(self, ehr: Ehr) -> None:
        super().__init__(ehr)
        self.alter: Callable[[dict[str, Any]], None] | None = None
        self.read_fails = False
        self.provenance = True
        self.raw: bytes | None = None  # the read-back's exact bytes, when set

    def read_back(
        self, token: str, canonical_payload: bytes, fhir_id: str, fhir_version: str
    ) -> ReadBackOutcome:
        if self.read_fails:
            return ReadBackOutcome(found=False, failure="transport", reason="ehr.no_answer")
        if not self.ehr.stored[canonical_payload]:
            return ReadBackOutcome(found=False)
        if self.raw is not None:
            return ReadBackOutcome(found=True, resource_json=self.raw, provenance_found=True)
        stored = {**json.loads(canonical_payload), "id": fhir_id, "meta": {"versionId": "1"}}
        if self.alter is not None:
            self.alter(stored)
        return ReadBackOutcome(
            found=True, resource_json=json.dumps(stored).encode(), provenance_found=self.provenance
        )


class Revisable:
    """The shipped policy on the embedded engine, until the test publishes a revision that
    blocks everything (as a security team tightening policy would)."""

    def __init__(self, inner: EmbeddedEngine) -> None:
        self.inner = inner
        self.tightened = False

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def revision(self) -> str:
        return self.inner.revision + ("-tightened" if self.tightened else "")

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        if self.tightened:
            return deny(
                "policy.tightened", "no autonomous writes", revision=self.revision, engine=self.name
            )
        return self.inner.evaluate(policy_input)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Parts:
    service: ProposalService
    adapter: Reading
    ehr: Ehr
    clock: Clock
    store: SqliteStore
    audit_path: Path
    engine: Revisable

    def kinds(self) -> list[str]:
        return [
            json.loads(line)["kind"] for line in self.audit_path.read_text().splitlines() if line
        ]


def build(
    tmp_path: Path, *, max_queued_writes: int = 100, max_attempts: int = 8, **settings: Any
) -> Parts:
    consents = tmp_path / "consents.json"
    consents.write_text(
        json.dumps([{"id": "c-1", "patient": PATIENT, "status": "active", "purposes": ["TREAT"]}])
    )
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "chartgate_config": {
                    "tenants": {"st-mary": {"autonomous_vital_signs_min_confidence": 0.9}}
                }
            }
        )
    )
    config = SidecarConfig(
        agent_id="scribe-agent",
        tenant_id="st-mary",
        agent_scopes=settings.pop("agent_scopes", ("patient/Observation.c", "patient/Patient.u")),
        consents_file=consents,
        policy_data=data,
        max_queued_writes=max_queued_writes,
        **settings,
    )
    store = SqliteStore(tmp_path / "ledger.sqlite3")
    audit_path = tmp_path / "audit.jsonl"
    ehr = Ehr()
    adapter = Reading(ehr)
    clock = Clock()
    engine = Revisable(EmbeddedEngine(shipped_policy_dir(), extra_data=data))
    service = ProposalService(
        config,
        store,
        engine,
        ConsentDirectory(consents),
        TokenMinter(
            keys.load_or_create(tmp_path / "t.jwk", "token"),
            issuer="chartgate-sidecar",
            audience="chartgate-adapter",
            ttl_seconds=60,
        ),
        adapter,
        AuditLog(audit_path, keys.load_or_create(tmp_path / "a.jwk", "audit")),
        clock=clock,
        retry=RetryPolicy(
            max_attempts=max_attempts,
            base_seconds=0.5,
            cap_seconds=30.0,
            max_total_seconds=900.0,
            index_delay_seconds=2.0,
        ),
        rng=random.Random(7),
    )
    return Parts(service, adapter, ehr, clock, store, audit_path, engine)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    built = build(tmp_path)
    yield built
    built.store.close()


def vital(value: float) -> ProposeCommand:
    return ProposeCommand(
        idempotency_key=f"k-{value}",
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{PATIENT}"},
                "valueQuantity": {"value": value},
            }
        ),
        context=ProposalContext(
            patient_id=PATIENT,
            encounter_id="",
            purpose_of_use="TREAT",
            on_behalf_of="",
            model_version="",
            prompt_version="",
            confidence=0.97,
            mode="live",
            evidence_refs=(),
            trace_id=uuid.uuid4().hex,
        ),
    )


def sweep(parts: Parts) -> None:
    parts.service.sweep_deliveries()


def current(parts: Parts, proposal_id: str) -> Any:
    return parts.service.get(proposal_id)


def test_a_503_is_retried_after_its_backoff_with_a_fresh_token_and_stored_once(
    parts: Parts,
) -> None:
    parts.adapter.script = ["503", "503", "ok"]
    record = parts.service.propose(vital(70))
    assert record.state is State.FAILED_RETRYABLE
    assert record.reasons[-1]["rule"] == "adapter.server_error"
    due = Delivery.of(record.delivery).next_attempt_at
    assert parts.clock.now < due <= parts.clock.now + 0.5  # attempt 1: full jitter under 0.5 s
    sweep(parts)  # not due yet: nothing is sent
    assert len(parts.ehr.sends) == 1
    parts.clock.now = due + 0.001
    sweep(parts)
    assert current(parts, record.proposal_id).state is State.FAILED_RETRYABLE
    assert len(parts.ehr.sends) == 2
    parts.clock.advance(1.001)  # attempt 2 waits at most 1 s
    sweep(parts)
    final = current(parts, record.proposal_id)
    assert final.state in WRITTEN
    assert final.fhir_id == "obs-1"
    assert len(parts.ehr.sends) == 3
    assert len(set(parts.ehr.jtis)) == 3  # a fresh one-write token for every attempt
    assert Delivery.of(final.delivery).jti == parts.ehr.jtis[-1]
    assert list(parts.ehr.stored.values()) == [1]
    assert [h["class"] for h in Delivery.of(final.delivery).history] == [
        "server_error",
        "server_error",
        "written",
    ]
    assert parts.kinds().count("token.minted") == 3


def test_429_retry_after_is_honoured_and_holds_new_writes_back(parts: Parts) -> None:
    parts.adapter.script = ["429"]
    parts.adapter.retry_after = 7.0
    record = parts.service.propose(vital(71))
    assert record.state is State.FAILED_RETRYABLE
    assert Delivery.of(record.delivery).next_attempt_at >= parts.clock.now + 7.0
    assert parts.service.backpressure_seconds() == pytest.approx(7.0)
    # A new write while the EHR asked for the pause waits, approved, without being sent.
    held = parts.service.propose(vital(72))
    assert held.state is State.APPROVED
    assert len(parts.ehr.sends) == 1
    parts.clock.advance(6.9)
    sweep(parts)
    assert len(parts.ehr.sends) == 1  # nothing before the EHR's Retry-After
    parts.clock.advance(0.2)
    sweep(parts)
    assert current(parts, record.proposal_id).state in WRITTEN
    assert current(parts, held.proposal_id).state in WRITTEN
    assert sorted(parts.ehr.stored.values()) == [1, 1]


def test_a_400_operation_outcome_is_final_never_retried_and_reaches_the_agent(
    parts: Parts,
) -> None:
    parts.adapter.script = ["400"]
    record = parts.service.propose(vital(73))
    assert record.state is State.FAILED_FINAL
    reason = record.reasons[-1]
    assert reason["rule"] == "adapter.validation"
    assert reason["message"] == DIAGNOSTICS
    parts.clock.advance(3600)
    sweep(parts)
    again = parts.service.propose(vital(73))  # the agent retries with the same key
    assert again.state is State.FAILED_FINAL
    assert len(parts.ehr.sends) == 1
    assert DIAGNOSTICS not in parts.audit_path.read_text()  # the EHR's words stay out of the log


def test_a_write_committed_whose_answer_was_lost_is_looked_up_not_resent(parts: Parts) -> None:
    parts.adapter.script = ["lost"]
    record = parts.service.propose(vital(74))
    assert record.state is State.AMBIGUOUS
    sweep(parts)  # within the index delay: not looked up yet
    assert parts.ehr.lookups == 0
    parts.clock.advance(2.01)
    sweep(parts)
    final = current(parts, record.proposal_id)
    assert final.state in WRITTEN
    assert final.fhir_id == "obs-1"
    assert parts.ehr.lookups == 1
    assert len(parts.ehr.sends) == 1
    assert list(parts.ehr.stored.values()) == [1]


def test_an_ambiguous_write_found_absent_is_resent_once(parts: Parts) -> None:
    parts.adapter.script = ["vanished", "ok"]
    record = parts.service.propose(vital(75))
    assert record.state is State.AMBIGUOUS
    parts.clock.advance(2.01)
    sweep(parts)
    final = current(parts, record.proposal_id)
    assert final.state in WRITTEN
    assert len(parts.ehr.sends) == 2
    assert list(parts.ehr.stored.values()) == [1]
    assert [h.get("result", h["class"]) for h in Delivery.of(final.delivery).history] == [
        "ambiguous",
        "absent",
        "written",
    ]


def test_propose_retried_with_the_same_key_learns_the_state_and_never_writes_twice(
    parts: Parts,
) -> None:
    parts.adapter.script = ["503"]
    first = parts.service.propose(vital(76))
    assert first.state is State.FAILED_RETRYABLE
    for _ in range(5):  # before the backoff is over: the state, no send
        assert parts.service.propose(vital(76)).state is State.FAILED_RETRYABLE
    assert len(parts.ehr.sends) == 1
    parts.clock.advance(1.0)
    results: list[State] = []
    threads = [
        threading.Thread(target=lambda: results.append(parts.service.propose(vital(76)).state))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(parts.ehr.sends) == 2  # eight concurrent retries, one resend
    assert current(parts, first.proposal_id).state in WRITTEN
    assert list(parts.ehr.stored.values()) == [1]


def test_a_write_out_of_attempts_is_dead_lettered_with_its_history(tmp_path: Path) -> None:
    parts = build(tmp_path, max_attempts=3)
    parts.adapter.script = ["503"] * 10
    record = parts.service.propose(vital(77))
    for _ in range(5):
        parts.clock.advance(60)
        sweep(parts)
    final = current(parts, record.proposal_id)
    assert final.state is State.DEAD_LETTERED
    assert final.reasons[-1]["code"] == "delivery.exhausted"
    assert len(parts.ehr.sends) == 3
    assert len(Delivery.of(final.delivery).history) == 3
    assert "write.dead_lettered" in parts.kinds()
    parts.store.close()


def test_a_sender_killed_after_the_ehr_committed_is_settled_by_looking_not_resending(
    parts: Parts,
) -> None:
    parts.adapter.script = ["killed"]
    with pytest.raises(Killed):
        parts.service.propose(vital(78))
    record = current(parts, proposal_id_for("st-mary", "scribe-agent", "k-78"))
    assert record.state is State.SUBMITTED  # the intent was recorded before the write left
    assert Delivery.of(record.delivery).jti == parts.ehr.jtis[0]
    parts.clock.advance(5)
    sweep(parts)  # another attempt may still be in flight: left alone
    assert current(parts, record.proposal_id).state is State.SUBMITTED
    parts.clock.advance(8)  # past the adapter's deadline and the margin
    sweep(parts)
    assert current(parts, record.proposal_id).state is State.AMBIGUOUS
    sweep(parts)
    final = current(parts, record.proposal_id)
    assert final.state in WRITTEN
    assert len(parts.ehr.sends) == 1  # looked up, never resent blind
    assert list(parts.ehr.stored.values()) == [1]
    # The agent's retry of the same key after the restart learns the outcome.
    assert parts.service.propose(vital(78)).state in WRITTEN


def test_with_the_circuit_open_writes_wait_within_a_bound_then_propose_is_refused(
    tmp_path: Path,
) -> None:
    parts = build(tmp_path, max_queued_writes=2)
    parts.adapter.script = ["circuit"]
    parts.adapter.retry_after = 5.0
    first = parts.service.propose(vital(80))
    assert first.state is State.FAILED_RETRYABLE
    assert first.reasons[-1]["rule"] == "adapter.circuit_open"
    queued = parts.service.propose(vital(81))
    assert queued.state is State.APPROVED  # waits within the bound
    with pytest.raises(WritesThrottled) as info:
        parts.service.propose(vital(82))
    assert info.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.reason == "delivery.backpressure"
    assert 4.0 <= info.value.retry_after_seconds <= 5.0
    # A retry of a proposal already stored still learns its state.
    assert parts.service.propose(vital(81)).state is State.APPROVED
    assert parts.ehr.sends == []
    parts.clock.advance(5.1)  # the EHR is back
    sweep(parts)
    assert parts.service.propose(vital(82)).state in WRITTEN
    for record in (first, queued):
        assert current(parts, record.proposal_id).state in WRITTEN
    assert sorted(parts.ehr.stored.values()) == [1, 1, 1]  # nothing lost, nothing twice
    parts.store.close()


def test_a_write_the_adapter_never_received_is_resent_when_it_is_back(parts: Parts) -> None:
    parts.adapter.script = ["refused", "refused"]
    record = parts.service.propose(vital(83))
    assert record.state is State.FAILED_RETRYABLE
    assert record.reasons[-1]["rule"] == "adapter.transport"
    for _ in range(3):
        parts.clock.advance(2)
        sweep(parts)
    assert current(parts, record.proposal_id).state in WRITTEN
    assert list(parts.ehr.stored.values()) == [1]


def park(parts: Parts, value: float, script: list[str]) -> Any:
    """Propose a write and sweep until its retries are spent."""
    parts.adapter.script = script
    record = parts.service.propose(vital(value))
    for _ in range(10):
        parts.clock.advance(60)
        sweep(parts)
    parked = current(parts, record.proposal_id)
    assert parked.state is State.DEAD_LETTERED
    return parked


def test_a_replay_looks_first_and_accepts_a_write_the_ehr_holds_without_sending(
    tmp_path: Path,
) -> None:
    parts = build(tmp_path, max_attempts=2)
    parts.adapter.lookup_fails = True  # committed, answer lost, and the EHR cannot be searched
    parked = park(parts, 90, ["lost"])
    assert parts.ehr.lookups == 2
    with pytest.raises(DeliveryUnavailable):
        parts.service.replay_dead_letter(parked, "ops#olga")
    assert current(parts, parked.proposal_id).state is State.DEAD_LETTERED  # nothing changed
    parts.adapter.lookup_fails = False
    replayed = parts.service.replay_dead_letter(parked, "ops#olga")
    assert replayed.state in WRITTEN
    assert len(parts.ehr.sends) == 1
    assert list(parts.ehr.stored.values()) == [1]
    parts.store.close()


def test_a_replay_sends_an_absent_write_with_a_fresh_token_and_budget(tmp_path: Path) -> None:
    parts = build(tmp_path, max_attempts=2)
    parked = park(parts, 91, ["503", "503", "503", "ok"])
    assert len(parts.ehr.sends) == 2
    replayed = parts.service.replay_dead_letter(parked, "ops#olga")
    assert replayed.state is State.FAILED_RETRYABLE  # the third 503, with a fresh budget
    parts.clock.advance(5)
    sweep(parts)
    assert current(parts, parked.proposal_id).state in WRITTEN
    assert len(set(parts.ehr.jtis)) == 4
    # Sent before: with its fresh budget a replay is still a resend, never a first attempt
    # (which would rewrite the first attempt's Provenance in a transaction).
    assert parts.ehr.attempts[0] == 1
    assert all(attempt > 1 for attempt in parts.ehr.attempts[1:])
    assert list(parts.ehr.stored.values()) == [1]
    assert "deadletter.replayed" in parts.kinds()
    parts.store.close()


def test_a_replay_under_a_policy_that_now_blocks_it_is_not_sent(tmp_path: Path) -> None:
    parts = build(tmp_path, max_attempts=2)
    parked = park(parts, 92, ["503", "503"])
    parts.engine.tightened = True
    refused = parts.service.replay_dead_letter(parked, "ops#olga")
    assert refused.state is State.FAILED_FINAL
    assert refused.reasons[-1]["code"] == "deadletter.policy_changed"
    assert any(r["code"] == "policy.tightened" for r in refused.reasons)
    assert len(parts.ehr.sends) == 2
    parts.store.close()


def test_a_discard_ends_an_absent_write_failed_and_sends_nothing(tmp_path: Path) -> None:
    parts = build(tmp_path, max_attempts=2)
    parked = park(parts, 93, ["503", "503"])
    discarded = parts.service.discard_dead_letter(parked, "ops#olga")
    assert discarded.state is State.FAILED_FINAL
    assert discarded.reasons[-1]["code"] == "deadletter.discarded"
    assert len(parts.ehr.sends) == 2
    assert parts.ehr.stored == Counter()
    parts.store.close()


def test_a_sender_slower_than_its_deadline_loses_to_the_sweeper_without_an_error(
    parts: Parts,
) -> None:
    def another_replica_sweeps_meanwhile() -> None:
        parts.clock.advance(13)  # past the adapter's deadline and the margin
        sweep(parts)

    parts.adapter.during_write = another_replica_sweeps_meanwhile
    record = parts.service.propose(vital(94))  # the agent gets a state, not an error
    assert record.state is State.AMBIGUOUS
    sweep(parts)
    assert current(parts, record.proposal_id).state in WRITTEN
    assert len(parts.ehr.sends) == 1
    assert list(parts.ehr.stored.values()) == [1]


def test_an_accepted_write_is_read_back_and_reconciled_or_queued_as_a_mismatch(
    parts: Parts,
) -> None:
    same = parts.service.propose(vital(95))
    assert same.state is State.ACCEPTED
    parts.adapter.alter = lambda stored: stored["valueQuantity"].update(value=95.0)
    sweep(parts)
    reconciled = current(parts, same.proposal_id)
    assert reconciled.state is State.RECONCILED
    assert reconciled.reconciliation["differences"] == [
        {"path": "valueQuantity.value", "severity": "normalised", "kind": "number_spelling"}
    ]
    changed = parts.service.propose(vital(96))
    parts.adapter.alter = lambda stored: stored["valueQuantity"].update(value=69)
    sweep(parts)
    mismatch = current(parts, changed.proposal_id)
    assert mismatch.state is State.MISMATCH
    assert {"path": "valueQuantity.value", "severity": "meaning-changing", "kind": "changed"} in (
        mismatch.reconciliation["differences"]
    )
    assert "write.reconciled" in parts.kinds()
    assert len(parts.ehr.sends) == 2  # reconciliation reads; it never writes again


def test_a_read_back_that_fails_is_retried_then_a_missing_provenance_is_a_mismatch(
    parts: Parts,
) -> None:
    record = parts.service.propose(vital(97))
    parts.adapter.read_fails = True
    sweep(parts)
    waiting = current(parts, record.proposal_id)
    assert waiting.state in WRITTEN
    assert waiting.reconciliation["attempts"] == 1
    parts.adapter.read_fails = False
    parts.adapter.provenance = False
    parts.clock.advance(5)
    sweep(parts)
    final = current(parts, record.proposal_id)
    assert final.state is State.MISMATCH
    assert {"path": "Provenance", "severity": "meaning-changing", "kind": "missing"} in (
        final.reconciliation["differences"]
    )
    assert final.reconciliation["attempts"] == 2


def test_a_hostile_read_back_is_a_mismatch_and_the_sweep_goes_on(parts: Parts) -> None:
    # An EHR answer nested past the parser's recursion: refused like an agent's, never an
    # exception that would stop every later reconciliation.
    first = parts.service.propose(vital(98))
    parts.adapter.raw = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    sweep(parts)
    assert current(parts, first.proposal_id).state is State.MISMATCH
    parts.adapter.raw = None
    second = parts.service.propose(vital(99))
    sweep(parts)
    assert current(parts, second.proposal_id).state is State.RECONCILED


def test_a_proposal_another_process_decided_first_is_reported_not_refused(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two calls with one key at once: while this one evaluates policy, the other decides and
    # sends the write. This one loses the compare-and-set and reports where the other got to.
    from sidecar.storage.records import ProposalQuery

    evaluate = parts.engine.evaluate
    raced: list[State] = []
    calls = 0

    def racing(policy_input: Mapping[str, Any]) -> Decision:
        nonlocal calls
        calls += 1
        if calls == 1:  # this call's evaluation: the other process decides in the meantime
            [waiting] = parts.store.find(ProposalQuery(states=(State.VALIDATED,)))
            raced.append(parts.service.resume(waiting).state)
        return evaluate(policy_input)

    monkeypatch.setattr(parts.engine, "evaluate", racing)
    record = parts.service.propose(vital(90))
    assert raced == [State.ACCEPTED]
    assert record.state in WRITTEN
    assert list(parts.ehr.stored.values()) == [1]
    assert len(parts.ehr.sends) == 1
