"""Shadow evaluation: only the enforced decision counts; disagreements are counted and reported."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chartgate.stack import free_port
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Decision, Tier
from sidecar.policy.engines.opa_server.engine import OpaServerEngine as OpaEngine
from sidecar.policy.shadow import ShadowEngine
from tests.policy.support import REGO, action, agent, base_input, copy_policy

MEDICATION = base_input(
    action=action("create", "MedicationRequest", ["intent", "status"]),
    agent=agent(["patient/*.c"]),
)


def lenient_copy(tmp_path: Path) -> Path:
    """A candidate library where medication orders need one approval instead of two."""
    policy = copy_policy(tmp_path / "rego")
    data = policy / "data.json"
    source = data.read_text()
    old = '"create:MedicationRequest": {\n        "tier": "dual_approval"'
    assert old in source
    data.write_text(source.replace(old, old.replace("dual_approval", "approval")))
    return policy


def test_disagreements_are_counted_and_reported(tmp_path: Path) -> None:
    enforced = EmbeddedEngine(REGO)
    candidate = EmbeddedEngine(lenient_copy(tmp_path))
    seen: list[tuple[Decision, Decision, Mapping[str, Any]]] = []
    shadow = ShadowEngine(enforced, candidate, lambda e, c, i: seen.append((e, c, i)))
    assert shadow.evaluate(base_input()) == enforced.evaluate(base_input())
    decision = shadow.evaluate(MEDICATION)
    assert decision.tier is Tier.DUAL_APPROVAL  # the enforced decision, not the candidate's
    assert decision.revision == enforced.revision
    assert shadow.evaluations == 2
    assert shadow.disagreements == 1
    ((got_enforced, got_candidate, got_input),) = seen
    assert got_enforced.tier is Tier.DUAL_APPROVAL
    assert got_candidate.tier is Tier.APPROVAL
    assert got_candidate.revision == candidate.revision != enforced.revision
    assert got_input is MEDICATION
    assert shadow.revision == enforced.revision
    assert shadow.candidate_revision == candidate.revision


def test_a_failing_candidate_never_changes_the_enforced_decision() -> None:
    enforced = EmbeddedEngine(REGO)
    unreachable = OpaEngine(f"http://127.0.0.1:{free_port()}")  # denies: engine unavailable
    shadow = ShadowEngine(enforced, unreachable)
    decision = shadow.evaluate(base_input())
    assert decision.allow
    assert shadow.disagreements == 1


class _Raising:
    """A candidate that breaks the PolicyEngine contract by raising."""

    name = "raising"
    revision = "r0"

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        raise RuntimeError("candidate exploded")


def test_a_raising_candidate_or_handler_is_contained() -> None:
    enforced = EmbeddedEngine(REGO)

    def handler(e: Decision, c: Decision, i: Mapping[str, Any]) -> None:
        raise RuntimeError("audit down")

    shadow = ShadowEngine(enforced, _Raising())
    assert shadow.evaluate(base_input()).allow
    assert shadow.candidate_failures == 1
    lenient = ShadowEngine(enforced, OpaEngine(f"http://127.0.0.1:{free_port()}"), handler)
    assert lenient.evaluate(base_input()).allow
    assert lenient.disagreements == 1
