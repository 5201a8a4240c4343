"""The embedded engine fails closed on engine errors, undefined and malformed documents, and is thread-safe."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Tier
from tests.policy.support import LABORATORY, action, base_input, consent, copy_policy


def with_decision_module(tmp_path: Path, source: str) -> Path:
    """A copy of the library whose decision module is replaced."""
    policy = copy_policy(tmp_path / "rego")
    (policy / "decision.rego").write_text(
        "package chartgate.decision\n\nimport rego.v1\n\n" + source + "\n"
    )
    return policy


def test_an_evaluation_error_denies_with_engine_error(tmp_path: Path) -> None:
    # Compiles; divides by zero at evaluation, which strict builtin errors turn into an error
    # (rather than the undefined rego-cpp would otherwise give).
    policy = with_decision_module(
        tmp_path,
        "zero := count(input.action.fields) - count(input.action.fields)\n\n"
        'decision := {"allow": 1 / zero > 0, "tier": "approval", "reasons": []}',
    )
    engine = EmbeddedEngine(policy)
    decision = engine.evaluate(base_input())
    assert not decision.allow
    assert decision.tier is Tier.BLOCKED
    (reason,) = decision.reasons
    assert reason.code == "policy.engine_error"
    assert "divide by zero" in reason.message
    assert "denying" in reason.message
    assert decision.revision == engine.revision


def test_a_builtin_type_error_denies_with_engine_error(tmp_path: Path) -> None:
    policy = with_decision_module(
        tmp_path,
        'decision := {"allow": to_number(input.action.resource_type) > 0, "tier": "approval", "reasons": []}',
    )
    decision = EmbeddedEngine(policy).evaluate(base_input())
    assert [r.code for r in decision.reasons] == ["policy.engine_error"]


def test_an_undefined_decision_denies(tmp_path: Path) -> None:
    policy = with_decision_module(
        tmp_path, 'decision := {"allow": true, "tier": "approval", "reasons": []} if input.never'
    )
    decision = EmbeddedEngine(policy).evaluate(base_input())
    assert not decision.allow
    assert [r.code for r in decision.reasons] == ["policy.undefined"]
    assert "undefined" in decision.reasons[0].message


def test_a_malformed_decision_denies(tmp_path: Path) -> None:
    policy = with_decision_module(
        tmp_path, 'decision := {"allow": "yes", "tier": "approval", "reasons": []}'
    )
    decision = EmbeddedEngine(policy).evaluate(base_input())
    assert [r.code for r in decision.reasons] == ["policy.malformed_decision"]


def test_an_input_that_cannot_be_passed_denies(tmp_path: Path) -> None:
    engine = EmbeddedEngine(copy_policy(tmp_path / "rego"), pool_size=1)
    decision = engine.evaluate(base_input(confidence=object()))
    assert [r.code for r in decision.reasons] == ["policy.engine_error"]
    assert engine.evaluate(base_input()).allow  # the engine is still usable


def test_compiled_once_evaluations_are_fast() -> None:
    engine = EmbeddedEngine(Path(__file__).resolve().parent.parent.parent / "rego", pool_size=1)
    engine.evaluate(base_input())
    started = time.perf_counter()
    for _ in range(20):
        engine.evaluate(base_input())
    # Compiling takes tens of milliseconds; evaluating a compiled bundle about one.
    assert (time.perf_counter() - started) / 20 < 0.02


def test_many_threads_get_consistent_decisions(tmp_path: Path) -> None:
    engine = EmbeddedEngine(copy_policy(tmp_path / "rego"))
    inputs = [
        base_input(),
        base_input(purpose_of_use="MLTRAINING"),
        base_input(consents=[consent(status="inactive")]),
        base_input(action=action("create", "Observation", ["category", "code"], LABORATORY)),
        base_input(action=action("update", "Patient", ["telecom"])),
        base_input(action=action("create", "AllergyIntolerance", ["code"])),
    ]
    expected = [engine.evaluate(i) for i in inputs]
    assert len({(d.allow, d.tier) for d in expected}) >= 3
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(200):
                k = (offset + n) % len(inputs)
                got = engine.evaluate(inputs[k])
                if got != expected[k]:
                    mismatches.append(f"input {k}: {got} != {expected[k]}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not mismatches, mismatches[:3]


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        EmbeddedEngine(Path(__file__).resolve().parent.parent.parent / "rego", pool_size=0)
