"""The ledger: idempotent insert, compare-and-set transitions, and the lifecycle table."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import TRANSITIONS, State, check_transition
from sidecar.storage.ledger import Ledger, ProposalRecord


def record(key: str = "k1", sha: str = "a" * 64) -> ProposalRecord:
    return ProposalRecord(
        proposal_id=f"pr-{key}",
        tenant_id="t",
        agent_id="a",
        idempotency_key=key,
        payload_sha256=sha,
        payload=b"{}",
        tool="fhir.create",
        resource_type="Observation",
        target="Observation",
        patient_id="p1",
        encounter_id="",
        trace_id="",
        state=State.VALIDATED,
    )


def test_same_key_returns_the_first_record(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    first, created = ledger.insert_or_get(record())
    again, created_again = ledger.insert_or_get(record(sha="b" * 64))
    assert created
    assert not created_again
    assert again.payload_sha256 == "a" * 64 == first.payload_sha256


def test_concurrent_inserts_with_one_key_create_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: ledger.insert_or_get(record("race")), range(32)))
    assert sum(created for _, created in results) == 1


def test_transition_is_compare_and_set(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.insert_or_get(record())
    moved = ledger.transition("pr-k1", State.VALIDATED, State.PENDING_APPROVAL, tier="approval")
    assert moved.state is State.PENDING_APPROVAL
    assert moved.tier == "approval"
    # A second mover that still believes the old state loses: no double approval, no lost update.
    with pytest.raises(IllegalTransition):
        ledger.transition("pr-k1", State.VALIDATED, State.APPROVED)
    assert ledger.get("pr-k1").state is State.PENDING_APPROVAL  # type: ignore[union-attr]


def test_state_survives_reopen(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.insert_or_get(record())
    ledger.transition(
        "pr-k1",
        State.VALIDATED,
        State.BLOCKED,
        reasons=({"code": "c", "message": "m", "rule": "r"},),
    )
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite3").get("pr-k1")
    assert reopened is not None
    assert reopened.state is State.BLOCKED
    assert reopened.reasons == ({"code": "c", "message": "m", "rule": "r"},)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (State.BLOCKED, State.APPROVED),
        (State.PENDING_APPROVAL, State.SUBMITTED),
        (State.ACCEPTED, State.SUBMITTED),
        (State.AMBIGUOUS, State.SUBMITTED),
        (State.REJECTED, State.APPROVED),
    ],
)
def test_illegal_transitions_are_refused(current: State, target: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, target)


def test_every_listed_transition_is_allowed() -> None:
    for current, targets in TRANSITIONS.items():
        for target in targets:
            check_transition(current, target)
    # Terminal states have no way out.
    for terminal in (State.BLOCKED, State.REJECTED, State.DEAD_LETTERED, State.RECONCILED):
        assert terminal not in TRANSITIONS
