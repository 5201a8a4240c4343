"""AI provenance on every write: HL7 AI Transparency on FHIR security labels and a Provenance resource.

Labels (https://build.fhir.org/ig/HL7/aitransparency-ig/, "Labeling"; value set
http://hl7.org/fhir/uv/aitransparency/ValueSet/ProvenanceVS): `AIAST` (Artificial Intelligence
asserted) from http://terminology.hl7.org/CodeSystem/v3-ObservationValue on every resource an
agent wrote, and `CLINAST` (clinician asserted, the same code system) as well when reviewers
approved it. The adapter adds them from the signed token: an agent can neither set nor remove
them (policy refuses an agent's `meta.security`, docs/policy.md, and an update keeps the chart's
labels: adapters/fhir_client.py `merge_update`).

Provenance (FHIR R4 provenance.html; the IG's "Provenance" level): `target` the written version;
`agent` the AI (a contained Device carrying the model and prompt versions) acting on behalf of
the person the token names, and each approving reviewer as a verifier; `entity` the evidence the
agent cited (role `source`). Its id is derived from the proposal, and it is written with a PUT,
so a retried write never makes a second Provenance. Where the EHR takes transactions it is
written in the same transaction as the resource (http.html#transaction), so one is never stored
without the other; elsewhere right after the write, and by the read-back if that failed.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from typing import Any, Final

from adapters.tokens import VerifiedWrite

SECURITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
AI_ASSERTED: Final = {
    "system": SECURITY_SYSTEM,
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
CLINICIAN_ASSERTED: Final = {
    "system": SECURITY_SYSTEM,
    "code": "CLINAST",
    "display": "clinician asserted",
}
PARTICIPANT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
REVIEWER_SYSTEM: Final = "urn:chartgate:reviewer"
_REFERENCE_TYPES: Final = frozenset({"Practitioner", "PractitionerRole", "Person", "RelatedPerson"})


def labels_for(verified: VerifiedWrite) -> list[dict[str, str]]:
    """The AI Transparency labels this write carries: AIAST, and CLINAST once approved."""
    return [dict(AI_ASSERTED), *([dict(CLINICIAN_ASSERTED)] if verified.approvals else [])]


def with_labels(resource: dict[str, Any], labels: list[dict[str, str]]) -> dict[str, Any]:
    """A copy of `resource` whose `meta.security` holds the labels (added once; every label the
    chart already had stays)."""
    labelled = copy.deepcopy(resource)
    meta = labelled.get("meta")
    if not isinstance(meta, dict):
        meta = {}
        labelled["meta"] = meta
    security = meta.get("security")
    kept = [c for c in security if isinstance(c, dict)] if isinstance(security, list) else []
    have = {(c.get("system"), c.get("code")) for c in kept}
    kept.extend(c for c in labels if (c["system"], c["code"]) not in have)
    meta["security"] = kept
    return labelled


def provenance_id(proposal_id: str) -> str:
    """A stable id per proposal (FHIR ids are [A-Za-z0-9-.]{1,64}). A proposal writes exactly
    one version, so this is one Provenance per written version; and it is known before the write,
    so a transaction can carry the Provenance with the resource."""
    digest = hashlib.sha256(f"chartgate-provenance|{proposal_id}".encode()).hexdigest()
    return f"cg-{digest[:48]}"


def version_target(resource_type: str, fhir_id: str, version: str) -> dict[str, Any]:
    """The Provenance target of a version already written: version-specific, as provenance.html
    asks where possible."""
    target = f"{resource_type}/{fhir_id}"
    return {"reference": f"{target}/_history/{version}" if version else target}


# FHIR Extensions Pack, "Resolve as version specific" (usable on Reference): in a transaction,
# the server resolves the reference to the version the same transaction writes.
RESOLVE_AS_VERSION_SPECIFIC: Final = (
    "http://hl7.org/fhir/StructureDefinition/resolve-as-version-specific"
)


def transaction_target(full_url: str) -> dict[str, Any]:
    """The Provenance target of a resource written in the same transaction (http.html#trules:
    the server replaces the entry's urn:uuid with the id it assigned)."""
    return {
        "reference": full_url,
        "extension": [{"url": RESOLVE_AS_VERSION_SPECIFIC, "valueBoolean": True}],
    }


def _who(reference: str) -> dict[str, Any]:
    """A FHIR reference when the text is one (`Practitioner/x`), else an identifier."""
    head, _, tail = reference.partition("/")
    if head in _REFERENCE_TYPES and tail and "/" not in tail:
        return {"reference": reference}
    return {"identifier": {"system": REVIEWER_SYSTEM, "value": reference}}


def provenance_for(
    verified: VerifiedWrite, target: dict[str, Any], recorded: datetime | None = None
) -> dict[str, Any]:
    """The Provenance of the version `target` references (version_target, transaction_target)."""
    account = verified.provenance
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": "agent",
        "deviceName": [{"name": verified.agent_id or "agent", "type": "user-friendly-name"}],
        "type": {"text": "AI agent"},
    }
    versions = []
    if account is not None and account.model_version:
        versions.append({"type": {"text": "model"}, "value": account.model_version})
    if account is not None and account.prompt_version:
        versions.append({"type": {"text": "prompt"}, "value": account.prompt_version})
    if versions:
        device["version"] = versions
    author: dict[str, Any] = {
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]},
        "who": {"reference": "#agent"},
    }
    if verified.on_behalf_of:
        author["onBehalfOf"] = _who(verified.on_behalf_of)
    agents = [author]
    for reviewer in account.reviewers if account is not None else ():
        agents.append(
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "verifier"}]},
                "who": _who(reviewer),
            }
        )
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": provenance_id(verified.proposal_id),
        "meta": {"security": [dict(AI_ASSERTED)]},
        "contained": [device],
        "target": [copy.deepcopy(target)],
        "recorded": (recorded or datetime.now(UTC)).isoformat(timespec="seconds"),
        "agent": agents,
    }
    evidence = account.evidence_refs if account is not None else ()
    if evidence:
        provenance["entity"] = [{"role": "source", "what": _who_any(ref)} for ref in evidence]
    return provenance


def _who_any(reference: str) -> dict[str, Any]:
    """Evidence: a relative reference `Type/id` as a reference, anything else as display."""
    head, _, tail = reference.partition("/")
    if head[:1].isupper() and tail and "/" not in tail:
        return {"reference": reference}
    return {"display": reference[:512]}
