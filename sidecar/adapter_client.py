"""The sidecar's gRPC client for the adapter hop (chartgate.v1.Adapter): Write and Lookup, outcomes as data.

The adapter classifies what happened at the EHR and says so in the answer. What the sidecar
classifies itself is only the hop: a call that never reached the adapter (connection refused) is
`transport` (nothing was sent anywhere); any other failed call may have reached the adapter and
the EHR behind it, so it is `ambiguous` and settled by a look-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from chartgate.v1 import adapter_pb2, adapter_pb2_grpc

_PREFIX = "FAILURE_CLASS_"


def failure_name(value: int) -> str:
    """`throttled` for FAILURE_CLASS_THROTTLED; "" for unspecified or unknown values."""
    try:
        name = adapter_pb2.FailureClass.Name(value)
    except ValueError:
        return "ambiguous"  # a class this sidecar does not know: do not assume it is safe
    return "" if name == "FAILURE_CLASS_UNSPECIFIED" else name.removeprefix(_PREFIX).lower()


@dataclass(frozen=True, slots=True)
class AdapterOutcome:
    """What became of one attempt: stored (with id/version) or failed with a class and a reason."""

    ok: bool
    fhir_id: str = ""
    fhir_version: str = ""
    already_existed: bool = False
    http_status: int = 0
    failure: str = ""
    reason: str = ""
    message: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    """Whether a write is in the EHR; `failure` set when the look-up itself did not get an answer."""

    found: bool
    fhir_id: str = ""
    fhir_version: str = ""
    failure: str = ""
    reason: str = ""
    message: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """The chart's current version of an update's target; `failure` set when it could not be read."""

    found: bool
    resource_json: bytes = b""
    fhir_version: str = ""
    failure: str = ""
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class ReadBackOutcome:
    """A written version as the EHR holds it; `failure` set when it could not be read."""

    found: bool
    resource_json: bytes = b""
    provenance_found: bool = False
    # The EHR takes no Provenance writes: the audit log's export holds it instead.
    provenance_not_accepted: bool = False
    failure: str = ""
    reason: str = ""
    message: str = ""


def _hop_failure(exc: grpc.RpcError) -> tuple[str, str, str]:
    """(class, reason, message) of a failed call to the adapter."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    never_left = code is grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details.lower() or "connection refused" in details.lower()
    )
    if never_left:
        return "transport", "adapter.unreachable", "the adapter is unreachable; nothing was sent"
    return (
        "ambiguous",
        "adapter.no_answer",
        f"no answer from the adapter ({code.name}); whether the write happened is unknown",
    )


class AdapterClient:
    def __init__(self, target: str, timeout_seconds: float) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = adapter_pb2_grpc.AdapterStub(self._channel)
        self._timeout = timeout_seconds

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    def write(self, token: str, canonical_payload: bytes) -> AdapterOutcome:
        """Send one write; never raises for an RPC failure, returns it as an outcome instead."""
        try:
            response = self._stub.Write(
                adapter_pb2.WriteRequest(token=token, resource_json=canonical_payload),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            failure, reason, message = _hop_failure(exc)
            return AdapterOutcome(ok=False, failure=failure, reason=reason, message=message)
        if response.written:
            return AdapterOutcome(
                ok=True,
                fhir_id=response.fhir_id,
                fhir_version=response.fhir_version,
                already_existed=response.already_existed,
                http_status=response.http_status,
            )
        return AdapterOutcome(
            ok=False,
            http_status=response.http_status,
            failure=failure_name(response.failure_class) or "ambiguous",
            reason=response.reason or "adapter.failed",
            message=response.message,
            retry_after=max(0.0, min(response.retry_after_seconds, 3600.0)),
        )

    def lookup(self, token: str, canonical_payload: bytes) -> LookupOutcome:
        """Ask whether a proposal's write is in the EHR; never raises."""
        try:
            response = self._stub.Lookup(
                adapter_pb2.LookupRequest(token=token, resource_json=canonical_payload),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            _, reason, message = _hop_failure(exc)
            # A look-up writes nothing: whether or not it arrived, it is simply tried again.
            return LookupOutcome(found=False, failure="transport", reason=reason, message=message)
        return LookupOutcome(
            found=response.found,
            fhir_id=response.fhir_id,
            fhir_version=response.fhir_version,
            failure=failure_name(response.failure_class),
            reason=response.reason,
            message=response.message,
            retry_after=max(0.0, min(response.retry_after_seconds, 3600.0)),
        )

    def read_current(self, token: str, canonical_payload: bytes) -> ReadOutcome:
        """The current version of an update's target, for a reviewer's diff; never raises."""
        try:
            response = self._stub.ReadCurrent(
                adapter_pb2.LookupRequest(token=token, resource_json=canonical_payload),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            _, reason, message = _hop_failure(exc)
            return ReadOutcome(found=False, failure="transport", reason=reason, message=message)
        return ReadOutcome(
            found=response.found,
            resource_json=response.resource_json,
            fhir_version=response.fhir_version,
            failure=failure_name(response.failure_class),
            reason=response.reason,
            message=response.message,
        )

    def read_back(
        self, token: str, canonical_payload: bytes, fhir_id: str, fhir_version: str
    ) -> ReadBackOutcome:
        """The exact version a write stored, and whether its Provenance exists; never raises."""
        try:
            response = self._stub.ReadBack(
                adapter_pb2.LookupRequest(
                    token=token,
                    resource_json=canonical_payload,
                    fhir_id=fhir_id,
                    fhir_version=fhir_version,
                ),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            _, reason, message = _hop_failure(exc)
            return ReadBackOutcome(found=False, failure="transport", reason=reason, message=message)
        return ReadBackOutcome(
            found=response.found,
            resource_json=response.resource_json,
            provenance_found=response.provenance_found,
            provenance_not_accepted=response.provenance_not_accepted,
            failure=failure_name(response.failure_class),
            reason=response.reason,
            message=response.message,
        )

    def close(self) -> None:
        self._channel.close()
