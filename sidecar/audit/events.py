"""Typed audit events, one per record kind, with IHE BALP (Basic Audit Log Patterns) who/what/why/outcome fields.

Each event is a frozen dataclass with a `kind` and a `body()` that `AuditLog.append(kind, body)`
takes: `log.append(event.kind, event.body())`, or `log.append_event(event)`. Bodies hold
identifiers, codes and hashes only (docs/audit.md), under the names the records have always used,
so switching a call site from a dict to an event changes no record. The BALP mapping, used by
`chartgate audit export --format fhir` (sidecar/audit/export.py):

| BALP / FHIR AuditEvent | field |
|---|---|
| who: agent (the AI client), its user, the reviewer | `agent`, `on_behalf_of`, `reviewer` (issuer and subject) |
| what: action, entity | `action` (C, U, E), `resource_type`, `proposal_id`, `fhir_id`, `payload_sha256` |
| when | the record's own `ts` (not in the body) |
| why: purposeOfEvent | `purpose_of_use` (HL7 v3 PurposeOfUse code, e.g. TREAT) |
| outcome | `state`, `allow`, `reason` |
| trace and provenance of the request | `trace_id` (W3C traceparent trace id), `model_version`, `prompt_version` |
| OAuth token (BALP OAUTHaccessTokenUse) | `jti`, never the token |

Times inside bodies (`expires_at`) are RFC 3339. The record's own `ts` is the event time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Reviewer:
    """A human reviewer as the identity provider names them: issuer and subject."""

    iss: str
    sub: str

    def to_json(self) -> dict[str, str]:
        return {"iss": self.iss, "sub": self.sub}


@dataclass(frozen=True, slots=True)
class Reason:
    """A policy reason as recorded: its code and the rule that gave it (never its message)."""

    code: str
    rule: str = ""

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "rule": self.rule}


def _json(value: Any) -> Any:
    if isinstance(value, Reviewer | Reason):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """Base of every event: `kind` names the record; `body()` is what is signed. Fields left
    None are omitted from the body (optional BALP extras a call site may not know)."""

    kind: ClassVar[str] = ""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            out[item.name] = _json(value)
        return out


# --- the proposal: received, validated or not, replayed -----------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalReceived(AuditEvent):
    """A valid proposal entered the pipeline (validation passed: invalid ones are
    ProposalInvalid). Who, what, why and the request's provenance, by id and hash."""

    kind: ClassVar[str] = "proposal.received"
    proposal_id: str
    agent: str
    tenant: str
    idempotency_key: str
    tool: str
    resource_type: str
    target: str
    fields: Sequence[str] = ()
    patient: str = ""
    encounter: str = ""
    purpose_of_use: str = ""
    on_behalf_of: str = ""
    model_version: str = ""
    prompt_version: str = ""
    confidence: float = 0.0
    mode: str = ""
    evidence_refs: Sequence[str] = ()
    trace_id: str = ""
    payload_sha256: str = ""
    supersedes: str = ""
    action: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalInvalid(AuditEvent):
    """Validation refused a proposal: which fields and reason codes, never the values."""

    kind: ClassVar[str] = "proposal.invalid"
    agent: str
    tenant: str
    idempotency_key: str = ""
    trace_id: str = ""
    fields: Sequence[str] = ()
    reasons: Sequence[str] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalReplayed(AuditEvent):
    """The same idempotency key and payload again: the existing proposal is returned."""

    kind: ClassVar[str] = "proposal.replayed"
    proposal_id: str
    idempotency_key: str
    payload_sha256: str
    trace_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalKeyConflict(AuditEvent):
    """The same idempotency key with a different payload: refused, nothing written."""

    kind: ClassVar[str] = "proposal.key_conflict"
    proposal_id: str
    idempotency_key: str
    payload_sha256: str
    trace_id: str = ""


# --- the decision and the review ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecision(AuditEvent):
    """What policy decided and by which revision: tier, reason codes, the state it leads to and,
    when held, what the approval needs."""

    kind: ClassVar[str] = "policy.decision"
    proposal_id: str
    allow: bool
    tier: str
    reasons: Sequence[Reason] = ()
    policy_revision: str = ""
    engine: str = ""
    state: str = ""
    approvals_required: int = 0
    approver_roles: Sequence[str] = ()
    expires_at: str = ""
    trace_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyShadowDisagreement(AuditEvent):
    """A candidate (dry-run) policy decided otherwise than the enforced one. Each side is
    allow, tier, reason codes, revision and engine (sidecar.policy.shadow)."""

    kind: ClassVar[str] = "policy.shadow_disagreement"
    agent: str | None
    trace_id: str | None
    operation: str | None
    resource_type: str | None
    payload_sha256: str | None
    enforced: Mapping[str, Any]
    candidate: Mapping[str, Any]

    def body(self) -> dict[str, Any]:
        # The disagreement keeps its None members: they say the input lacked them.
        return {item.name: _json(getattr(self, item.name)) for item in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewApproved(AuditEvent):
    """One reviewer approved one payload (an approval counts for that payload hash only)."""

    kind: ClassVar[str] = "review.approved"
    proposal_id: str
    approval_id: str
    reviewer: Reviewer
    roles: Sequence[str] = ()
    payload_sha256: str = ""
    repeated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewRejected(AuditEvent):
    """A reviewer rejected a proposal, with a code; the reviewer's words stay out of the log."""

    kind: ClassVar[str] = "review.rejected"
    proposal_id: str
    reviewer: Reviewer
    code: str
    payload_sha256: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewAmended(AuditEvent):
    """A reviewer's edit became a new proposal that supersedes this one."""

    kind: ClassVar[str] = "review.amended"
    proposal_id: str
    amendment: str
    reviewer: Reviewer
    payload_sha256: str = ""
    amended_payload_sha256: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalApproved(AuditEvent):
    """The quorum was reached: these approvals of this payload."""

    kind: ClassVar[str] = "proposal.approved"
    proposal_id: str
    approvals: Sequence[str] = ()
    payload_sha256: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalEscalated(AuditEvent):
    """A held proposal's wait was escalated (its window is mostly spent)."""

    kind: ClassVar[str] = "proposal.escalated"
    proposal_id: str
    expires_at: str = ""
    approvals_required: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalExpired(AuditEvent):
    """A proposal's approval window ended before it was written; `state` is where it was."""

    kind: ClassVar[str] = "proposal.expired"
    proposal_id: str
    expires_at: str = ""
    state: str = ""


# --- the write ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenMinted(AuditEvent):
    """A one-write token (RFC 9068) was minted: its jti, audience, scope and what it binds,
    never the token itself (BALP OAUTHaccessTokenUse carries the jti)."""

    kind: ClassVar[str] = "token.minted"
    proposal_id: str
    jti: str
    audience: str = ""
    scope: str = ""
    expires_at: str = ""
    payload_sha256: str = ""
    approvals: Sequence[str] = ()
    attempt: int | None = None
    policy_revision: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteSubmitted(AuditEvent):
    """A write was handed to the adapter (an attempt, under token `jti`)."""

    kind: ClassVar[str] = "write.submitted"
    proposal_id: str
    jti: str
    attempt: int = 1
    adapter: str = ""
    action: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOutcome(AuditEvent):
    """What the EHR did with an attempt: the state it leads to, the stored resource's id and
    version, the HTTP status and failure class (never the response body)."""

    kind: ClassVar[str] = "write.outcome"
    proposal_id: str
    state: str
    attempt: int | None = None
    failure_class: str | None = None
    fhir_id: str = ""
    fhir_version: str = ""
    already_existed: bool = False
    http_status: int = 0
    reason: str = ""
    retry_after: float | None = None
    policy_revision: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteDeadLettered(AuditEvent):
    """A write's retry budget is spent: it waits for an operator (DeadLetterReplayed)."""

    kind: ClassVar[str] = "write.dead_lettered"
    proposal_id: str
    attempts: int = 0
    state: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteReconciled(AuditEvent):
    """The written resource was read back and compared with what was intended: `result` is
    `reconciled` or `mismatch`; the hashes of both sides, never their content."""

    kind: ClassVar[str] = "write.reconciled"
    proposal_id: str
    result: str
    fhir_id: str = ""
    fhir_version: str = ""
    intended_sha256: str = ""
    stored_sha256: str = ""
    mismatched_fields: Sequence[str] = ()


# --- operators ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminKillSwitch(AuditEvent):
    """An operator engaged or released a kill switch (`scope`: all, a tenant, an agent, a
    connection)."""

    kind: ClassVar[str] = "admin.kill_switch"
    operator: str
    engaged: bool
    scope: str
    target: str = ""
    reason_code: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminPolicyReloaded(AuditEvent):
    """A new policy revision took effect (or failed to: `loaded` false, the old one stays)."""

    kind: ClassVar[str] = "admin.policy_reloaded"
    policy_revision: str
    previous_revision: str = ""
    engine: str = ""
    loaded: bool = True
    operator: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterReplayed(AuditEvent):
    """An operator replayed a dead-lettered write. `result`: `resent` (a fresh token, policy
    checked again: `rechecked_with` names the revision when it changed), `found` (the look-up
    found it written: `fhir_id`, `fhir_version`), or `refused_by_policy` (`tier`, `allow`)."""

    kind: ClassVar[str] = "deadletter.replayed"
    proposal_id: str
    operator: str
    result: str
    policy_revision: str | None = None
    rechecked_with: str | None = None
    fhir_id: str | None = None
    fhir_version: str | None = None
    tier: str | None = None
    allow: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterDiscarded(AuditEvent):
    """An operator discarded a dead-lettered write (`result` `discarded`, or `found` when the
    look-up found it written after all)."""

    kind: ClassVar[str] = "deadletter.discarded"
    proposal_id: str
    operator: str
    result: str
    fhir_id: str | None = None
    fhir_version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditKeyRotated(AuditEvent):
    """The log switched signing keys (written by AuditLog.rotate, or on opening with a new
    key): the old key retires at this record."""

    kind: ClassVar[str] = "audit.key_rotated"
    from_kid: str
    to_kid: str
    to_thumbprint: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecovered(AuditEvent):
    """On opening, the writer cut a torn tail off the log (the bytes are kept beside it)."""

    kind: ClassVar[str] = "audit.recovered"
    truncated_at: int
    bytes: int
    pieces: int
    sha256: str
    kept_in: str


EVENT_TYPES: dict[str, type[AuditEvent]] = {
    cls.kind: cls
    for cls in (
        ProposalReceived,
        ProposalInvalid,
        ProposalReplayed,
        ProposalKeyConflict,
        PolicyDecision,
        PolicyShadowDisagreement,
        ReviewApproved,
        ReviewRejected,
        ReviewAmended,
        ProposalApproved,
        ProposalEscalated,
        ProposalExpired,
        TokenMinted,
        WriteSubmitted,
        WriteOutcome,
        WriteDeadLettered,
        WriteReconciled,
        AdminKillSwitch,
        AdminPolicyReloaded,
        DeadLetterReplayed,
        DeadLetterDiscarded,
        AuditKeyRotated,
        AuditRecovered,
    )
}
"""Every kind the sidecar writes, to its event type."""


def action_of(tool: str) -> str:
    """The FHIR AuditEvent.action code (C, U) of a write tool, `E` (execute) otherwise."""
    if tool.endswith(".create"):
        return "C"
    if tool.endswith(".update"):
        return "U"
    return "E"


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A record body read back by kind, tolerant of fields it does not know (for export and
    search): `event` when it fits its type, always `raw`."""

    kind: str
    raw: Mapping[str, Any]
    event: AuditEvent | None = field(default=None)


def parse_event(kind: str, body: Mapping[str, Any]) -> ParsedBody:
    """Read a body back into its event type, ignoring unknown members; `event` is None for an
    unknown kind or a body that lacks a required field."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return ParsedBody(kind, body)
    names = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, value in body.items():
        if name not in names:
            continue
        if name == "reviewer" and isinstance(value, Mapping):
            value = Reviewer(str(value.get("iss", "")), str(value.get("sub", "")))
        elif name == "reasons" and kind == "policy.decision" and isinstance(value, list):
            value = tuple(
                Reason(str(r.get("code", "")), str(r.get("rule", "")))
                for r in value
                if isinstance(r, Mapping)
            )
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        return ParsedBody(kind, body, cls(**values))
    except TypeError:
        return ParsedBody(kind, body)
