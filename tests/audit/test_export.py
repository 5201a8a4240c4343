"""FHIR export: every resource parses as an R4 AuditEvent or Provenance (fhir.resources), BALP patterns and the jti."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.provenance import Provenance

from chartgate import keys
from sidecar.audit.events import (
    AdminKillSwitch,
    PolicyDecision,
    ProposalInvalid,
    ProposalReceived,
    Reason,
    ReviewApproved,
    Reviewer,
    TokenMinted,
    WriteOutcome,
)
from sidecar.audit.export import BALP, export_fhir
from sidecar.audit.log import AuditLog


def write_run(path: Path, key: keys.SigningKey) -> str:
    with AuditLog(path, key, origin="chartgate.example/audit/sidecar-0") as log:
        log.append_event(
            ProposalReceived(
                proposal_id="pr-1",
                agent="scribe-agent",
                tenant="st-mary",
                idempotency_key="k1",
                tool="fhir.update",
                resource_type="Patient",
                target="Patient/p-1",
                patient="p-1",
                purpose_of_use="TREAT",
                on_behalf_of="dr-who",
                trace_id="5ad0bf1e2c3d4e5f60718293a4b5c6d7",
                model_version="m-1",
                prompt_version="p-7",
                payload_sha256="ab" * 32,
            )
        )
        log.append_event(
            PolicyDecision(
                proposal_id="pr-1", allow=True, tier="approval", reasons=(Reason("r", "t"),)
            )
        )
        log.append_event(
            ReviewApproved(
                proposal_id="pr-1", approval_id="ap-1", reviewer=Reviewer("https://idp", "alice")
            )
        )
        log.append_event(
            TokenMinted(proposal_id="pr-1", jti="jti-123", policy_revision="sha256:cd")
        )
        log.append_event(
            WriteOutcome(
                proposal_id="pr-1",
                state="accepted",
                fhir_id="p-1",
                fhir_version="4",
                policy_revision="sha256:cd",
            )
        )
        log.append_event(
            ProposalInvalid(agent="scribe-agent", tenant="st-mary", fields=("patient_id",))
        )
        log.append_event(
            AdminKillSwitch(operator="ops-1", engaged=True, scope="tenant", target="st-mary")
        )
        return log.origin


def exported(tmp_path: Path, key: keys.SigningKey) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    origin = write_run(path, key)
    out = io.StringIO()
    stats = export_fhir([(path, origin)], out)
    lines = out.getvalue().splitlines()
    assert (stats.audit_events, stats.provenances) == (7, 1)
    assert len(lines) == 8
    return [json.loads(line) for line in lines]


def test_every_resource_is_valid_fhir_r4(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    for resource in exported(tmp_path, signing_key):
        model = AuditEvent if resource["resourceType"] == "AuditEvent" else Provenance
        model.model_validate(resource)


def test_the_write_follows_balp_patient_update_and_oauth_token_use(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    resources = exported(tmp_path, signing_key)
    write = resources[4]
    assert set(write["meta"]["profile"]) == {
        BALP + "PatientUpdate",
        BALP + "OAUTHaccessTokenUse.Minimal",
    }
    assert write["type"]["code"] == "rest"
    assert {"system": "http://hl7.org/fhir/restful-interaction", "code": "update"} in write[
        "subtype"
    ]
    assert write["action"] == "U"
    assert write["outcome"] == "0"
    oauth = [a for a in write["agent"] if a["type"]["coding"][0]["code"] == "UserOauthAgent"]
    assert oauth[0]["policy"] == ["urn:ietf:params:oauth:jti:jti-123"]
    references = [e["what"].get("reference") for e in write["entity"]]
    assert "Patient/p-1" in references
    assert "Patient/p-1/_history/4" in references
    assert write["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert write["source"]["site"] == "st-mary"
    details = {d["type"]: d["valueString"] for e in write["entity"] for d in e.get("detail", [])}
    assert details["audit_seq"] == "4"
    assert details["trace_id"] == "5ad0bf1e2c3d4e5f60718293a4b5c6d7"
    assert details["model_version"] == "m-1"
    # The token record is its own OAuth token-use event, with the jti and not the token.
    token = resources[3]
    assert token["meta"]["profile"] == [BALP + "OAUTHaccessTokenUse.Minimal"]
    assert "urn:ietf:params:oauth:jti:jti-123" in json.dumps(token)


def test_provenance_of_the_stored_write(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    provenance = exported(tmp_path, signing_key)[5]
    assert provenance["resourceType"] == "Provenance"
    assert provenance["target"] == [{"reference": "Patient/p-1/_history/4"}]
    assert provenance["activity"]["coding"][0]["code"] == "UPDATE"
    author, verifier = provenance["agent"]
    assert author["who"]["identifier"]["value"] == "scribe-agent"
    assert author["onBehalfOf"]["identifier"]["value"] == "dr-who"
    assert verifier["type"]["coding"][0]["code"] == "verifier"
    assert verifier["who"]["identifier"] == {"system": "https://idp", "value": "alice"}
    assert provenance["policy"] == ["urn:chartgate:policy-revision:sha256:cd"]


def test_refusals_and_operator_actions(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    resources = exported(tmp_path, signing_key)
    invalid, admin = resources[6], resources[7]
    assert invalid["outcome"] == "4"
    assert admin["type"]["code"] == "110100"
    assert any(a["who"]["identifier"]["value"] == "ops-1" for a in admin["agent"])
    # No clinical content: only identifiers, codes and hashes reach the export.
    assert "valueQuantity" not in json.dumps(resources)
