"""The contract every policy engine keeps (one suite, every backend): fail closed, thread-safe, unforgeable output."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.policy.engine import PolicyEngine, Tier
from tests.policy.engines import BACKENDS, make_engine
from tests.policy.support import LABORATORY, REGO, action, base_input, consent, copy_policy


def with_decision_module(tmp_path: Path, source: str) -> Path:
    """A copy of the library whose decision module is replaced."""
    policy = copy_policy(tmp_path / "rego")
    for test in policy.glob("*_test.rego"):
        test.unlink()  # they test the real decision module
    (policy / "decision.rego").write_text(
        "package chartgate.decision\n\nimport rego.v1\n\n" + source + "\n"
    )
    return policy


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def shipped(request: pytest.FixtureRequest) -> Iterator[PolicyEngine]:
    with make_engine(str(request.param), REGO) as engine:
        yield engine


def decide_with(kind: str, policy: Path) -> list[str]:
    with make_engine(kind, policy) as engine:
        decision = engine.evaluate(base_input())
        assert not decision.allow
        assert decision.tier is Tier.BLOCKED
        assert decision.revision
        return [r.code for r in decision.reasons]


def test_an_evaluation_error_denies_with_engine_error(kind: str, tmp_path: Path) -> None:
    # Compiles, then divides by zero: a builtin error, which every engine must report as an error
    # (OPA's server default would make it undefined; the OPA engine asks for strict errors).
    policy = with_decision_module(
        tmp_path,
        "zero := count(input.action.fields) - count(input.action.fields)\n\n"
        'decision := {"allow": 1 / zero > 0, "tier": "approval", "reasons": []}',
    )
    assert decide_with(kind, policy) == ["policy.engine_error"]


def test_a_builtin_type_error_denies_with_engine_error(kind: str, tmp_path: Path) -> None:
    policy = with_decision_module(
        tmp_path,
        'decision := {"allow": to_number(input.action.resource_type) > 0, "tier": "approval", '
        '"reasons": []}',
    )
    assert decide_with(kind, policy) == ["policy.engine_error"]


def test_an_undefined_decision_denies(kind: str, tmp_path: Path) -> None:
    policy = with_decision_module(
        tmp_path, 'decision := {"allow": true, "tier": "approval", "reasons": []} if input.never'
    )
    assert decide_with(kind, policy) == ["policy.undefined"]


@pytest.mark.parametrize(
    "document",
    [
        '{"allow": "yes", "tier": "approval", "reasons": []}',
        '{"allow": true, "tier": "blocked", "reasons": []}',
        '{"allow": true, "tier": "sometimes", "reasons": []}',
        '{"allow": true, "tier": "approval", "reasons": [{"code": 1, "message": "m"}]}',
        '["allow", true]',
    ],
    ids=["allow-not-boolean", "allowed-yet-blocked", "unknown-tier", "reason-code-number", "array"],
)
def test_a_malformed_decision_denies(kind: str, tmp_path: Path, document: str) -> None:
    policy = with_decision_module(tmp_path, f"decision := {document}")
    assert decide_with(kind, policy) == ["policy.malformed_decision"]


def test_an_input_that_cannot_be_passed_denies_and_the_engine_stays_usable(
    shipped: PolicyEngine,
) -> None:
    for unusable in (object(), float("nan"), float("inf"), "\ud800"):
        decision = shipped.evaluate(base_input(confidence=unusable))
        assert not decision.allow, unusable
        assert decision.tier is Tier.BLOCKED
    assert shipped.evaluate(base_input()).allow


def test_many_threads_get_consistent_decisions(shipped: PolicyEngine) -> None:
    inputs = [
        base_input(),
        base_input(purpose_of_use="MLTRAINING"),
        base_input(consents=[consent(status="inactive")]),
        base_input(action=action("create", "Observation", ["category", "code"], LABORATORY)),
        base_input(action=action("update", "Patient", ["telecom"])),
        base_input(action=action("create", "AllergyIntolerance", ["code"])),
    ]
    expected = [shipped.evaluate(i) for i in inputs]
    assert len({(d.allow, d.tier) for d in expected}) >= 3
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(60):
                k = (offset + n) % len(inputs)
                got = shipped.evaluate(inputs[k])
                if got != expected[k]:
                    mismatches.append(f"input {k}: {got} != {expected[k]}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not mismatches, mismatches[:3]
