"""The adapter process: serves chartgate.v1.Adapter, verifying each token before its one FHIR write."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import AdapterError, FailureClass, payload_error, token_error
from adapters.fhir_client import FhirClient, WriteResult
from adapters.replay import JtiStore
from adapters.tokens import TokenVerifier, VerifiedWrite
from chartgate.compartment import patient_of
from chartgate.grpc_server import build_server
from chartgate.keys import load_keyset
from chartgate.rpc_errors import abort
from chartgate.v1 import adapter_pb2, adapter_pb2_grpc

log = logging.getLogger("chartgate.adapter")

SERVICE_NAME = adapter_pb2.DESCRIPTOR.services_by_name["Adapter"].full_name


class AdapterConfig(BaseModel):
    """Settings of one adapter process (one EHR connection)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:50052"
    fhir_base_url: str = Field(min_length=1)
    audience: str = "chartgate-adapter"
    issuer: str = "chartgate-sidecar"
    jwks_path: Path
    workdir: Path
    fhir_timeout_seconds: float = Field(default=10.0, gt=0)


class AdapterService(adapter_pb2_grpc.AdapterServicer):
    """Adapter.Write: token first, then the write; nothing is written for a refused token."""

    def __init__(self, verifier: TokenVerifier, jti_store: JtiStore, fhir: FhirClient) -> None:
        self._verifier = verifier
        self._jti = jti_store
        self._fhir = fhir

    def Write(
        self, request: adapter_pb2.WriteRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.WriteResponse:
        try:
            try:
                verified = self._verifier.verify(request.token, request.resource_json)
                result = self._write(verified)
            except AdapterError:
                raise
            except Exception as exc:
                # A defect, never UNKNOWN: it may have struck after the write left, so the
                # outcome is ambiguous (looked up, never blindly resent).
                log.exception("unexpected adapter failure (%s)", type(exc).__name__)
                raise AdapterError(
                    FailureClass.AMBIGUOUS,
                    "adapter.fault",
                    "the adapter failed unexpectedly; whether the write happened is unknown",
                ) from None
        except AdapterError as exc:
            log.warning("write refused: reason=%s class=%s", exc.reason, exc.failure)
            abort(
                context,
                exc.status,
                exc.message,
                reason=exc.reason,
                metadata={"failure_class": exc.failure.value},
            )
        log.info(
            "write done: proposal=%s %s/%s version=%s existed=%s",
            verified.proposal_id,
            verified.resource_type,
            result.fhir_id,
            result.fhir_version,
            result.already_existed,
        )
        return adapter_pb2.WriteResponse(
            fhir_id=result.fhir_id,
            fhir_version=result.fhir_version,
            already_existed=result.already_existed,
            http_status=result.http_status,
        )

    def _write(self, verified: VerifiedWrite) -> WriteResult:
        if verified.operation == "create" and patient_of(verified.resource) != verified.patient_id:
            raise payload_error(
                "payload.wrong_patient", "the body is for another patient than the token's"
            )
        # Consumed only once every check passed, just before the write: a token is good for one
        # attempt; a retry needs a fresh token from the sidecar.
        if not self._jti.consume(verified.jti, verified.expires_at):
            raise token_error("token.replayed", "this token was already used")
        if verified.operation == "create":
            return self._fhir.create(verified.resource, verified.proposal_id)
        return self._fhir.update(verified.resource, verified.patient_id)


def serve(config: AdapterConfig, *, ready: threading.Event | None = None) -> None:
    """Run the adapter until SIGTERM or SIGINT."""
    verifier = TokenVerifier(
        load_keyset(config.jwks_path), issuer=config.issuer, audience=config.audience
    )
    jti_store = JtiStore(config.workdir / "adapter" / "jti.sqlite3")
    fhir = FhirClient(config.fhir_base_url, timeout_seconds=config.fhir_timeout_seconds)
    service = AdapterService(verifier, jti_store, fhir)
    server, port, _ = build_server(
        config.listen,
        lambda s: adapter_pb2_grpc.add_AdapterServicer_to_server(service, s),
        [SERVICE_NAME],
    )
    server.start()
    log.info("adapter listening on port %d, FHIR base %s", port, config.fhir_base_url)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if ready is not None:
        ready.set()
    stop.wait()
    server.stop(grace=5).wait()
    fhir.close()
    jti_store.close()
