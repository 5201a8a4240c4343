"""The policy engine seam: PolicyEngine, the Decision it returns, the PolicyBackend in-process engines use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sidecar.policy.loader import PolicySet

# The decision document every engine queries (the library in sidecar/policy/rego/ defines it;
# docs/policy.md documents it).
DECISION_PACKAGE = "chartgate.decision"
DECISION_RULE = "decision"


class Tier(StrEnum):
    """Risk tier (DESIGN.md, "The proposal lifecycle")."""

    AUTONOMOUS = "autonomous"
    APPROVAL = "approval"
    DUAL_APPROVAL = "dual_approval"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a decision came out as it did: a stable code, an actionable message, the rule behind it."""

    code: str
    message: str
    rule: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """What policy decided for one proposal, and which policy revision decided it."""

    allow: bool
    tier: Tier
    reasons: tuple[Reason, ...]
    revision: str
    engine: str
    obligations: Mapping[str, Any] = field(default_factory=dict)


class PolicyEngine(Protocol):
    """Evaluates the decision document for one policy input.

    `evaluate` never raises: an engine error, timeout, or an undefined or malformed result comes
    back as a denying Decision (tier `blocked`) whose reason says so.
    """

    @property
    def name(self) -> str: ...

    @property
    def revision(self) -> str: ...

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision: ...


class CompiledPolicy(Protocol):
    """A policy set compiled once by an in-process backend. `query` may be called from any thread.

    `query` returns the value of the rule at `path` (dotted, under `data.`) as plain Python
    values read from the engine's structured result (never re-parsed from text an input string
    could have shaped). It raises PolicyUndefined when the rule is undefined and
    PolicyEvaluationError when the engine reports an error.
    """

    def query(
        self, path: str, policy_input: Mapping[str, Any] | None, *, checked: bool = False
    ) -> Any:
        """`checked`: the caller has found `representable.unrepresentable(policy_input)` None."""
        ...


class PolicyBackend(Protocol):
    """An engine that evaluates Rego in this process (one folder per backend under engines/)."""

    @property
    def name(self) -> str: ...

    def compile(self, policy: PolicySet) -> CompiledPolicy:
        """Compile the serving and test modules and the data; raise PolicyLoadError naming file
        and line when the policy does not compile or calls a builtin the engine lacks."""
        ...


def deny(code: str, message: str, *, revision: str, engine: str) -> Decision:
    """A fail-closed decision: blocked, not allowed, with one reason."""
    return Decision(
        allow=False,
        tier=Tier.BLOCKED,
        reasons=(Reason(code=code, message=message, rule="chartgate.fail_closed"),),
        revision=revision,
        engine=engine,
    )


def decision_from_document(document: Any, *, revision: str, engine: str) -> Decision:
    """Turn the JSON decision document policy returned into a Decision, denying if it is malformed.

    A document must be an object with boolean `allow`, a known `tier`, and a list `reasons` of
    objects with string `code` and `message` (optional `rule`); `obligations` is optional.
    An `allow` of true with tier `blocked` is contradictory and denies.
    """
    if not isinstance(document, Mapping):
        return deny(
            "policy.malformed_decision",
            "policy returned a decision that is not an object; denying",
            revision=revision,
            engine=engine,
        )
    allow = document.get("allow")
    tier_text = document.get("tier")
    raw_reasons = document.get("reasons", [])
    obligations = document.get("obligations", {})
    if (
        not isinstance(allow, bool)
        or tier_text not in Tier.__members__.values()
        or not isinstance(raw_reasons, list)
        or not isinstance(obligations, Mapping)
    ):
        return deny(
            "policy.malformed_decision",
            "policy decision document lacks a boolean allow, a known tier or a reasons list; denying",
            revision=revision,
            engine=engine,
        )
    reasons: list[Reason] = []
    for item in raw_reasons:
        if not (
            isinstance(item, Mapping)
            and isinstance(item.get("code"), str)
            and isinstance(item.get("message"), str)
        ):
            return deny(
                "policy.malformed_decision",
                "policy returned a reason without a string code and message; denying",
                revision=revision,
                engine=engine,
            )
        reasons.append(Reason(item["code"], item["message"], str(item.get("rule", ""))))
    tier = Tier(str(tier_text))
    if allow and tier is Tier.BLOCKED:
        return deny(
            "policy.malformed_decision",
            "policy allowed a write in tier blocked; denying",
            revision=revision,
            engine=engine,
        )
    if not allow and tier is not Tier.BLOCKED:
        tier = Tier.BLOCKED
    # Sorted so the same decision always reads (and audits) the same way.
    reasons.sort(key=lambda r: (r.code, r.message))
    return Decision(
        allow=allow,
        tier=tier,
        reasons=tuple(reasons),
        revision=revision,
        engine=engine,
        obligations=dict(obligations),
    )
