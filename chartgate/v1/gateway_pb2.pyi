from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProposalState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROPOSAL_STATE_UNSPECIFIED: _ClassVar[ProposalState]
    PROPOSAL_STATE_RECEIVED: _ClassVar[ProposalState]
    PROPOSAL_STATE_VALIDATED: _ClassVar[ProposalState]
    PROPOSAL_STATE_INVALID: _ClassVar[ProposalState]
    PROPOSAL_STATE_BLOCKED: _ClassVar[ProposalState]
    PROPOSAL_STATE_PENDING_APPROVAL: _ClassVar[ProposalState]
    PROPOSAL_STATE_APPROVED: _ClassVar[ProposalState]
    PROPOSAL_STATE_REJECTED: _ClassVar[ProposalState]
    PROPOSAL_STATE_EXPIRED: _ClassVar[ProposalState]
    PROPOSAL_STATE_SUPERSEDED: _ClassVar[ProposalState]
    PROPOSAL_STATE_SUBMITTED: _ClassVar[ProposalState]
    PROPOSAL_STATE_ACCEPTED: _ClassVar[ProposalState]
    PROPOSAL_STATE_FAILED_RETRYABLE: _ClassVar[ProposalState]
    PROPOSAL_STATE_FAILED_FINAL: _ClassVar[ProposalState]
    PROPOSAL_STATE_AMBIGUOUS: _ClassVar[ProposalState]
    PROPOSAL_STATE_DEAD_LETTERED: _ClassVar[ProposalState]
    PROPOSAL_STATE_RECONCILED: _ClassVar[ProposalState]
    PROPOSAL_STATE_MISMATCH: _ClassVar[ProposalState]

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_AUTONOMOUS: _ClassVar[Tier]
    TIER_APPROVAL: _ClassVar[Tier]
    TIER_DUAL_APPROVAL: _ClassVar[Tier]
    TIER_BLOCKED: _ClassVar[Tier]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_LIVE: _ClassVar[Mode]
    MODE_BATCH: _ClassVar[Mode]
PROPOSAL_STATE_UNSPECIFIED: ProposalState
PROPOSAL_STATE_RECEIVED: ProposalState
PROPOSAL_STATE_VALIDATED: ProposalState
PROPOSAL_STATE_INVALID: ProposalState
PROPOSAL_STATE_BLOCKED: ProposalState
PROPOSAL_STATE_PENDING_APPROVAL: ProposalState
PROPOSAL_STATE_APPROVED: ProposalState
PROPOSAL_STATE_REJECTED: ProposalState
PROPOSAL_STATE_EXPIRED: ProposalState
PROPOSAL_STATE_SUPERSEDED: ProposalState
PROPOSAL_STATE_SUBMITTED: ProposalState
PROPOSAL_STATE_ACCEPTED: ProposalState
PROPOSAL_STATE_FAILED_RETRYABLE: ProposalState
PROPOSAL_STATE_FAILED_FINAL: ProposalState
PROPOSAL_STATE_AMBIGUOUS: ProposalState
PROPOSAL_STATE_DEAD_LETTERED: ProposalState
PROPOSAL_STATE_RECONCILED: ProposalState
PROPOSAL_STATE_MISMATCH: ProposalState
TIER_UNSPECIFIED: Tier
TIER_AUTONOMOUS: Tier
TIER_APPROVAL: Tier
TIER_DUAL_APPROVAL: Tier
TIER_BLOCKED: Tier
MODE_UNSPECIFIED: Mode
MODE_LIVE: Mode
MODE_BATCH: Mode

class ProposeRequest(_message.Message):
    __slots__ = ("idempotency_key", "tool", "resource_type", "resource_json", "patient_id", "encounter_id", "purpose_of_use", "on_behalf_of", "model_version", "prompt_version", "confidence", "mode", "evidence_refs", "trace_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENCOUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_REFS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    tool: str
    resource_type: str
    resource_json: str
    patient_id: str
    encounter_id: str
    purpose_of_use: str
    on_behalf_of: str
    model_version: str
    prompt_version: str
    confidence: float
    mode: Mode
    evidence_refs: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., tool: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_json: _Optional[str] = ..., patient_id: _Optional[str] = ..., encounter_id: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., model_version: _Optional[str] = ..., prompt_version: _Optional[str] = ..., confidence: _Optional[float] = ..., mode: _Optional[_Union[Mode, str]] = ..., evidence_refs: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "message", "rule")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    rule: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class Proposal(_message.Message):
    __slots__ = ("proposal_id", "idempotency_key", "state", "tier", "reasons", "payload_sha256", "policy_revision", "fhir_id", "fhir_version", "resource_type", "tool", "trace_id", "created_at", "updated_at", "approvals_required", "approvals_given", "expires_at", "supersedes", "superseded_by", "decision_receipt", "reconciliation")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    FHIR_ID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_GIVEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECISION_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    RECONCILIATION_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    idempotency_key: str
    state: ProposalState
    tier: Tier
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    payload_sha256: str
    policy_revision: str
    fhir_id: str
    fhir_version: str
    resource_type: str
    tool: str
    trace_id: str
    created_at: str
    updated_at: str
    approvals_required: int
    approvals_given: int
    expires_at: str
    supersedes: str
    superseded_by: str
    decision_receipt: AuditReceipt
    reconciliation: Reconciliation
    def __init__(self, proposal_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., state: _Optional[_Union[ProposalState, str]] = ..., tier: _Optional[_Union[Tier, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., payload_sha256: _Optional[str] = ..., policy_revision: _Optional[str] = ..., fhir_id: _Optional[str] = ..., fhir_version: _Optional[str] = ..., resource_type: _Optional[str] = ..., tool: _Optional[str] = ..., trace_id: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., approvals_required: _Optional[int] = ..., approvals_given: _Optional[int] = ..., expires_at: _Optional[str] = ..., supersedes: _Optional[str] = ..., superseded_by: _Optional[str] = ..., decision_receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ..., reconciliation: _Optional[_Union[Reconciliation, _Mapping]] = ...) -> None: ...

class Difference(_message.Message):
    __slots__ = ("path", "severity", "kind")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    path: str
    severity: str
    kind: str
    def __init__(self, path: _Optional[str] = ..., severity: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class Reconciliation(_message.Message):
    __slots__ = ("result", "differences", "checked_at", "lag_seconds")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    result: str
    differences: _containers.RepeatedCompositeFieldContainer[Difference]
    checked_at: str
    lag_seconds: float
    def __init__(self, result: _Optional[str] = ..., differences: _Optional[_Iterable[_Union[Difference, _Mapping]]] = ..., checked_at: _Optional[str] = ..., lag_seconds: _Optional[float] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("origin", "leaf_index", "leaf_hash", "checkpoint")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    origin: str
    leaf_index: int
    leaf_hash: str
    checkpoint: str
    def __init__(self, origin: _Optional[str] = ..., leaf_index: _Optional[int] = ..., leaf_hash: _Optional[str] = ..., checkpoint: _Optional[str] = ...) -> None: ...

class GetProposalRequest(_message.Message):
    __slots__ = ("proposal_id",)
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    def __init__(self, proposal_id: _Optional[str] = ...) -> None: ...

class WatchProposalRequest(_message.Message):
    __slots__ = ("proposal_id",)
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    def __init__(self, proposal_id: _Optional[str] = ...) -> None: ...
