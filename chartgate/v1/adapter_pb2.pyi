from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class WriteRequest(_message.Message):
    __slots__ = ("token", "resource_json")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    token: str
    resource_json: bytes
    def __init__(self, token: _Optional[str] = ..., resource_json: _Optional[bytes] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("fhir_id", "fhir_version", "already_existed", "http_status")
    FHIR_ID_FIELD_NUMBER: _ClassVar[int]
    FHIR_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_EXISTED_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    fhir_id: str
    fhir_version: str
    already_existed: bool
    http_status: int
    def __init__(self, fhir_id: _Optional[str] = ..., fhir_version: _Optional[str] = ..., already_existed: _Optional[bool] = ..., http_status: _Optional[int] = ...) -> None: ...
