"""FHIR R4 AuditEvent (IHE BALP, with the OAuth variant carrying the jti) and Provenance export of audit logs as NDJSON.

One AuditEvent per record. A write the EHR stored becomes a BALP PatientCreate / PatientUpdate
event (type `rest`, subtype the FHIR interaction, the patient and the resource as entities), and
also follows the BALP OAUTHaccessTokenUse.Minimal pattern: an agent of type UserOauthAgent whose
`policy` is `urn:ietf:params:oauth:jti:<jti>` of the token that authorized it. `token.minted` is an
OAUTHaccessTokenUse event of its own. Every other record is a Patient Record (DICOM 110110) or
Application Activity (DICOM 110100) event whose subtype is the record's kind. Each event names its
record (log origin, seq, line SHA-256) so it can be traced back to what was signed.

Each stored write also gets a Provenance: target the resource version, the agent as author (on
behalf of its user), each approving reviewer as verifier, the policy revision, the purpose of use.
Context a record does not carry (patient, encounter, agent, purpose of use) comes from its
proposal's `proposal.received` record, gathered in a first pass over every log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sidecar.audit.files import read_lines
from sidecar.audit.records import RecordFormatError, parse_line

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
USER_AGENT_TYPES = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
KIND_SYSTEM = "https://chartgate.dev/fhir/CodeSystem/audit-kind"
AGENT_SYSTEM = "urn:chartgate:agent"
USER_SYSTEM = "urn:chartgate:user"
PROPOSAL_SYSTEM = "urn:chartgate:proposal"
TENANT_SYSTEM = "urn:chartgate:tenant"

_ADMIN_PREFIXES = ("admin.", "audit.")
_FAILED_MINOR = {"failed_retryable", "ambiguous", "blocked", "expired", "rejected"}
_FAILED_SERIOUS = {"failed_final", "dead_lettered", "mismatch"}


@dataclass
class _Proposal:
    """What a proposal's `proposal.received` says, and what later records add to it."""

    patient: str = ""
    encounter: str = ""
    agent: str = ""
    tenant: str = ""
    on_behalf_of: str = ""
    purpose_of_use: str = ""
    resource_type: str = ""
    tool: str = ""
    trace_id: str = ""
    model_version: str = ""
    prompt_version: str = ""
    jti: str = ""
    approvers: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExportStats:
    audit_events: int
    provenances: int
    skipped: int


def _records(path: Path) -> Iterator[tuple[int, Any, str]]:
    """(seq, record, line sha256) of every readable record of a log; unreadable lines are
    skipped (verify the log first: `chartgate audit verify`)."""
    with path.open("rb", buffering=1024 * 1024) as handle:
        for raw in read_lines(handle):
            if not raw.terminated or raw.oversized:
                continue
            try:
                record = parse_line(raw.data)
            except RecordFormatError:
                continue
            yield raw.index, record, hashlib.sha256(raw.data).hexdigest()


def _gather(logs: Sequence[tuple[Path, str]]) -> dict[str, _Proposal]:
    proposals: dict[str, _Proposal] = {}
    for path, _ in logs:
        for _, record, _ in _records(path):
            body = record.body
            pid = body.get("proposal_id")
            if not isinstance(pid, str):
                continue
            item = proposals.setdefault(pid, _Proposal())
            if record.kind == "proposal.received":
                for name in (
                    "patient",
                    "encounter",
                    "agent",
                    "tenant",
                    "on_behalf_of",
                    "purpose_of_use",
                    "resource_type",
                    "tool",
                    "trace_id",
                    "model_version",
                    "prompt_version",
                ):
                    value = body.get(name)
                    if isinstance(value, str):
                        setattr(item, name, value)
            elif record.kind == "token.minted" and isinstance(body.get("jti"), str):
                item.jti = body["jti"]
            elif record.kind == "review.approved":
                reviewer = body.get("reviewer")
                if isinstance(reviewer, dict):
                    who = {"iss": str(reviewer.get("iss", "")), "sub": str(reviewer.get("sub", ""))}
                    if who not in item.approvers:
                        item.approvers.append(who)
    return proposals


def _fhir_id(origin: str, seq: int, suffix: str = "") -> str:
    # FHIR ids: [A-Za-z0-9-.]{1,64}
    return f"{hashlib.sha256(origin.encode()).hexdigest()[:16]}-{seq}{suffix}"


def _identifier_ref(system: str, value: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"identifier": {"system": system, "value": value}}
    if display:
        ref["display"] = display
    return ref


def _reviewer_ref(reviewer: dict[str, str]) -> dict[str, Any]:
    system = reviewer.get("iss") or USER_SYSTEM
    return _identifier_ref(system, reviewer.get("sub") or "unknown")


def _action(kind: str, tool: str) -> str:
    if kind in ("write.outcome", "write.submitted"):
        return "U" if tool.endswith(".update") else "C"
    if kind == "write.reconciled":
        return "R"
    return "E"


def _outcome(kind: str, body: dict[str, Any]) -> str:
    state = body.get("state") or body.get("result") or ""
    if kind in ("proposal.invalid", "proposal.key_conflict"):
        return "4"
    if kind == "policy.decision" and not body.get("allow", True):
        return "4"
    if state in _FAILED_SERIOUS or kind == "write.dead_lettered":
        return "8"
    if state in _FAILED_MINOR and kind not in ("policy.decision", "review.rejected"):
        return "4"
    return "0"


def audit_event(
    origin: str, seq: int, record: Any, digest: str, proposal: _Proposal | None
) -> dict[str, Any]:
    """One record as a FHIR R4 AuditEvent following the BALP pattern that fits it."""
    body: dict[str, Any] = dict(record.body)
    kind: str = record.kind
    ctx = proposal or _Proposal()
    agent_id = str(body.get("agent") or ctx.agent or "")
    user = str(body.get("on_behalf_of") or ctx.on_behalf_of or "")
    patient = str(body.get("patient") or ctx.patient or "")
    tenant = str(body.get("tenant") or ctx.tenant or "")
    purpose = str(body.get("purpose_of_use") or ctx.purpose_of_use or "")
    resource_type = str(body.get("resource_type") or ctx.resource_type or "")
    profiles: list[str] = []
    written = kind == "write.outcome" and body.get("state") == "accepted" and body.get("fhir_id")
    if written:
        update = ctx.tool.endswith(".update")
        event_type = {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"}
        subtype = [{"system": RESTFUL, "code": "update" if update else "create"}]
        pattern = "Update" if update else "Create"
        profiles.append(BALP + ("Patient" + pattern if patient else pattern))
    elif kind.startswith(_ADMIN_PREFIXES):
        event_type = {"system": DCM, "code": "110100", "display": "Application Activity"}
        subtype = []
    else:
        event_type = {"system": DCM, "code": "110110", "display": "Patient Record"}
        subtype = []
    subtype.append({"system": KIND_SYSTEM, "code": kind})

    agents: list[dict[str, Any]] = []
    if agent_id:
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": _identifier_ref(AGENT_SYSTEM, agent_id),
                "requestor": not user,
            }
        )
    if user:
        agents.append(
            {
                "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
                "who": _identifier_ref(USER_SYSTEM, user),
                "requestor": True,
            }
        )
    reviewer = body.get("reviewer")
    if isinstance(reviewer, dict):
        agents.append(
            {
                "type": {
                    "coding": [{"system": PARTICIPATION, "code": "VRF", "display": "verifier"}]
                },
                "who": _reviewer_ref({k: str(v) for k, v in reviewer.items()}),
                "requestor": True,
            }
        )
    operator = body.get("operator")
    if isinstance(operator, str) and operator:
        agents.append(
            {
                "type": {
                    "coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]
                },
                "who": _identifier_ref(USER_SYSTEM, operator),
                "requestor": True,
            }
        )
    jti = body.get("jti") if kind == "token.minted" else (ctx.jti if written else None)
    if isinstance(jti, str) and jti:
        # BALP OAUTHaccessTokenUse.Minimal: the user agent of the access token, by its jti.
        profiles.append(BALP + "OAUTHaccessTokenUse.Minimal")
        agents.append(
            {
                "type": {"coding": [{"system": USER_AGENT_TYPES, "code": "UserOauthAgent"}]},
                "who": _identifier_ref(
                    USER_SYSTEM if user else AGENT_SYSTEM, user or agent_id or "unknown"
                ),
                "requestor": True,
                "policy": [f"urn:ietf:params:oauth:jti:{jti}"],
            }
        )
    if not agents:
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {"display": f"chartgate audit log {origin}"},
                "requestor": False,
            }
        )

    entities: list[dict[str, Any]] = []
    if patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": {"system": OBJECT_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if written:
        version = body.get("fhir_version") or ""
        reference = f"{resource_type}/{body['fhir_id']}" + (
            f"/_history/{version}" if version else ""
        )
        entities.append(
            {
                "what": {"reference": reference},
                "type": {"system": OBJECT_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    details = [
        {"type": "audit_log", "valueString": origin},
        {"type": "audit_seq", "valueString": str(seq)},
        {"type": "audit_record_sha256", "valueString": digest},
    ]
    for name in ("payload_sha256", "policy_revision", "state", "tier", "reason", "code"):
        value = body.get(name)
        if isinstance(value, str) and value:
            details.append({"type": name, "valueString": value})
    for name, value in (
        ("trace_id", body.get("trace_id") or ctx.trace_id),
        ("model_version", body.get("model_version") or ctx.model_version),
        ("prompt_version", body.get("prompt_version") or ctx.prompt_version),
        ("encounter", body.get("encounter") or ctx.encounter),
    ):
        if isinstance(value, str) and value:
            details.append({"type": name, "valueString": value})
    proposal_id = body.get("proposal_id")
    entity: dict[str, Any] = {
        "type": {"system": OBJECT_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "20", "display": "Job"},
        "detail": details,
    }
    if isinstance(proposal_id, str) and proposal_id:
        entity["what"] = _identifier_ref(PROPOSAL_SYSTEM, proposal_id)
    entities.append(entity)

    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": _fhir_id(origin, seq),
        "type": event_type,
        "subtype": subtype,
        "action": _action(kind, ctx.tool),
        "recorded": record.ts,
        "outcome": _outcome(kind, body),
        "agent": agents,
        "source": {
            "observer": {"display": f"chartgate audit log {origin}"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    }
    if profiles:
        event["meta"] = {"profile": profiles}
    if tenant:
        event["source"]["site"] = tenant
    state = body.get("state") or body.get("result") or body.get("code")
    if isinstance(state, str) and state:
        event["outcomeDesc"] = state
    if purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": purpose}]}]
    return event


def provenance(
    origin: str, seq: int, record: Any, proposal: _Proposal | None
) -> dict[str, Any] | None:
    """The Provenance of a resource the EHR stored (None for any other record)."""
    body = record.body
    if record.kind != "write.outcome" or body.get("state") != "accepted" or not body.get("fhir_id"):
        return None
    ctx = proposal or _Proposal()
    resource_type = ctx.resource_type or "Resource"
    version = body.get("fhir_version") or ""
    target = f"{resource_type}/{body['fhir_id']}" + (f"/_history/{version}" if version else "")
    author: dict[str, Any] = {
        "type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author"}]},
        "who": _identifier_ref(AGENT_SYSTEM, ctx.agent or "unknown"),
    }
    if ctx.on_behalf_of:
        author["onBehalfOf"] = _identifier_ref(USER_SYSTEM, ctx.on_behalf_of)
    agents = [author]
    for reviewer in ctx.approvers:
        agents.append(
            {
                "type": {"coding": [{"system": PROVENANCE_AGENT, "code": "verifier"}]},
                "who": _reviewer_ref(reviewer),
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": _fhir_id(origin, seq, "-prov"),
        "target": [{"reference": target}],
        "recorded": record.ts,
        "activity": {
            "coding": [
                {
                    "system": DATA_OPERATION,
                    "code": "UPDATE" if ctx.tool.endswith(".update") else "CREATE",
                }
            ]
        },
        "agent": agents,
        "entity": [
            {"role": "source", "what": {"reference": f"AuditEvent/{_fhir_id(origin, seq)}"}}
        ],
    }
    revision = body.get("policy_revision")
    if isinstance(revision, str) and revision:
        resource["policy"] = [f"urn:chartgate:policy-revision:{revision}"]
    if ctx.purpose_of_use:
        resource["reason"] = [{"coding": [{"system": ACT_REASON, "code": ctx.purpose_of_use}]}]
    return resource


def export_fhir(logs: Sequence[tuple[Path, str]], out: IO[str]) -> ExportStats:
    """Write NDJSON: one AuditEvent per record of each (log, origin), and a Provenance after
    each stored write."""
    proposals = _gather(logs)
    events = provs = 0
    for path, origin in logs:
        for seq, record, digest in _records(path):
            pid = record.body.get("proposal_id")
            ctx = proposals.get(pid) if isinstance(pid, str) else None
            out.write(
                json.dumps(audit_event(origin, seq, record, digest, ctx), separators=(",", ":"))
            )
            out.write("\n")
            events += 1
            prov = provenance(origin, seq, record, ctx)
            if prov is not None:
                out.write(json.dumps(prov, separators=(",", ":")))
                out.write("\n")
                provs += 1
    return ExportStats(events, provs, 0)
