"""The proposal state machine (DESIGN.md, "The proposal lifecycle"): one table, enforced in one place."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from sidecar.errors import IllegalTransition


class State(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    INVALID = "invalid"
    BLOCKED = "blocked"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    FAILED_RETRYABLE = "failed_retryable"
    FAILED_FINAL = "failed_final"
    AMBIGUOUS = "ambiguous"
    DEAD_LETTERED = "dead_lettered"
    RECONCILED = "reconciled"
    MISMATCH = "mismatch"


TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    State.RECEIVED: frozenset({State.VALIDATED, State.INVALID}),
    State.VALIDATED: frozenset({State.BLOCKED, State.PENDING_APPROVAL, State.APPROVED}),
    State.PENDING_APPROVAL: frozenset(
        {State.APPROVED, State.REJECTED, State.EXPIRED, State.SUPERSEDED}
    ),
    # approved → expired: an approval whose window ended before its write was sent (issue 8).
    State.APPROVED: frozenset({State.SUBMITTED, State.EXPIRED}),
    State.SUBMITTED: frozenset(
        {State.ACCEPTED, State.FAILED_RETRYABLE, State.FAILED_FINAL, State.AMBIGUOUS}
    ),
    # failed_retryable → ambiguous: its approval lapsed before a resend, so whether an earlier
    # attempt was stored is settled by looking it up.
    State.FAILED_RETRYABLE: frozenset({State.SUBMITTED, State.DEAD_LETTERED, State.AMBIGUOUS}),
    # Resolved by looking the write up: found, or resent under the same conditional create once
    # it is known absent (expired instead when its approval lapsed); dead-lettered when it cannot
    # be settled within the retry budget.
    State.AMBIGUOUS: frozenset(
        {State.ACCEPTED, State.SUBMITTED, State.FAILED_FINAL, State.DEAD_LETTERED, State.EXPIRED}
    ),
    # An operator's replay (looked up first: found is accepted; else a fresh token, policy
    # re-checked) or discard (looked up first too).
    # (Expired: absent, and its approval window has ended; nothing was written.)
    State.DEAD_LETTERED: frozenset(
        {State.SUBMITTED, State.FAILED_FINAL, State.ACCEPTED, State.EXPIRED}
    ),
    State.ACCEPTED: frozenset({State.RECONCILED, State.MISMATCH}),
}


def check_transition(current: State, target: State) -> None:
    """Raise IllegalTransition unless the table allows current → target."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"a proposal cannot move from {current} to {target}")
