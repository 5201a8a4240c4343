from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_CLASS_UNSPECIFIED: _ClassVar[FailureClass]
    FAILURE_CLASS_TRANSPORT: _ClassVar[FailureClass]
    FAILURE_CLASS_AMBIGUOUS: _ClassVar[FailureClass]
    FAILURE_CLASS_THROTTLED: _ClassVar[FailureClass]
    FAILURE_CLASS_SERVER_ERROR: _ClassVar[FailureClass]
    FAILURE_CLASS_VALIDATION: _ClassVar[FailureClass]
    FAILURE_CLASS_AUTHORIZATION: _ClassVar[FailureClass]
    FAILURE_CLASS_CONFLICT: _ClassVar[FailureClass]
    FAILURE_CLASS_BUSINESS_RULE: _ClassVar[FailureClass]
    FAILURE_CLASS_CIRCUIT_OPEN: _ClassVar[FailureClass]
    FAILURE_CLASS_TOKEN: _ClassVar[FailureClass]
    FAILURE_CLASS_PAYLOAD: _ClassVar[FailureClass]
FAILURE_CLASS_UNSPECIFIED: FailureClass
FAILURE_CLASS_TRANSPORT: FailureClass
FAILURE_CLASS_AMBIGUOUS: FailureClass
FAILURE_CLASS_THROTTLED: FailureClass
FAILURE_CLASS_SERVER_ERROR: FailureClass
FAILURE_CLASS_VALIDATION: FailureClass
FAILURE_CLASS_AUTHORIZATION: FailureClass
FAILURE_CLASS_CONFLICT: FailureClass
FAILURE_CLASS_BUSINESS_RULE: FailureClass
FAILURE_CLASS_CIRCUIT_OPEN: FailureClass
FAILURE_CLASS_TOKEN: FailureClass
FAILURE_CLASS_PAYLOAD: FailureClass

class WriteRequest(_message.Message):
    __slots__ = ("token", "resource_json")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    token: str
    resource_json: bytes
    def __init__(self, token: _Optional[str] = ..., resource_json: _Optional[bytes] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("fhir_id", "fhir_version", "already_existed", "http_status", "written", "failure_class", "reason", "message", "retry_after_seconds", "provenance_id")
    FHIR_ID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_EXISTED_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_ID_FIELD_NUMBER: _ClassVar[int]
    fhir_id: str
    fhir_version: str
    already_existed: bool
    http_status: int
    written: bool
    failure_class: FailureClass
    reason: str
    message: str
    retry_after_seconds: float
    provenance_id: str
    def __init__(self, fhir_id: _Optional[str] = ..., fhir_version: _Optional[str] = ..., already_existed: _Optional[bool] = ..., http_status: _Optional[int] = ..., written: _Optional[bool] = ..., failure_class: _Optional[_Union[FailureClass, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., retry_after_seconds: _Optional[float] = ..., provenance_id: _Optional[str] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("token", "resource_json", "fhir_id", "fhir_version")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    FHIR_ID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    resource_json: bytes
    fhir_id: str
    fhir_version: str
    def __init__(self, token: _Optional[str] = ..., resource_json: _Optional[bytes] = ..., fhir_id: _Optional[str] = ..., fhir_version: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("found", "fhir_id", "fhir_version", "failure_class", "reason", "message", "retry_after_seconds")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    FHIR_ID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    fhir_id: str
    fhir_version: str
    failure_class: FailureClass
    reason: str
    message: str
    retry_after_seconds: float
    def __init__(self, found: _Optional[bool] = ..., fhir_id: _Optional[str] = ..., fhir_version: _Optional[str] = ..., failure_class: _Optional[_Union[FailureClass, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., retry_after_seconds: _Optional[float] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("found", "resource_json", "fhir_version", "failure_class", "reason", "message")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    resource_json: bytes
    fhir_version: str
    failure_class: FailureClass
    reason: str
    message: str
    def __init__(self, found: _Optional[bool] = ..., resource_json: _Optional[bytes] = ..., fhir_version: _Optional[str] = ..., failure_class: _Optional[_Union[FailureClass, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReadBackResponse(_message.Message):
    __slots__ = ("found", "resource_json", "provenance_found", "provenance_not_accepted", "failure_class", "reason", "message")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FOUND_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_NOT_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    resource_json: bytes
    provenance_found: bool
    provenance_not_accepted: bool
    failure_class: FailureClass
    reason: str
    message: str
    def __init__(self, found: _Optional[bool] = ..., resource_json: _Optional[bytes] = ..., provenance_found: _Optional[bool] = ..., provenance_not_accepted: _Optional[bool] = ..., failure_class: _Optional[_Union[FailureClass, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
