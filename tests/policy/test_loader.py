"""Loading policy: revisions, operator data, and refusing at load what would fail or mislead at decision time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sidecar.errors import PolicyLoadError
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engines import backend
from sidecar.policy.loader import compute_revision, load_policy
from tests.policy.support import REGO, base_input, copy_policy, write_data

TEMPLATE_POLICY = """package chartgate.network

import rego.v1

# regorus lacks strings.render_template: this rule would fail only on inputs that reach it.
deny contains "template" if {
	input.client_ip
	strings.render_template("{{.x}}", {"x": input.client_ip}) != ""
}
"""


def test_revision_names_the_content(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path / "rego")
    revision = compute_revision(policy)
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", revision)
    assert compute_revision(policy) == revision
    assert load_policy(policy).revision == revision
    (policy / "tiers.rego").write_text((policy / "tiers.rego").read_text() + "\n# edited\n")
    assert compute_revision(policy) != revision


def test_a_missing_builtin_is_refused_at_load_naming_it(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "network.rego").write_text(TEMPLATE_POLICY)
    with pytest.raises(PolicyLoadError) as refused:
        EmbeddedEngine(policy)
    message = str(refused.value)
    assert "network.rego:8" in message
    assert "strings.render_template" in message


@pytest.mark.parametrize("builtin", ["io.jwt.decode", "graphql.parse", "rego.metadata.rule"])
def test_other_missing_builtins_are_refused(tmp_path: Path, builtin: str) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "x.rego").write_text(
        f"package chartgate.x\n\nimport rego.v1\n\nv := {builtin}(input.a, input.b)\n"
    )
    with pytest.raises(PolicyLoadError, match=re.escape(builtin)):
        EmbeddedEngine(policy)


@pytest.mark.parametrize("builtin", ["http.send", "time.now_ns", "rand.intn"])
def test_builtins_a_decision_must_not_depend_on_are_refused(tmp_path: Path, builtin: str) -> None:
    # http.send is also undefined on regorus: a deny rule using it would silently never fire.
    policy = copy_policy(tmp_path / "rego")
    arguments = {
        "http.send": '{"method": "get", "url": input.u}',
        "time.now_ns": "",
        "rand.intn": '"k", 10',
    }
    (policy / "x.rego").write_text(
        f"package chartgate.x\n\nimport rego.v1\n\nv := {builtin}({arguments[builtin]})\n"
    )
    with pytest.raises(
        PolicyLoadError, match=rf"x\.rego:5: calls {re.escape(builtin)}, which a decision must not"
    ):
        EmbeddedEngine(policy)


def test_own_functions_imports_and_strings_are_not_builtins() -> None:
    # The tests call f.patch(...) and module functions; none is taken for a builtin.
    policy = load_policy(REGO, include_tests=True)
    assert policy.serving_modules
    assert policy.test_modules
    backend().compile(policy)


def test_mentioning_a_builtin_in_a_comment_or_string_is_fine(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "x.rego").write_text(
        'package chartgate.x\n\nimport rego.v1\n\n# io.jwt.decode(a) is not used\nm := "http.send(x)"\n'
    )
    EmbeddedEngine(policy)


def test_a_syntax_error_is_refused_at_load_naming_file_and_line(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "broken.rego").write_text(
        "package chartgate.broken\n\nimport rego.v1\n\nx := {{ oops\n"
    )
    with pytest.raises(PolicyLoadError, match=r"broken\.rego:\d+"):
        EmbeddedEngine(policy)


def test_duplicate_keys_in_policy_data_are_refused(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "data.json").write_text('{"chartgate_config": {}, "chartgate_config": {"x": 1}}')
    with pytest.raises(PolicyLoadError, match="duplicate key"):
        load_policy(policy)


def test_operator_data_overrides_library_defaults(tmp_path: Path) -> None:
    data = write_data(
        tmp_path / "operator.json",
        {"chartgate_config": {"tenants": {"st-mary": {"token_ttl_seconds": 15}}}},
    )
    policy = load_policy(REGO, data)
    assert policy.data["chartgate_config"]["tenants"] == {"st-mary": {"token_ttl_seconds": 15}}
    assert policy.data["chartgate_config"]["switches"]["agents_off"] == []  # default kept
    assert policy.revision != load_policy(REGO).revision
    assert EmbeddedEngine(REGO, data).evaluate(base_input()).obligations["token_ttl_seconds"] == 15


def test_operator_data_cannot_touch_library_tables(tmp_path: Path) -> None:
    data = write_data(
        tmp_path / "operator.json",
        {"chartgate_library": {"whitelist": {"create:AllergyIntolerance": {"tier": "autonomous"}}}},
    )
    with pytest.raises(PolicyLoadError, match="chartgate_library"):
        load_policy(REGO, data)


def test_invalid_data_json_is_refused(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path / "rego")
    (policy / "data.json").write_text('{"chartgate_config": ')
    with pytest.raises(PolicyLoadError, match=r"data\.json:1: policy data is not valid JSON"):
        load_policy(policy)


def test_missing_directory_and_operator_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_policy(REGO, tmp_path / "nowhere.json")


def test_data_file_is_the_documented_default() -> None:
    data = json.loads((REGO / "data.json").read_text())
    assert data["chartgate_config"] == {
        "tenants": {},
        "switches": {"all_off": False, "agents_off": [], "actions_off": [], "tenants_off": []},
    }


def test_hidden_directories_of_a_configmap_volume_are_skipped(tmp_path: Path) -> None:
    # The kubelet's layout: files under ..<timestamp>/, ..data -> it, name -> ..data/name.
    volume = tmp_path / "policy"
    stamped = volume / "..2026_11_22_20_00_00.000000001"
    stamped.mkdir(parents=True)
    for source in REGO.glob("*.rego"):
        (stamped / source.name).write_text(source.read_text())
    (stamped / "data.json").write_text((REGO / "data.json").read_text())
    (volume / "..data").symlink_to(stamped.name)
    for entry in stamped.iterdir():
        (volume / entry.name).symlink_to(Path("..data") / entry.name)
    policy = load_policy(volume, include_tests=True)
    assert sorted(m.name for m in policy.modules) == sorted(p.name for p in REGO.glob("*.rego"))
    assert EmbeddedEngine(volume).evaluate(base_input()).allow
