"""Shadow evaluation: decide with the enforced engine, evaluate a candidate beside it, report disagreements."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sidecar.policy.engine import Decision, PolicyEngine

log = logging.getLogger("chartgate.policy")

DisagreementHandler = Callable[[Decision, Decision, Mapping[str, Any]], None]


def disagreement_record(
    enforced: Decision, candidate: Decision, policy_input: Mapping[str, Any]
) -> dict[str, Any]:
    """What an auditor needs to see of a disagreement: identifiers, tiers, reason codes and
    revisions, never the resource (the input's payload is named by its hash only)."""
    action = policy_input.get("action")
    action = action if isinstance(action, Mapping) else {}
    agent = policy_input.get("agent")
    agent = agent if isinstance(agent, Mapping) else {}

    def side(decision: Decision) -> dict[str, Any]:
        return {
            "allow": decision.allow,
            "tier": decision.tier.value,
            "reasons": sorted({r.code for r in decision.reasons}),
            "policy_revision": decision.revision,
            "engine": decision.engine,
        }

    return {
        "agent": agent.get("id"),
        "trace_id": policy_input.get("trace_id"),
        "operation": action.get("operation"),
        "resource_type": action.get("resource_type"),
        "payload_sha256": action.get("payload_sha256"),
        "enforced": side(enforced),
        "candidate": side(candidate),
    }


class ShadowEngine:
    """A PolicyEngine that returns the enforced engine's decision and only observes a candidate.

    Both are evaluated on every input. When they disagree on `allow` or `tier` the disagreement
    is counted and handed to `on_disagreement(enforced, candidate, policy_input)` (e.g. to audit
    it before the candidate is promoted). Nothing the candidate does, including raising, and
    nothing the handler does, can change or delay the enforced decision beyond its own run time.
    """

    def __init__(
        self,
        enforced: PolicyEngine,
        candidate: PolicyEngine,
        on_disagreement: DisagreementHandler | None = None,
    ) -> None:
        self._enforced = enforced
        self._candidate = candidate
        self._on_disagreement = on_disagreement
        self._lock = threading.Lock()
        self._evaluations = 0
        self._disagreements = 0
        self._candidate_failures = 0

    @property
    def name(self) -> str:
        return self._enforced.name

    @property
    def revision(self) -> str:
        return self._enforced.revision

    @property
    def candidate_revision(self) -> str:
        try:
            return self._candidate.revision
        except Exception:
            return "unknown"

    @property
    def evaluations(self) -> int:
        return self._evaluations

    @property
    def disagreements(self) -> int:
        return self._disagreements

    @property
    def candidate_failures(self) -> int:
        """Candidate evaluations that raised (a contract breach: engines deny, never raise)."""
        return self._candidate_failures

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        enforced = self._enforced.evaluate(policy_input)
        try:
            candidate = self._candidate.evaluate(policy_input)
        except Exception:
            log.exception("shadow policy engine %s raised", self.candidate_revision)
            with self._lock:
                self._evaluations += 1
                self._candidate_failures += 1
            return enforced
        differs = candidate.allow != enforced.allow or candidate.tier != enforced.tier
        with self._lock:
            self._evaluations += 1
            if differs:
                self._disagreements += 1
        if differs and self._on_disagreement is not None:
            try:
                self._on_disagreement(enforced, candidate, policy_input)
            except Exception:
                log.exception("shadow disagreement handler failed")
        return enforced
