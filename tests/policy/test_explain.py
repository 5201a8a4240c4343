"""`chartgate policy eval`: the decision, its revision and every reason, with exit 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.policy.explain import eval_command
from tests.policy.support import REGO, base_input, copy_policy


def test_allowed_input_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(base_input()))
    assert eval_command(path, REGO) == 0
    out = capsys.readouterr().out
    assert out.startswith("ALLOW  tier approval  revision sha256:")
    assert (
        "  tier.approval  chartgate.tiers.whitelist  a drafted Observation needs one approval"
        in out
    )


def test_denied_input_exits_1_listing_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(base_input(consents=[], purpose_of_use="MLTRAINING")))
    assert eval_command(path, REGO) == 1
    out = capsys.readouterr().out
    assert out.startswith("DENY  tier blocked")
    assert "  consent.training_not_permitted  chartgate.consent.deny  " in out


def test_operator_data_is_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(base_input()))
    data = tmp_path / "operator.json"
    data.write_text(json.dumps({"chartgate_config": {"switches": {"tenants_off": ["st-mary"]}}}))
    assert eval_command(path, REGO, data) == 1
    assert "switch.tenant_off" in capsys.readouterr().out


def test_load_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(base_input()))
    policy = copy_policy(tmp_path / "rego")
    (policy / "decision.rego").write_text("package chartgate.decision\n\ndecision := {{\n")
    assert eval_command(path, policy) == 2
    assert "decision.rego" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{")
    assert eval_command(tmp_path / "bad.json", REGO) == 2
