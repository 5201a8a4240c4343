"""The ProposalStore interface every backend implements (one folder each; one shared test suite, tests/storage/)."""

from __future__ import annotations

from typing import Any, Protocol

from sidecar.proposals.lifecycle import State
from sidecar.storage.records import ApprovalRecord, ProposalQuery, ProposalRecord


class ProposalStore(Protocol):
    """Proposals and approvals, shared by every process that may continue a proposal.

    Idempotency is by (tenant, agent, idempotency key); a state change is a compare-and-set on
    the current state, so of several processes racing to move one proposal exactly one does (the
    others get IllegalTransition). Storage failures raise `sqlite3.Error` / driver errors, which
    the service maps to `ledger.unavailable`.
    """

    def insert_or_get(self, record: ProposalRecord) -> tuple[ProposalRecord, bool]:
        """Insert a new proposal, or return the one its (tenant, agent, key) already names.
        Returns (record, created)."""
        ...

    def get(self, proposal_id: str) -> ProposalRecord | None: ...

    def transition(
        self, proposal_id: str, expected: State, target: State, /, **updates: Any
    ) -> ProposalRecord:
        """Move from `expected` to `target` (the lifecycle table must allow it), setting other
        columns; raise IllegalTransition when the proposal is not in `expected`."""
        ...

    def update(self, proposal_id: str, expected: State, /, **updates: Any) -> ProposalRecord:
        """Set columns other than the state while the proposal is in `expected` (e.g. the time
        an escalation was recorded); raise IllegalTransition when it is not."""
        ...

    def find(self, query: ProposalQuery) -> list[ProposalRecord]:
        """Proposals matching `query`, oldest first, at most `query.limit`."""
        ...

    def add_approval(self, approval: ApprovalRecord) -> tuple[ApprovalRecord, bool]:
        """Record an approval once per (proposal, issuer, subject); returns (the stored one,
        created). A second approval by the same reviewer is not a second approval. Added only
        while the proposal is pending approval (atomically with respect to any transition out of
        it); otherwise IllegalTransition, unless this reviewer's approval is already stored."""
        ...

    def approvals(self, proposal_id: str) -> list[ApprovalRecord]:
        """The approvals of a proposal, oldest first."""
        ...

    def close(self) -> None: ...
