"""The shipped Rego library: its tests pass, a broken rule fails by name, each module denies with its code."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Tier
from sidecar.policy.testing import policy_test_command, run_policy_tests
from tests.policy.support import (
    LABORATORY,
    NOW_NS,
    REGO,
    action,
    agent,
    base_input,
    consent,
    copy_policy,
    write_data,
)


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    return EmbeddedEngine(REGO)


@pytest.mark.parametrize("engine_name", ["regorus", "opa"])
def test_policy_test_passes_on_the_shipped_library_on_every_engine(
    capsys: pytest.CaptureFixture[str], engine_name: str
) -> None:
    # The same *_test.rego files pass on the embedded engine and on OPA's own.
    assert policy_test_command(REGO, engine_name) == 0
    out = capsys.readouterr().out
    report = run_policy_tests(REGO, engine_name)
    assert report.ok
    assert report.passed >= 60
    assert out.strip().endswith(f"{report.passed} passed, 0 failed ({engine_name})")
    # every module has tests
    files = {r.file for r in report.results}
    for module in ("consent", "scopes", "fields", "switches", "tiers", "decision"):
        assert f"{module}_test.rego" in files


def test_a_broken_rule_fails_its_tests_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = copy_policy(tmp_path / "rego")
    consent_rego = policy / "consent.rego"
    source = consent_rego.read_text()
    # Break the status check: a revoked consent now covers the request.
    assert '\tc.status == "active"\n' in source
    consent_rego.write_text(
        source.replace('\tc.status == "active"\n', "")
    )
    assert policy_test_command(policy) == 1
    out = capsys.readouterr().out
    assert "FAIL chartgate.consent_test.test_revoked_consent_denies (consent_test.rego)" in out
    report = run_policy_tests(policy)
    assert not report.ok
    assert f"{report.passed} passed, {report.failed} failed" in out


def test_a_test_that_errors_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "extra_test.rego").write_text(
        "package chartgate.extra_test\n\nimport rego.v1\n\n"
        "test_divides if 1 / count([]) == 1\n\ntest_undefined if data.nowhere.at_all\n"
    )
    assert policy_test_command(policy) == 1
    out = capsys.readouterr().out
    assert "FAIL chartgate.extra_test.test_divides (extra_test.rego): error:" in out
    assert "FAIL chartgate.extra_test.test_undefined (extra_test.rego): undefined" in out


def test_a_directory_without_tests_fails_with_exit_5(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = copy_policy(tmp_path / "rego")
    for test_file in policy.glob("*_test.rego"):
        test_file.unlink()
    assert policy_test_command(policy) == 5
    assert "FAIL no test_* rules" in capsys.readouterr().out


def codes(engine: EmbeddedEngine, policy_input: dict[str, object]) -> set[str]:
    decision = engine.evaluate(policy_input)
    assert not decision.allow
    assert decision.tier is Tier.BLOCKED
    assert all(r.rule.startswith("chartgate.") for r in decision.reasons)
    return {r.code for r in decision.reasons}


def test_base_input_needs_one_approval(engine: EmbeddedEngine) -> None:
    decision = engine.evaluate(base_input())
    assert decision.allow
    assert decision.tier is Tier.APPROVAL
    assert decision.revision == engine.revision
    assert decision.obligations["approvals_required"] == 1
    assert decision.obligations["token_ttl_seconds"] <= 60


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"consents": []}, "consent.missing"),
        ({"consents": [consent(period={"start_ns": 0, "end_ns": NOW_NS - 1})]}, "consent.expired"),
        ({"consents": [consent(status="inactive")]}, "consent.revoked"),
        ({"purpose_of_use": "MLTRAINING"}, "consent.training_not_permitted"),
        (
            {"action": action("create", "Observation", ["category", "code"], LABORATORY)},
            "scope.filter_mismatch",
        ),
        (
            {"action": action("create", "Observation", ["code", "identifier"], [])},
            "fields.not_allowed",
        ),
    ],
    ids=[
        "consent-missing",
        "consent-expired",
        "consent-revoked",
        "training",
        "scope-filter",
        "field",
    ],
)
def test_each_denial_has_its_own_code(
    engine: EmbeddedEngine, changes: dict[str, object], code: str
) -> None:
    assert code in codes(engine, base_input(**changes))


def test_denial_reasons_name_the_consent_and_hold_no_clinical_codes(
    engine: EmbeddedEngine,
) -> None:
    decision = engine.evaluate(base_input(consents=[consent(id="consent-77", status="inactive")]))
    (reason,) = decision.reasons
    assert reason.code == "consent.revoked"
    assert "consent-77" in reason.message
    assert reason.rule == "chartgate.consent.deny"
    assert "8867-4" not in reason.message


def test_agent_switched_off_denies(tmp_path: Path) -> None:
    data = write_data(
        tmp_path / "operator.json",
        {"chartgate_config": {"switches": {"agents_off": ["scribe-agent"]}}},
    )
    engine = EmbeddedEngine(REGO, data)
    assert codes(engine, base_input()) == {"switch.agent_off"}
    other = base_input(agent=agent(["patient/*.c"], "coder-agent"))
    assert engine.evaluate(other).allow
