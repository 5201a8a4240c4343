"""The ProposalStore contract (sidecar/storage/store.py) as one suite of tests every backend must pass.

A test module subclasses ProposalStoreSuite and provides a `backend` fixture (a fresh, empty
store location of one backend: tests/storage/backends.py); tests/storage/test_store.py does that
for every backend. Each test states one property and fails when a backend breaks it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import TRANSITIONS, State
from sidecar.storage.records import (
    ProposalContext,
    ProposalQuery,
    ProposalRecord,
    utc_now,
)
from sidecar.storage.store import ProposalStore
from tests.storage.backends import Backend
from tests.storage.samples import AWKWARD, approval, full_context, full_record, record

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
RFC3339_UTC_MICROS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
FIXED_COLUMNS = (
    "proposal_id",
    "state",
    "payload",
    "payload_sha256",
    "tenant_id",
    "agent_id",
    "idempotency_key",
    "created_at",
)
# Not columns, or not plain names: each must be refused, never spliced into SQL.
UNKNOWN_COLUMNS = (
    "nonexistent",
    "approval_id",
    "roles",
    "Tier",
    "tier = 'x', state",
    "tier; DROP TABLE proposals; --",
    "",
)
RACERS = 8
PROCESS_RACERS = 4


def tick(after: str) -> None:
    """Wait until utc_now() sorts after `after`, so the next timestamp the store takes is later."""
    while utc_now() <= after:
        time.sleep(0.0001)


def race(n: int, attempt: Callable[[int], T]) -> list[T | IllegalTransition]:
    """Run attempt(0..n-1) on n threads released together; IllegalTransition is an outcome,
    any other exception fails the test."""
    start = threading.Barrier(n)

    def run(i: int) -> T | IllegalTransition:
        start.wait()
        try:
            return attempt(i)
        except IllegalTransition as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def race_all(n: int, attempt: Callable[[int], T]) -> list[T]:
    """Run attempt(0..n-1) on n threads released together; every one must return."""
    start = threading.Barrier(n)

    def run(i: int) -> T:
        start.wait()
        return attempt(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def same_float(a: float, b: float) -> bool:
    """Equal to the bit (so -0.0 is not 0.0)."""
    return struct.pack(">d", a) == struct.pack(">d", b)


def stored_as(store: ProposalStore, given: ProposalRecord) -> ProposalRecord:
    """`given` with the timestamps the store gave it: what a round trip must return."""
    stored = store.get(given.proposal_id)
    assert stored is not None
    return replace(given, created_at=stored.created_at, updated_at=stored.updated_at)


def insert_in_order(
    store: ProposalStore, records: Sequence[ProposalRecord]
) -> list[ProposalRecord]:
    """Insert one after another with strictly increasing creation times; the stored records."""
    out: list[ProposalRecord] = []
    for rec in records:
        if out:
            tick(out[-1].created_at)
        stored, created = store.insert_or_get(rec)
        assert created
        out.append(stored)
    return out


def xfail_on(request: pytest.FixtureRequest, backend: Backend, reasons: dict[str, str]) -> None:
    """A known gap of some backends: expected to fail there (strictly: a fix must remove it)."""
    if backend.name in reasons:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reasons[backend.name]))


# The data set `find` is checked on, inserted in this order (ids descending, so an order by
# id alone is caught), and the queries with the ids each must find, in order.
FIND_DATA: tuple[ProposalRecord, ...] = (
    record("pr-9", tenant_id="t1", agent_id="a1", state=State.PENDING_APPROVAL, tier="approval",
           patient_id="p1", expires_at="2030-01-01T00:00:00.000000+00:00",
           escalate_at="2029-06-01T00:00:00.000000+00:00"),
    record("pr-8", tenant_id="t1", agent_id="a2", state=State.APPROVED, tier="autonomous",
           patient_id="p2", resource_type="Condition"),
    record("pr-7", tenant_id="t2", agent_id="a1", state=State.PENDING_APPROVAL, tier="approval",
           patient_id="p1", expires_at="2029-01-01T00:00:00.000000+00:00",
           escalate_at="2028-06-01T00:00:00.000000+00:00",
           escalated_at="2028-06-01T00:00:05.000000+00:00"),
    record("pr-6", tenant_id="t1", agent_id="a1", state=State.BLOCKED, tier="blocked",
           patient_id="P1"),
    record("pr-5", tenant_id="t1", agent_id="a1", state=State.PENDING_APPROVAL,
           tier="dual_approval", patient_id="p1", resource_type="Condition",
           expires_at="2031-01-01T00:00:00.000000+00:00",
           escalate_at="2030-06-01T00:00:00.000000+00:00"),
    record("pr-4", tenant_id="t1 ", agent_id="a1", state=State.SUBMITTED, tier="approval",
           patient_id="p1"),
    record("pr-3", tenant_id="T1", agent_id="a1", state=State.PENDING_APPROVAL, tier="approval",
           patient_id="p%", expires_at="2029-06-01T00:00:00.000000+00:00"),
    record("pr-2", tenant_id="t1", agent_id="a1", state=State.EXPIRED, tier="approval",
           patient_id="p1", expires_at="2020-01-01T00:00:00.000000+00:00",
           escalate_at="2019-01-01T00:00:00.000000+00:00"),
    record("pr-10", tenant_id="t1", agent_id="a1", state=State.VALIDATED, patient_id="p_"),
)  # fmt: skip


@dataclass(frozen=True)
class FindCase:
    """A query (built from the stored data set, for creation times) and the ids it must find."""

    name: str
    build: Callable[[list[ProposalRecord]], ProposalQuery]
    expected: tuple[str, ...]


HELD = State.PENDING_APPROVAL
FIND_CASES = (
    FindCase("everything", lambda s: ProposalQuery(),
             ("pr-9", "pr-8", "pr-7", "pr-6", "pr-5", "pr-4", "pr-3", "pr-2", "pr-10")),
    # Exact text: not "T1", not "t1 " (no case folding, no padding).
    FindCase("tenant", lambda s: ProposalQuery(tenant_id="t1"),
             ("pr-9", "pr-8", "pr-6", "pr-5", "pr-2", "pr-10")),
    FindCase("tenant_other_case", lambda s: ProposalQuery(tenant_id="T1"), ("pr-3",)),
    FindCase("one_state", lambda s: ProposalQuery(states=(HELD,)),
             ("pr-9", "pr-7", "pr-5", "pr-3")),
    FindCase("two_states", lambda s: ProposalQuery(states=(State.APPROVED, State.BLOCKED)),
             ("pr-8", "pr-6")),
    FindCase("a_state_none_is_in", lambda s: ProposalQuery(states=(State.RECONCILED,)), ()),
    FindCase("tier", lambda s: ProposalQuery(tier="approval"),
             ("pr-9", "pr-7", "pr-4", "pr-3", "pr-2")),
    FindCase("tier_empty", lambda s: ProposalQuery(tier=""), ("pr-10",)),
    FindCase("patient", lambda s: ProposalQuery(patient_id="p1"),
             ("pr-9", "pr-7", "pr-5", "pr-4", "pr-2")),
    # LIKE wildcards are plain characters: "p%" finds only "p%".
    FindCase("patient_percent", lambda s: ProposalQuery(patient_id="p%"), ("pr-3",)),
    FindCase("patient_underscore", lambda s: ProposalQuery(patient_id="p_"), ("pr-10",)),
    FindCase("resource_type", lambda s: ProposalQuery(resource_type="Condition"),
             ("pr-8", "pr-5")),
    FindCase("agent", lambda s: ProposalQuery(agent_id="a2"), ("pr-8",)),
    FindCase("created_before", lambda s: ProposalQuery(created_before=s[3].created_at),
             ("pr-9", "pr-8", "pr-7")),
    FindCase("created_before_the_first", lambda s: ProposalQuery(created_before=s[0].created_at),
             ()),
    # Strictly before; an empty expires_at is "no window", never "expired".
    FindCase("expires_before",
             lambda s: ProposalQuery(expires_before="2030-01-01T00:00:00.000000+00:00"),
             ("pr-7", "pr-3", "pr-2")),
    # Strictly before; one already escalated (escalated_at set) is not due again.
    FindCase("escalation_due_before",
             lambda s: ProposalQuery(escalation_due_before="2030-06-01T00:00:00.000001+00:00"),
             ("pr-9", "pr-5", "pr-2")),
    FindCase("limit", lambda s: ProposalQuery(limit=3), ("pr-9", "pr-8", "pr-7")),
    FindCase("limit_zero", lambda s: ProposalQuery(limit=0), ()),
    FindCase("limit_negative", lambda s: ProposalQuery(limit=-5), ()),
    FindCase("held_and_expiring_in_tenant",
             lambda s: ProposalQuery(tenant_id="t1", states=(HELD,),
                                     expires_before="2040-01-01T00:00:00.000000+00:00"),
             ("pr-9", "pr-5")),
    FindCase("all_criteria",
             lambda s: ProposalQuery(
                 tenant_id="t1", states=(HELD, State.EXPIRED), tier="approval",
                 patient_id="p1", resource_type="Observation", agent_id="a1",
                 created_before=s[-1].created_at,
                 expires_before="2035-01-01T00:00:00.000000+00:00",
                 escalation_due_before="2035-01-01T00:00:00.000000+00:00", limit=5),
             ("pr-9", "pr-2")),
    FindCase("all_criteria_but_one_fails",
             lambda s: ProposalQuery(
                 tenant_id="t1", states=(HELD, State.EXPIRED), tier="approval",
                 patient_id="p1", resource_type="Observation", agent_id="a2"),
             ()),
)  # fmt: skip


class ProposalStoreSuite:
    """The contract. A subclass provides the `backend` fixture."""

    @pytest.fixture
    def store(self, backend: Backend) -> ProposalStore:
        return backend.open()

    # --- idempotent insert ---------------------------------------------------------------

    def test_insert_creates_and_stamps_the_record(self, store: ProposalStore) -> None:
        given = record("pr-1", created_at="1999-01-01", updated_at="1999-01-02")
        before = utc_now()
        stored, created = store.insert_or_get(given)
        assert created
        # The store's clock, not the caller's, dates the record: no backdating.
        assert RFC3339_UTC_MICROS.fullmatch(stored.created_at), stored.created_at
        assert before <= stored.created_at <= utc_now()
        assert stored.updated_at == stored.created_at
        assert stored == replace(given, created_at=stored.created_at, updated_at=stored.updated_at)
        assert store.get("pr-1") == stored

    def test_get_of_an_unknown_proposal_is_none(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1"))
        assert store.get("pr-2") is None
        assert store.get("") is None
        assert store.get("PR-1") is None

    def test_same_key_returns_the_first_record_unchanged(self, store: ProposalStore) -> None:
        first, _ = store.insert_or_get(record("pr-1", key="k"))
        tick(first.created_at)
        second = record(
            "pr-2", key="k", payload_sha256="b" * 64, payload=b"{}", state=State.RECEIVED
        )
        again, created = store.insert_or_get(second)
        assert not created
        assert again == first  # the first record, timestamps included: nothing was rewritten
        assert store.get("pr-2") is None
        assert store.find(ProposalQuery()) == [first]

    def test_same_key_returns_the_current_record(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", key="k"))
        moved = store.transition("pr-1", State.VALIDATED, State.APPROVED, tier="autonomous")
        again, created = store.insert_or_get(record("pr-1", key="k"))
        assert not created
        assert again == moved

    def test_key_is_scoped_by_tenant_and_agent(self, store: ProposalStore) -> None:
        variants = [
            record("pr-1", key="k", tenant_id="t1", agent_id="a1"),
            record("pr-2", key="k", tenant_id="t2", agent_id="a1"),
            record("pr-3", key="k", tenant_id="t1", agent_id="a2"),
            record("pr-4", key="K", tenant_id="t1", agent_id="a1"),
            record("pr-5", key="k ", tenant_id="t1", agent_id="a1"),
            # Concatenations that meet: a store keying on tenant+agent+key as one string fails.
            record("pr-6", key="k", tenant_id="t1a", agent_id="1"),
        ]
        for rec in variants:
            stored, created = store.insert_or_get(rec)
            assert created, rec.proposal_id
            assert stored.proposal_id == rec.proposal_id
        assert {r.proposal_id for r in store.find(ProposalQuery())} == {
            r.proposal_id for r in variants
        }

    def test_a_proposal_id_under_another_key_is_refused(
        self, store: ProposalStore, backend: Backend
    ) -> None:
        first, _ = store.insert_or_get(record("pr-1", key="k1"))
        # Never "the record of that id" nor a silent no-op: the caller asked for a new one.
        with pytest.raises(backend.errors):
            store.insert_or_get(record("pr-1", key="k2", payload_sha256="b" * 64))
        assert store.get("pr-1") == first
        assert store.find(ProposalQuery()) == [first]

    # --- exact round trip ----------------------------------------------------------------

    def test_the_full_sample_sets_every_field(self) -> None:
        """So the round trip below covers every column: a new field must be added here too."""
        full = full_record()
        for f in fields(ProposalRecord):
            default = f.default_factory() if callable(f.default_factory) else f.default
            assert getattr(full, f.name) not in ("", (), {}, 0, None, default), f.name
        context = full_context()
        for f in fields(ProposalContext):
            assert getattr(context, f.name) not in ("", (), {}, 0, None, f.default), f.name

    @pytest.mark.parametrize("kind", ["plain", "full"])
    def test_every_field_round_trips_exactly(self, store: ProposalStore, kind: str) -> None:
        given = record("pr-1") if kind == "plain" else full_record("pr-1")
        stored, _ = store.insert_or_get(given)
        expected = stored_as(store, given)
        assert stored == expected
        got = store.get("pr-1")
        assert got == expected
        assert got is not None
        assert type(got.payload) is bytes
        assert got.payload == given.payload
        assert type(got.state) is State
        for name in ("fields", "reasons", "approver_roles"):
            assert type(getattr(got, name)) is tuple, name
        assert type(got.context.evidence_refs) is tuple
        assert same_float(got.context.confidence, given.context.confidence)
        assert store.find(ProposalQuery()) == [expected]
        assert store.insert_or_get(given) == (expected, False)

    @pytest.mark.parametrize("method", ["transition", "update"])
    def test_columns_set_later_round_trip(self, store: ProposalStore, method: str) -> None:
        store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        full = full_record()
        updates = {
            f.name: getattr(full, f.name)
            for f in fields(ProposalRecord)
            if f.name not in (*FIXED_COLUMNS, "updated_at")
        }
        if method == "transition":
            # `target` is also transition()'s parameter: that column can only be set by update().
            del updates["target"]
            changed = store.transition("pr-1", HELD, State.APPROVED, **updates)
            expected = replace(full, state=State.APPROVED, target="Observation")
        else:
            changed = store.update("pr-1", HELD, **updates)
            expected = replace(full, state=HELD)
        expected = replace(
            expected,
            **{name: getattr(changed, name) for name in FIXED_COLUMNS if name != "state"},
            updated_at=changed.updated_at,
        )
        assert changed == expected
        assert store.get("pr-1") == expected

    @pytest.mark.parametrize(
        "value",
        [
            0.0,
            -0.0,
            1.0,
            0.1 + 0.2,
            1 / 3,
            5e-324,
            2.2250738585072014e-308,
            1.7976931348623157e308,
            1e-7,
            123456789.123456789,
            1e16 + 2.0,
        ],
    )
    def test_confidence_floats_round_trip_to_the_bit(
        self, store: ProposalStore, value: float
    ) -> None:
        store.insert_or_get(record("pr-1", context=replace(full_context(), confidence=value)))
        got = store.get("pr-1")
        assert got is not None
        assert same_float(got.context.confidence, value), (got.context.confidence, value)

    def test_empty_payload_and_empty_json_round_trip(self, store: ProposalStore) -> None:
        given = record(
            "pr-1",
            payload=b"",
            summary={},
            obligations={},
            rejection={},
            context=replace(full_context(), evidence_refs=(), agent_scopes=()),
        )
        store.insert_or_get(given)
        assert store.get("pr-1") == stored_as(store, given)

    def test_text_with_nul_is_stored_exactly_or_refused(
        self, store: ProposalStore, backend: Backend
    ) -> None:
        """PostgreSQL text cannot hold U+0000 (validation refuses it before the store, strict_json);
        whatever a backend does, it must not store something else silently."""
        given = record("pr-1", trace_id="a\x00b", fields=("x\x00y",))
        try:
            store.insert_or_get(given)
        except backend.errors:
            assert store.get("pr-1") is None
            return
        assert store.get("pr-1") == stored_as(store, given)

    # --- compare-and-set -----------------------------------------------------------------

    def test_transition_moves_sets_columns_and_nothing_else(self, store: ProposalStore) -> None:
        before, _ = store.insert_or_get(full_record("pr-1"))
        tick(before.updated_at)
        moved = store.transition(
            "pr-1", State.PENDING_APPROVAL, State.APPROVED, tier="approval", fhir_id="x"
        )
        assert moved.state is State.APPROVED
        assert moved.created_at == before.created_at
        assert moved.updated_at > before.updated_at
        assert moved == replace(
            before, state=State.APPROVED, tier="approval", fhir_id="x", updated_at=moved.updated_at
        )
        assert store.get("pr-1") == moved

    def test_transition_from_a_state_the_proposal_is_not_in_is_refused(
        self, store: ProposalStore
    ) -> None:
        before, _ = store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        with pytest.raises(IllegalTransition):
            store.transition("pr-1", State.VALIDATED, State.APPROVED, tier="stale")
        assert store.get("pr-1") == before

    def test_transition_of_an_unknown_proposal_is_refused(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1"))
        with pytest.raises(IllegalTransition):
            store.transition("pr-2", State.VALIDATED, State.APPROVED)
        with pytest.raises(IllegalTransition):
            store.update("pr-2", State.VALIDATED, tier="x")
        assert store.get("pr-2") is None

    def test_a_second_mover_with_the_old_state_loses(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1"))
        store.transition("pr-1", State.VALIDATED, State.PENDING_APPROVAL, tier="approval")
        with pytest.raises(IllegalTransition):
            store.transition("pr-1", State.VALIDATED, State.APPROVED, tier="autonomous")
        got = store.get("pr-1")
        assert got is not None
        assert (got.state, got.tier) == (State.PENDING_APPROVAL, "approval")

    def test_every_move_the_table_allows_is_made(self, store: ProposalStore) -> None:
        n = 0
        for current, targets in TRANSITIONS.items():
            for target in targets:
                n += 1
                store.insert_or_get(record(f"pr-{n}", state=current))
                moved = store.transition(f"pr-{n}", current, target, tier="moved")
                assert (moved.state, moved.tier) == (target, "moved"), (current, target)

    def test_every_move_the_table_forbids_is_refused_before_the_row_is_touched(
        self, store: ProposalStore
    ) -> None:
        for current in State:
            pid = f"pr-{current.value}"
            before, _ = store.insert_or_get(record(pid, state=current))
            for target in State:
                if target in TRANSITIONS.get(current, frozenset()):
                    continue
                # The proposal *is* in `current`: only the lifecycle table can refuse this.
                with pytest.raises(IllegalTransition):
                    store.transition(pid, current, target, tier="touched")
            assert store.get(pid) == before, current

    def test_update_sets_columns_but_not_the_state(self, store: ProposalStore) -> None:
        before, _ = store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        tick(before.updated_at)
        stamp = utc_now()
        updated = store.update(
            "pr-1",
            State.PENDING_APPROVAL,
            escalated_at=stamp,
            reasons=({"code": "escalated", "message": AWKWARD},),
        )
        assert updated.state is State.PENDING_APPROVAL
        assert updated.updated_at > before.updated_at
        assert updated == replace(
            before,
            escalated_at=stamp,
            updated_at=updated.updated_at,
            reasons=({"code": "escalated", "message": AWKWARD},),
        )
        assert store.get("pr-1") == updated

    def test_update_only_in_the_expected_state(self, store: ProposalStore) -> None:
        before, _ = store.insert_or_get(record("pr-1", state=State.APPROVED))
        with pytest.raises(IllegalTransition):
            store.update("pr-1", State.PENDING_APPROVAL, escalated_at=utc_now())
        assert store.get("pr-1") == before

    @pytest.mark.parametrize("column", FIXED_COLUMNS)
    @pytest.mark.parametrize("method", ["transition", "update"])
    def test_fixed_columns_cannot_be_set(
        self, store: ProposalStore, column: str, method: str
    ) -> None:
        before, _ = store.insert_or_get(record("pr-1", state=State.VALIDATED))
        value: Any = {
            "proposal_id": "pr-2",
            "state": State.BLOCKED,
            "payload": b"{}",
            "payload_sha256": "f" * 64,
            "tenant_id": "other-tenant",
            "agent_id": "other-agent",
            "idempotency_key": "other-key",
            "created_at": "1999-01-01T00:00:00.000000+00:00",
        }[column]
        # `proposal_id` is also the methods' first parameter, so Python itself refuses it as a
        # keyword (TypeError) before the store can (ValueError); either way it is not set.
        refused = (ValueError, TypeError) if column == "proposal_id" else ValueError
        call = getattr(store, method)
        args = ("pr-1", State.VALIDATED, State.APPROVED)[: 3 if method == "transition" else 2]
        with pytest.raises(refused):
            call(*args, **{column: value})
        assert store.get("pr-1") == before
        assert store.get("pr-2") is None

    @pytest.mark.parametrize("column", UNKNOWN_COLUMNS)
    def test_unknown_columns_are_refused(self, store: ProposalStore, column: str) -> None:
        before, _ = store.insert_or_get(record("pr-1"))
        with pytest.raises(ValueError, match="cannot update column"):
            store.transition("pr-1", State.VALIDATED, State.APPROVED, **{column: "x"})
        with pytest.raises(ValueError, match="cannot update column"):
            store.update("pr-1", State.VALIDATED, **{column: "x"})
        assert store.get("pr-1") == before
        assert len(store.find(ProposalQuery())) == 1

    def test_updated_at_is_the_stores_own(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        updated = store.update(
            "pr-1", State.PENDING_APPROVAL, updated_at="1999-01-01T00:00:00.000000+00:00"
        )
        assert updated.updated_at > "2000"

    def test_identity_columns_cannot_be_changed(
        self, store: ProposalStore, backend: Backend, request: pytest.FixtureRequest
    ) -> None:
        before, _ = store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        for column in ("tenant_id", "agent_id", "idempotency_key", "payload_sha256"):
            with pytest.raises(ValueError, match=column):
                store.update("pr-1", State.PENDING_APPROVAL, **{column: "other"})
        assert store.get("pr-1") == before

    # --- concurrency ---------------------------------------------------------------------

    def test_racing_transitions_one_wins(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        outcomes = race(
            RACERS,
            lambda i: store.transition(
                "pr-1",
                State.PENDING_APPROVAL,
                State.APPROVED if i % 2 else State.REJECTED,
                tier=f"racer-{i}",
            ),
        )
        won = [o for o in outcomes if isinstance(o, ProposalRecord)]
        assert len(won) == 1, outcomes
        assert store.get("pr-1") == won[0]

    def test_racing_updates_and_a_transition_lose_nothing(self, store: ProposalStore) -> None:
        """An update that succeeded happened while the proposal was still held: it is kept, and
        none lands after the move (each is a compare-and-set on the state too)."""
        store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))

        def attempt(i: int) -> ProposalRecord:
            if i == 0:
                return store.transition("pr-1", State.PENDING_APPROVAL, State.EXPIRED)
            return store.update("pr-1", State.PENDING_APPROVAL, policy_revision=f"r{i}")

        outcomes = race(RACERS, attempt)
        final = store.get("pr-1")
        assert final is not None
        assert final.state is State.EXPIRED
        moved = outcomes[0]
        assert isinstance(moved, ProposalRecord)
        assert final == moved  # no update after the move
        # Every update that succeeded came before the move, so the row keeps one of them (the
        # last to commit: not necessarily the latest updated_at, a time taken before the write).
        kept = {o.policy_revision for o in outcomes[1:] if isinstance(o, ProposalRecord)}
        assert final.policy_revision in (kept or {""})

    def test_racing_inserts_of_one_key_create_one(self, store: ProposalStore) -> None:
        outcomes = race_all(
            RACERS,
            lambda i: store.insert_or_get(record(f"pr-{i}", key="k", payload_sha256=str(i) * 64)),
        )
        created = [rec for rec, was_created in outcomes if was_created]
        assert len(created) == 1
        # The losers get the winner's record, not their own.
        assert all(rec == created[0] for rec, _ in outcomes)
        assert store.find(ProposalQuery()) == created

    def test_racing_approvals_of_one_reviewer_count_once(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        outcomes = race_all(
            RACERS, lambda i: store.add_approval(approval(f"ap-{i}", roles=(f"role-{i}",)))
        )
        created = [rec for rec, was_created in outcomes if was_created]
        assert len(created) == 1
        assert all(rec == created[0] for rec, _ in outcomes)
        assert store.approvals("pr-1") == created

    def test_two_store_instances_share_one_ledger(
        self, store: ProposalStore, backend: Backend
    ) -> None:
        other = backend.open()
        stored, _ = store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        assert other.get("pr-1") == stored
        assert other.insert_or_get(record("pr-x", key=stored.idempotency_key)) == (stored, False)
        ap, _ = other.add_approval(approval(proposal_id="pr-1"))
        assert store.approvals("pr-1") == [ap]
        moved = other.transition("pr-1", State.PENDING_APPROVAL, State.APPROVED)
        assert store.get("pr-1") == moved
        # Racing across the two instances: still exactly one winner.
        stores = (store, other)
        outcomes = race(
            RACERS,
            lambda i: stores[i % 2].transition(
                "pr-1", State.APPROVED, State.SUBMITTED, fhir_version=str(i)
            ),
        )
        assert sum(isinstance(o, ProposalRecord) for o in outcomes) == 1
        inserts = race_all(
            RACERS, lambda i: stores[i % 2].insert_or_get(record(f"pr-k{i}", key="shared"))
        )
        assert sum(created for _, created in inserts) == 1
        assert len({rec.proposal_id for rec, _ in inserts}) == 1

    def test_separate_processes_race_and_one_wins(
        self, store: ProposalStore, backend: Backend
    ) -> None:
        store.insert_or_get(record("race-cas", state=State.VALIDATED))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        racers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.storage.racer", json.dumps(backend.spec()), str(i)],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(PROCESS_RACERS)
        ]
        try:
            for racer in racers:
                assert racer.stdout is not None
                assert racer.stdout.readline().strip() == "ready"
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            results = []
            for racer in racers:
                out, _ = racer.communicate(timeout=60)
                assert racer.returncode == 0, out
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for racer in racers:
                if racer.poll() is None:
                    racer.kill()
                    racer.wait()
        assert sum(r["won"] for r in results) == 1, results
        assert sum(r["created"] for r in results) == 1, results
        assert len({r["id"] for r in results}) == 1, results
        winner = next(str(i) for i, r in enumerate(results) if r["won"])
        final = store.get("race-cas")
        assert final is not None
        assert (final.state, final.tier) == (State.APPROVED, winner)

    # --- find ----------------------------------------------------------------------------

    @pytest.mark.parametrize("case", FIND_CASES, ids=[c.name for c in FIND_CASES])
    def test_find_matches_the_contract(self, store: ProposalStore, case: FindCase) -> None:
        stored = insert_in_order(store, FIND_DATA)
        found = store.find(case.build(stored))
        assert tuple(r.proposal_id for r in found) == case.expected
        by_id = {r.proposal_id: r for r in stored}
        assert found == [by_id[pid] for pid in case.expected]  # whole records, not just ids

    def test_find_is_oldest_first_whatever_the_ids(self, store: ProposalStore) -> None:
        stored = insert_in_order(store, [record(pid) for pid in ("pr-c", "pr-a", "pr-b", "PR-0")])
        assert [r.proposal_id for r in store.find(ProposalQuery())] == [
            "pr-c",
            "pr-a",
            "pr-b",
            "PR-0",
        ]
        assert store.find(ProposalQuery(limit=2)) == stored[:2]
        # A move does not reorder: the order is by creation, not by the last change.
        store.transition("pr-c", State.VALIDATED, State.APPROVED)
        assert store.find(ProposalQuery())[0].proposal_id == "pr-c"

    def test_created_before_is_strict(self, store: ProposalStore) -> None:
        first, second = insert_in_order(store, [record("pr-1"), record("pr-2")])
        assert store.find(ProposalQuery(created_before=first.created_at)) == []
        assert store.find(ProposalQuery(created_before=second.created_at)) == [first]
        assert store.find(ProposalQuery(created_before=utc_now())) == [first, second]

    def test_expiry_and_escalation_bounds_are_strict(self, store: ProposalStore) -> None:
        at = "2030-01-01T00:00:00.000000+00:00"
        store.insert_or_get(
            record("pr-1", state=State.PENDING_APPROVAL, expires_at=at, escalate_at=at)
        )
        assert store.find(ProposalQuery(expires_before=at)) == []
        assert store.find(ProposalQuery(escalation_due_before=at)) == []
        later = "2030-01-01T00:00:00.000001+00:00"
        assert [r.proposal_id for r in store.find(ProposalQuery(expires_before=later))] == ["pr-1"]
        due = store.find(ProposalQuery(escalation_due_before=later))
        assert [r.proposal_id for r in due] == ["pr-1"]
        # Once the escalation is recorded it is no longer due.
        store.update("pr-1", State.PENDING_APPROVAL, escalated_at=later)
        assert store.find(ProposalQuery(escalation_due_before=later)) == []

    def test_find_of_many_pages_by_limit(self, store: ProposalStore) -> None:
        for i in range(30):
            store.insert_or_get(record(f"pr-{i:02}"))
        everything = store.find(ProposalQuery())
        assert len(everything) == 30
        assert store.find(ProposalQuery(limit=7)) == everything[:7]
        assert store.find(ProposalQuery(limit=30)) == everything
        assert store.find(ProposalQuery(limit=31)) == everything

    # --- approvals -----------------------------------------------------------------------

    def test_an_approval_is_stored_once_per_reviewer(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        first, created = store.add_approval(
            approval("ap-1", roles=("physician", AWKWARD), fhir_user="Practitioner/" + AWKWARD)
        )
        assert created
        assert RFC3339_UTC_MICROS.fullmatch(first.created_at)
        again, created_again = store.add_approval(
            approval("ap-2", roles=("nurse",), payload_sha256="b" * 64, fhir_user="")
        )
        assert not created_again
        assert again == first
        assert store.approvals("pr-1") == [first]

    def test_a_reviewer_is_an_issuer_and_subject_pair(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        store.insert_or_get(record("pr-2", state=HELD))
        given = [
            approval("ap-1", issuer="https://a", subject="s"),
            approval("ap-2", issuer="https://b", subject="s"),
            approval("ap-3", issuer="https://a", subject="t"),
            approval("ap-4", issuer="https://a", subject="S"),
            approval("ap-5", issuer="https://a", subject="s", proposal_id="pr-2"),
            # Concatenations that meet: issuer+subject is not one string.
            approval("ap-6", issuer="https://as", subject=""),
        ]
        for ap in given:
            assert store.add_approval(ap)[1], ap.approval_id
        assert [a.approval_id for a in store.approvals("pr-1")] == [
            "ap-1",
            "ap-2",
            "ap-3",
            "ap-4",
            "ap-6",
        ]
        assert [a.approval_id for a in store.approvals("pr-2")] == ["ap-5"]

    def test_approvals_round_trip_and_keep_a_given_time(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        given = approval(
            "ap-1",
            roles=(),
            fhir_user="",
            payload_sha256="c" * 64,
            issuer=AWKWARD,
            subject=AWKWARD,
            created_at="2030-01-01T00:00:00.000000+00:00",
        )
        assert store.add_approval(given) == (given, True)
        assert store.approvals("pr-1") == [given]
        assert type(store.approvals("pr-1")[0].roles) is tuple

    def test_approvals_are_oldest_first_then_by_id_bytewise(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        t1, t2 = "2030-01-01T00:00:01.000000+00:00", "2030-01-01T00:00:02.000000+00:00"
        given = [  # inserted in this order
            approval("a-2", subject="r1", created_at=t2),
            approval("B-3", subject="r2", created_at=t2),
            approval("a-1", subject="r3", created_at=t2),
            approval("z-9", subject="r4", created_at=t1),
        ]
        for ap in given:
            store.add_approval(ap)
        # Ties on the time are broken by id as bytes ("B" < "a"), as SQLite compares text:
        # a backend comparing by a locale's collation would put "a-1" first.
        assert [a.approval_id for a in store.approvals("pr-1")] == ["z-9", "B-3", "a-1", "a-2"]

    def test_approvals_of_an_unknown_proposal_are_none(self, store: ProposalStore) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        store.add_approval(approval(proposal_id="pr-1"))
        assert store.approvals("pr-2") == []
        assert store.approvals("") == []

    def test_an_approval_id_is_not_reused_for_another_reviewer(
        self, store: ProposalStore, backend: Backend
    ) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        first, _ = store.add_approval(approval("ap-1", subject="r1"))
        with pytest.raises(backend.errors):
            store.add_approval(approval("ap-1", subject="r2"))
        assert store.approvals("pr-1") == [first]

    def test_an_approval_must_name_a_stored_proposal(
        self, store: ProposalStore, backend: Backend, request: pytest.FixtureRequest
    ) -> None:
        with pytest.raises((IllegalTransition, *backend.errors)):
            store.add_approval(approval(proposal_id="pr-absent"))
        assert store.approvals("pr-absent") == []

    @pytest.mark.parametrize(
        "state", [s for s in State if s is not HELD], ids=lambda s: s.value
    )
    def test_an_approval_is_added_only_while_pending_approval(
        self, store: ProposalStore, state: State
    ) -> None:
        store.insert_or_get(record("pr-1", state=state))
        with pytest.raises(IllegalTransition):
            store.add_approval(approval("ap-1"))
        assert store.approvals("pr-1") == []

    def test_a_reviewer_who_approved_before_the_move_gets_the_stored_approval(
        self, store: ProposalStore
    ) -> None:
        store.insert_or_get(record("pr-1", state=HELD))
        first, _ = store.add_approval(approval("ap-1", subject="r1"))
        store.transition("pr-1", HELD, State.APPROVED)
        assert store.add_approval(approval("ap-1", subject="r1")) == (first, False)
        with pytest.raises(IllegalTransition):
            store.add_approval(approval("ap-2", subject="r2"))
        assert store.approvals("pr-1") == [first]

    def test_approvals_racing_the_move_out_of_pending_are_all_counted_or_refused(
        self, store: ProposalStore
    ) -> None:
        # The approvals a decision reads after moving are all there will ever be: an approval
        # racing the move is either stored before it or refused.
        for round_ in range(5):
            pid = f"pr-{round_}"
            store.insert_or_get(record(pid, state=HELD))

            def attempt(i: int, pid: str = pid) -> object:
                if i == 0:
                    store.transition(pid, HELD, State.APPROVED)
                    return sorted(a.approval_id for a in store.approvals(pid))
                return store.add_approval(
                    approval(f"ap-{pid}-{i}", proposal_id=pid, subject=f"r{i}")
                )

            outcomes = race(RACERS, attempt)
            seen_at_move = outcomes[0]
            assert isinstance(seen_at_move, list)
            added = sorted(
                o[0].approval_id for o in outcomes[1:] if isinstance(o, tuple) and o[1]
            )
            assert seen_at_move == added
            assert sorted(a.approval_id for a in store.approvals(pid)) == added

    # --- opening, reopening, closing -----------------------------------------------------

    def test_a_reopened_store_sees_what_was_written(self, backend: Backend) -> None:
        first = backend.open()
        first.insert_or_get(full_record("pr-1"))
        ap, _ = first.add_approval(approval(proposal_id="pr-1"))
        moved = first.transition("pr-1", State.PENDING_APPROVAL, State.APPROVED, tier="x")
        listed = first.find(ProposalQuery())
        first.close()
        again = backend.open()
        assert again.get("pr-1") == moved
        assert again.approvals("pr-1") == [ap]
        assert again.find(ProposalQuery()) == listed
        assert again.insert_or_get(full_record("pr-1")) == (moved, False)

    def test_a_ledger_of_another_schema_version_is_refused(self, backend: Backend) -> None:
        backend.open().close()
        backend.set_schema_version(1)
        with pytest.raises(backend.errors, match="schema"):
            backend.open()

    def test_a_closed_store_fails_and_closing_twice_is_harmless(
        self, store: ProposalStore, backend: Backend
    ) -> None:
        store.insert_or_get(record("pr-1"))
        store.close()
        # A storage error (the service answers ledger.unavailable), never stale data.
        with pytest.raises(backend.errors):
            store.get("pr-1")
        with pytest.raises(backend.errors):
            store.insert_or_get(record("pr-2"))
        store.close()
        assert backend.open().get("pr-1") is not None
