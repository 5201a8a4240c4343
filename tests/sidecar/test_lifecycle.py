"""The lifecycle table: which moves are allowed (the store's compare-and-set is tested in tests/storage/)."""

from __future__ import annotations

import pytest

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import TRANSITIONS, State, check_transition


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (State.BLOCKED, State.APPROVED),
        (State.PENDING_APPROVAL, State.SUBMITTED),
        (State.ACCEPTED, State.SUBMITTED),
        # Ambiguous is never declared safe to resend: it is looked up (then resent or accepted).
        (State.AMBIGUOUS, State.FAILED_RETRYABLE),
        (State.DEAD_LETTERED, State.APPROVED),
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
    for terminal in (State.BLOCKED, State.REJECTED, State.FAILED_FINAL, State.RECONCILED):
        assert terminal not in TRANSITIONS
