"""The demo's audit log, as an auditor takes it: verified with the log's keyring, searched, and exported as FHIR R4
AuditEvent and Provenance resources that fhir.resources parses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.provenance import Provenance

from chartgate.demo import run_demo
from sidecar.audit.commands import add_audit_parser, audit_command
from sidecar.audit.export import BALP
from sidecar.audit.files import LogFiles
from sidecar.policy.library import shipped_policy_dir


def cli(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="chartgate")
    add_audit_parser(parser.add_subparsers(dest="command"))
    return audit_command(parser.parse_args(["audit", *map(str, argv)]))


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    assert run_demo(workdir, shipped_policy_dir()) == 0
    (log,) = workdir.glob("demo/run-*/audit/audit.jsonl")
    return log


def test_demo_export_is_valid_fhir_r4(
    demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = LogFiles(demo_log).keyring
    assert cli("verify", demo_log, "--keyring", keyring, "--quiet") == 0
    out = tmp_path / "audit.ndjson"
    assert cli("export", demo_log, "--format", "fhir", "--out", out, "--keyring", keyring) == 0
    resources = [json.loads(line) for line in out.read_text().splitlines()]
    records = [json.loads(line) for line in demo_log.read_text().splitlines()]
    events = [r for r in resources if r["resourceType"] == "AuditEvent"]
    provenances = [r for r in resources if r["resourceType"] == "Provenance"]
    assert len(events) == len(records)
    for resource in events:
        AuditEvent.model_validate(resource)
    for resource in provenances:
        Provenance.model_validate(resource)
    # One Provenance per resource the EHR stored, each naming the agent as author.
    stored = [
        r for r in records if r["kind"] == "write.outcome" and r["body"]["state"] == "accepted"
    ]
    assert len(provenances) == len(stored) >= 3
    for provenance in provenances:
        assert provenance["agent"][0]["type"]["coding"][0]["code"] == "author"
    # Approved writes name their reviewers as verifiers.
    assert any(
        a["type"]["coding"][0]["code"] == "verifier" for p in provenances for a in p["agent"]
    )
    # BALP OAuth token use: every minted token's jti, and never a token.
    jtis = {r["body"]["jti"] for r in records if r["kind"] == "token.minted"}
    text = out.read_text()
    for jti in jtis:
        assert f"urn:ietf:params:oauth:jti:{jti}" in text
    assert "eyJ" not in text  # no JWT anywhere
    profiles = {p for e in events for p in e.get("meta", {}).get("profile", [])}
    assert BALP + "OAUTHaccessTokenUse.Minimal" in profiles
    assert profiles & {BALP + "PatientCreate", BALP + "PatientUpdate"}


def test_demo_log_search_by_patient_and_reviewer(
    demo_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [json.loads(line) for line in demo_log.read_text().splitlines()]
    capsys.readouterr()
    assert cli("search", demo_log, "--patient", "demo-patient-1", "--kind", "write.outcome") == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(found) == sum(1 for r in records if r["kind"] == "write.outcome")
    reviewer = next(r for r in records if r["kind"] == "review.approved")["body"]["reviewer"]["sub"]
    assert cli("search", demo_log, "--reviewer", reviewer) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert hits
    assert all(h["body"]["reviewer"]["sub"] == reviewer for h in hits)
