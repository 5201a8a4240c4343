from chartgate.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectionCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECTION_CODE_UNSPECIFIED: _ClassVar[RejectionCode]
    REJECTION_CODE_WRONG_PATIENT: _ClassVar[RejectionCode]
    REJECTION_CODE_NOT_SUPPORTED_BY_EVIDENCE: _ClassVar[RejectionCode]
    REJECTION_CODE_CLINICALLY_INAPPROPRIATE: _ClassVar[RejectionCode]
    REJECTION_CODE_DUPLICATE: _ClassVar[RejectionCode]
    REJECTION_CODE_INCOMPLETE: _ClassVar[RejectionCode]
    REJECTION_CODE_OTHER: _ClassVar[RejectionCode]
REJECTION_CODE_UNSPECIFIED: RejectionCode
REJECTION_CODE_WRONG_PATIENT: RejectionCode
REJECTION_CODE_NOT_SUPPORTED_BY_EVIDENCE: RejectionCode
REJECTION_CODE_CLINICALLY_INAPPROPRIATE: RejectionCode
REJECTION_CODE_DUPLICATE: RejectionCode
REJECTION_CODE_INCOMPLETE: RejectionCode
REJECTION_CODE_OTHER: RejectionCode

class Approval(_message.Message):
    __slots__ = ("approval_id", "issuer", "subject", "roles", "payload_sha256", "created_at")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    issuer: str
    subject: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    payload_sha256: str
    created_at: str
    def __init__(self, approval_id: _Optional[str] = ..., issuer: _Optional[str] = ..., subject: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., payload_sha256: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class ReviewItem(_message.Message):
    __slots__ = ("proposal", "resource_json", "fields", "operation", "patient_id", "encounter_id", "agent_id", "on_behalf_of", "purpose_of_use", "evidence_refs", "model_version", "prompt_version", "confidence", "mode", "approver_roles", "approvals", "seconds_to_expiry", "escalated_at", "may_approve", "current_resource_json", "current_resource_note")
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENCOUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_REFS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    APPROVER_ROLES_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_TO_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_AT_FIELD_NUMBER: _ClassVar[int]
    MAY_APPROVE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RESOURCE_NOTE_FIELD_NUMBER: _ClassVar[int]
    proposal: _gateway_pb2.Proposal
    resource_json: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    operation: str
    patient_id: str
    encounter_id: str
    agent_id: str
    on_behalf_of: str
    purpose_of_use: str
    evidence_refs: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    prompt_version: str
    confidence: float
    mode: _gateway_pb2.Mode
    approver_roles: _containers.RepeatedScalarFieldContainer[str]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    seconds_to_expiry: int
    escalated_at: str
    may_approve: bool
    current_resource_json: str
    current_resource_note: str
    def __init__(self, proposal: _Optional[_Union[_gateway_pb2.Proposal, _Mapping]] = ..., resource_json: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., operation: _Optional[str] = ..., patient_id: _Optional[str] = ..., encounter_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., purpose_of_use: _Optional[str] = ..., evidence_refs: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., prompt_version: _Optional[str] = ..., confidence: _Optional[float] = ..., mode: _Optional[_Union[_gateway_pb2.Mode, str]] = ..., approver_roles: _Optional[_Iterable[str]] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., seconds_to_expiry: _Optional[int] = ..., escalated_at: _Optional[str] = ..., may_approve: _Optional[bool] = ..., current_resource_json: _Optional[str] = ..., current_resource_note: _Optional[str] = ...) -> None: ...

class ListPendingRequest(_message.Message):
    __slots__ = ("tenant_id", "tier", "patient_id", "resource_type", "min_age_seconds", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MIN_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tier: _gateway_pb2.Tier
    patient_id: str
    resource_type: str
    min_age_seconds: int
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., tier: _Optional[_Union[_gateway_pb2.Tier, str]] = ..., patient_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., min_age_seconds: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListPendingResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReviewItem]
    def __init__(self, items: _Optional[_Iterable[_Union[ReviewItem, _Mapping]]] = ...) -> None: ...

class GetReviewRequest(_message.Message):
    __slots__ = ("proposal_id",)
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    def __init__(self, proposal_id: _Optional[str] = ...) -> None: ...

class ApproveRequest(_message.Message):
    __slots__ = ("proposal_id", "payload_sha256")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    payload_sha256: str
    def __init__(self, proposal_id: _Optional[str] = ..., payload_sha256: _Optional[str] = ...) -> None: ...

class RejectRequest(_message.Message):
    __slots__ = ("proposal_id", "code", "message")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    code: RejectionCode
    message: str
    def __init__(self, proposal_id: _Optional[str] = ..., code: _Optional[_Union[RejectionCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class AmendRequest(_message.Message):
    __slots__ = ("proposal_id", "resource_json")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    resource_json: str
    def __init__(self, proposal_id: _Optional[str] = ..., resource_json: _Optional[str] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("proposal_id",)
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    def __init__(self, proposal_id: _Optional[str] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("at", "kind", "actor", "detail")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    at: str
    kind: str
    actor: str
    detail: str
    def __init__(self, at: _Optional[str] = ..., kind: _Optional[str] = ..., actor: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class History(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ...) -> None: ...

class AmendResponse(_message.Message):
    __slots__ = ("original", "amendment")
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    AMENDMENT_FIELD_NUMBER: _ClassVar[int]
    original: ReviewItem
    amendment: ReviewItem
    def __init__(self, original: _Optional[_Union[ReviewItem, _Mapping]] = ..., amendment: _Optional[_Union[ReviewItem, _Mapping]] = ...) -> None: ...

class DeliveryAttempt(_message.Message):
    __slots__ = ("at", "attempt", "outcome", "reason", "http_status", "result")
    AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    at: float
    attempt: int
    outcome: str
    reason: str
    http_status: int
    result: str
    def __init__(self, at: _Optional[float] = ..., attempt: _Optional[int] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., http_status: _Optional[int] = ..., result: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("proposal", "tenant_id", "agent_id", "resource_type", "operation", "attempts", "history")
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    proposal: _gateway_pb2.Proposal
    tenant_id: str
    agent_id: str
    resource_type: str
    operation: str
    attempts: int
    history: _containers.RepeatedCompositeFieldContainer[DeliveryAttempt]
    def __init__(self, proposal: _Optional[_Union[_gateway_pb2.Proposal, _Mapping]] = ..., tenant_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., operation: _Optional[str] = ..., attempts: _Optional[int] = ..., history: _Optional[_Iterable[_Union[DeliveryAttempt, _Mapping]]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("tenant_id", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, items: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class DeadLetterRequest(_message.Message):
    __slots__ = ("proposal_id",)
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    def __init__(self, proposal_id: _Optional[str] = ...) -> None: ...
