"""Hot reload: a good edit goes into force within seconds; a broken one is refused and the old revision stays."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.policy.engine import Tier
from sidecar.policy.reload import NO_REVISION, ReloadingEngine
from tests.policy.support import action, agent, base_input, copy_policy

MEDICATION = base_input(
    action=action("create", "MedicationRequest", ["intent", "status"]),
    agent=agent(["patient/*.c"]),
)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return copy_policy(tmp_path / "rego")


@pytest.fixture
def engine(policy: Path) -> Iterator[ReloadingEngine]:
    running = ReloadingEngine(policy, poll_seconds=0.2)
    yield running
    running.close()


def wait_for(check: Callable[[], bool], seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


def edit(path: Path, old: str, new: str) -> None:
    source = path.read_text()
    assert old in source
    path.write_text(source.replace(old, new))


def test_an_edit_goes_into_force(policy: Path, engine: ReloadingEngine) -> None:
    before = engine.evaluate(MEDICATION)
    assert before.tier is Tier.DUAL_APPROVAL
    first = engine.revision
    # Policy tables live in data.json: medication orders need one approval now. The tests
    # pinning two approvals change with it, or the edit would be refused.
    edit(
        policy / "data.json",
        '"create:MedicationRequest": {\n        "tier": "dual_approval",\n        "reason": {\n'
        '          "code": "tier.dual_approval",',
        '"create:MedicationRequest": {\n        "tier": "approval",\n        "reason": {\n'
        '          "code": "tier.approval",',
    )
    tests = policy / "tiers_test.rego"
    source = tests.read_text()
    start = source.index("test_medication_order_needs_dual_approval if {")
    end = source.index("test_problem_list_entry_needs_dual_approval if {")
    source = source[:start] + source[end:]
    start = source.index("test_tenant_override_cannot_loosen if {")
    end = source.index("test_tenant_override_can_block if {")
    tests.write_text(source[:start] + source[end:])
    decision_tests = policy / "decision_test.rego"
    source = decision_tests.read_text()
    start = source.index("test_medication_order_goes_to_prescribers if {")
    end = source.index("test_autonomous_write_has_no_approvers if {")
    decision_tests.write_text(source[:start] + source[end:])
    took = wait_for(lambda: engine.evaluate(MEDICATION).tier is Tier.APPROVAL, 10)
    assert took < 5, f"reload took {took:.1f} s"
    after = engine.evaluate(MEDICATION)
    assert after.revision == engine.revision != first
    assert engine.last_error is None


def test_a_broken_edit_is_refused_and_the_old_revision_stays(
    policy: Path, engine: ReloadingEngine
) -> None:
    good = engine.revision
    (policy / "tiers.rego").write_text((policy / "tiers.rego").read_text() + "\nbroken := {{\n")
    wait_for(lambda: engine.last_error is not None, 10)
    assert "tiers.rego" in (engine.last_error or "")
    assert engine.revision == good
    decision = engine.evaluate(base_input())
    assert decision.allow
    assert decision.revision == good


def test_an_edit_failing_its_tests_is_refused(policy: Path, engine: ReloadingEngine) -> None:
    good = engine.revision
    edit(
        policy / "consent.rego",
        '\tc.status == "active"\n',
        "",
    )
    wait_for(lambda: engine.last_error is not None, 15)
    assert "test_revoked_consent_denies" in (engine.last_error or "")
    assert engine.revision == good


def test_a_refused_builtin_is_refused_on_reload(policy: Path, engine: ReloadingEngine) -> None:
    good = engine.revision
    (policy / "network.rego").write_text(
        "package chartgate.network\n\nimport rego.v1\n\nx if io.jwt.decode(input.ip)\n"
    )
    wait_for(lambda: engine.last_error is not None, 10)
    assert "io.jwt.decode" in (engine.last_error or "")
    assert engine.revision == good


def test_a_broken_policy_at_start_denies_until_fixed(policy: Path) -> None:
    decision_rego = policy / "decision.rego"
    good_source = decision_rego.read_text()
    decision_rego.write_text("package chartgate.decision\n\nimport rego.v1\n\ndecision := {{\n")
    engine = ReloadingEngine(policy, poll_seconds=0.2)
    try:
        assert engine.revision == NO_REVISION
        denied = engine.evaluate(base_input())
        assert not denied.allow
        assert [r.code for r in denied.reasons] == ["policy.unavailable"]
        assert "decision.rego" in denied.reasons[0].message
        decision_rego.write_text(good_source)
        wait_for(lambda: engine.evaluate(base_input()).allow, 10)
        assert engine.revision != NO_REVISION
        assert engine.last_error is None
    finally:
        engine.close()


def test_every_reload_and_refusal_is_an_audited_admin_record(tmp_path: Path) -> None:
    """A policy change is an administrative act: the sidecar's audit log records each one, the
    revision that went into force (and the one before) or the candidate it refused."""
    import json

    from chartgate import keys
    from sidecar.audit.log import AuditLog
    from sidecar.config import SidecarConfig
    from sidecar.server.app import build_engine

    policy = copy_policy(tmp_path / "rego")
    config = SidecarConfig(agent_id="a", tenant_id="t", policy_dir=policy)
    audit_path = tmp_path / "audit.jsonl"
    with AuditLog(audit_path, keys.load_or_create(tmp_path / "a.jwk", "audit")) as audit:
        engine = build_engine(config, audit)
        assert isinstance(engine, ReloadingEngine)
        first = engine.revision
        try:
            (policy / "tiers.rego").write_text(
                (policy / "tiers.rego").read_text() + "\nbroken := {{\n"
            )
            wait_for(lambda: engine.last_error is not None, 10)
        finally:
            engine.close()
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    reloads = [r["body"] for r in records if r["kind"] == "admin.policy_reloaded"]
    assert reloads[0] == {
        "policy_revision": first,
        "previous_revision": "",
        "engine": "regorus",
        "loaded": True,
        "operator": "",
    }
    assert reloads[1]["loaded"] is False
    assert reloads[1]["policy_revision"] == first  # the refused edit changed nothing
