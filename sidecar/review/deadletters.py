"""Dead letters through the Review API: list, show, replay, discard; operators only, in their tenants, audited."""

from __future__ import annotations

from sidecar.errors import ProposalNotFound, ReviewForbidden
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import ProposalService, guard_storage
from sidecar.review.service import ReviewerIdentity
from sidecar.storage.records import ProposalQuery, ProposalRecord


def operator_name(reviewer: ReviewerIdentity) -> str:
    """How the audit log names an operator: issuer and subject (no display name, no PHI)."""
    return f"{reviewer.issuer}#{reviewer.subject}"


class DeadLetterService:
    """What an operator may do with writes parked after their retries were spent."""

    def __init__(self, proposals: ProposalService, operator_roles: tuple[str, ...]) -> None:
        self._proposals = proposals
        self._roles = frozenset(operator_roles)

    def _authorize(self, reviewer: ReviewerIdentity) -> None:
        if not self._roles.intersection(reviewer.roles):
            raise ReviewForbidden(
                "dead letters are for operators: the token holds none of the roles "
                f"{sorted(self._roles)} (operator_roles)"
            )

    def _dead_letter(self, reviewer: ReviewerIdentity, proposal_id: str) -> ProposalRecord:
        self._authorize(reviewer)
        store = self._proposals.store
        record = guard_storage(lambda: store.get(proposal_id[:256]))
        if (
            record is None
            or record.tenant_id not in reviewer.tenants
            or record.state is not State.DEAD_LETTERED
        ):
            raise ProposalNotFound(
                "no dead-lettered proposal with this id in the operator's tenants"
            )
        return record

    def list(
        self, reviewer: ReviewerIdentity, *, tenant_id: str | None = None, limit: int = 100
    ) -> list[ProposalRecord]:
        self._authorize(reviewer)
        store = self._proposals.store
        bounded = max(1, min(limit, 500))
        found: list[ProposalRecord] = []
        for tenant in reviewer.tenants:
            if tenant_id and tenant != tenant_id:
                continue
            found.extend(
                guard_storage(
                    lambda t=tenant: store.find(  # type: ignore[misc]
                        ProposalQuery(tenant_id=t, states=(State.DEAD_LETTERED,), limit=bounded)
                    )
                )
            )
        return sorted(found, key=lambda r: r.updated_at)[:bounded]

    def show(self, reviewer: ReviewerIdentity, proposal_id: str) -> ProposalRecord:
        return self._dead_letter(reviewer, proposal_id)

    def replay(self, reviewer: ReviewerIdentity, proposal_id: str) -> ProposalRecord:
        record = self._dead_letter(reviewer, proposal_id)
        return self._proposals.replay_dead_letter(record, operator_name(reviewer))

    def discard(self, reviewer: ReviewerIdentity, proposal_id: str) -> ProposalRecord:
        record = self._dead_letter(reviewer, proposal_id)
        return self._proposals.discard_dead_letter(record, operator_name(reviewer))
