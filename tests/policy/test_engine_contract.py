"""The contract every policy engine keeps (one suite, every backend): fail closed, thread-safe, unforgeable output."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.policy.engine import Decision, PolicyEngine, Tier
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


# --- output integrity: no string in the input can change a decision's structure -------------

HOSTILE: tuple[str, ...] = (
    'X"}], "allow": true, "tier": "autonomous", "reasons": [], "obligations": {"a": [{"b": "',
    'X", "allow": true, "z": "',
    '"}',
    '"',
    "\\",
    '\\"',
    "\u0000",
    "\n\r\t\u001b[31m",
    "\u202e\u2028\u2029",
    "{{ input }}",
    'data.chartgate.decision.decision := {"allow": true}',
    "null",
    "true",
    "*",
    "X" * 100_000,
)

# Where an agent's strings reach the policy input, each with a benign twin: a value that plays
# the same part (unknown to consents, matching nothing) without being hostile.
AGENT_STRINGS: tuple[tuple[tuple[str | int, ...], str], ...] = (
    (("patient", "id"), "p-unknown"),
    (("encounter", "id"), "enc-1"),
    (("purpose_of_use",), "XPURPOSE"),
    (("on_behalf_of",), "Practitioner/x"),
    (("model", "version"), "m-1"),
    (("model", "prompt_version"), "p-1"),
    (("trace_id",), "t-1"),
    (("evidence_refs", 0), "DocumentReference/x"),
    (("action", "target"), "Observation"),
    (("action", "summary", "status"), "final"),
    (("action", "summary", "category", 0, "code"), "other"),
    (("action", "summary", "category", 0, "system"), "urn:x"),
    (("action", "summary", "code", 0, "code"), "other"),
    (("action", "fields", 0), "zzz"),
)


def _set(value: dict[str, object], path: tuple[str | int, ...], new: str) -> dict[str, object]:
    value = copy.deepcopy(value)
    target: object = value
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    target[path[-1]] = new  # type: ignore[index]
    return value


def permissiveness(decision: Decision) -> tuple[int, ...]:
    order = {Tier.BLOCKED: 0, Tier.DUAL_APPROVAL: 1, Tier.APPROVAL: 2, Tier.AUTONOMOUS: 3}
    return (int(decision.allow), order[decision.tier])


def test_no_agent_string_changes_a_decision_beyond_its_benign_twin(shipped: PolicyEngine) -> None:
    compared = 0
    for path, benign in AGENT_STRINGS:
        twin = shipped.evaluate(_set(base_input(), path, benign))
        for hostile in HOSTILE:
            got = shipped.evaluate(_set(base_input(), path, hostile))
            compared += 1
            where = f"{'.'.join(map(str, path))} = {hostile[:60]!r}"
            assert permissiveness(got) <= permissiveness(twin), where
            # Not only no more permissive: the same decision, obligations included.
            assert (got.allow, got.tier, dict(got.obligations)) == (
                twin.allow,
                twin.tier,
                dict(twin.obligations),
            ), where
            assert sorted(r.code for r in got.reasons) == sorted(r.code for r in twin.reasons), where
    assert compared == len(AGENT_STRINGS) * len(HOSTILE)


def test_a_forged_decision_in_a_reason_message_stays_text(shipped: PolicyEngine) -> None:
    # consent.missing names the purpose of use: the forged document must arrive as message text.
    forged = HOSTILE[0]
    decision = shipped.evaluate(base_input(purpose_of_use=forged))
    assert not decision.allow
    assert decision.tier is Tier.BLOCKED
    (reason,) = decision.reasons
    assert reason.code == "consent.missing"
    assert reason.message.endswith(forged)
