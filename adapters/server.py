"""The adapter process: serves chartgate.v1.Adapter, verifying each token before its one FHIR write."""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.errors import AdapterError, FailureClass, payload_error, token_error
from adapters.fhir_client import Companion, FhirClient, WriteResult
from adapters.provenance import labels_for, provenance_for, provenance_id, version_target
from adapters.replay import JtiStore
from adapters.resilience import CircuitBreaker, TokenBucket
from adapters.smart import BackendServicesAuth, SmartSettings
from adapters.tokens import TokenVerifier, VerifiedWrite
from adapters.vendors.gate import check_write
from adapters.vendors.profile import VendorProfile
from adapters.vendors.registry import get_profile
from adapters.vendors.transport import VendorTransport
from chartgate.canonical import canonicalize
from chartgate.compartment import patient_of
from chartgate.grpc_server import build_server
from chartgate.keys import load_keyset
from chartgate.v1 import adapter_pb2, adapter_pb2_grpc
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM

log = logging.getLogger("chartgate.adapter")

SERVICE_NAME = adapter_pb2.DESCRIPTOR.services_by_name["Adapter"].full_name

T = TypeVar("T")


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
    # What this EHR connection may take (requests a second, burst); None: no limit.
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    rate_limit_burst: int = Field(default=20, ge=1)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cool_down_seconds: float = Field(default=10.0, gt=0)
    # SMART Backend Services to the EHR (docs/smart.md); None: requests carry no Authorization.
    smart: SmartSettings | None = None
    # The EHR's vendor profile (docs/adapters.md) and the per-connection values it needs.
    vendor: str = "generic"
    vendor_settings: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_vendor(self) -> AdapterConfig:
        # At start, not on the first write: an unknown vendor or a missing setting stops here.
        get_profile(self.vendor).check_settings(self.vendor_settings)
        return self


# The classes a breaker counts as the EHR failing (not the request being wrong).
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_BREAKER_FAILURES = frozenset(
    {
        FailureClass.TRANSPORT,
        FailureClass.AMBIGUOUS,
        FailureClass.SERVER_ERROR,
        FailureClass.THROTTLED,
    }
)


def _refused(exc: AdapterError) -> adapter_pb2.WriteResponse:
    return adapter_pb2.WriteResponse(
        written=False,
        failure_class=exc.failure.proto,
        reason=exc.reason,
        message=exc.message[:1000],
        http_status=exc.http_status,
        retry_after_seconds=exc.retry_after or 0.0,
    )


class AdapterService(adapter_pb2_grpc.AdapterServicer):
    """Adapter.Write and Adapter.Lookup: token first, then the rate limit and the breaker, then the
    one exchange with the EHR; every outcome returned as data (its failure class included)."""

    def __init__(
        self,
        verifier: TokenVerifier,
        jti_store: JtiStore,
        fhir: FhirClient,
        *,
        bucket: TokenBucket | None = None,
        breaker: CircuitBreaker | None = None,
        vendor: VendorProfile | None = None,
    ) -> None:
        self._verifier = verifier
        self._jti = jti_store
        self._fhir = fhir
        self._bucket = bucket
        self._breaker = breaker or CircuitBreaker()
        self._vendor = vendor or get_profile("generic")

    def Write(
        self, request: adapter_pb2.WriteRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.WriteResponse:
        try:
            verified = self._verifier.verify(request.token, request.resource_json)
            if verified.lookup:
                raise token_error("token.scope", "a look-up token does not authorize a write")
            # What the vendor does not take is refused here: before the token is spent, the
            # rate limit charged or anything sent (its transport would refuse it again).
            check_write(self._vendor, verified.operation, verified.resource_type, verified.resource)
            result, provenance = self._guarded(lambda: self._write(verified))
        except AdapterError as exc:
            log.warning("write refused: reason=%s class=%s", exc.reason, exc.failure)
            return _refused(exc)
        except Exception as exc:
            # A defect, never UNKNOWN: it may have struck after the write left, so the outcome
            # is ambiguous (looked up, never blindly resent).
            log.error("unexpected adapter failure (%s)", type(exc).__name__)
            return _refused(
                AdapterError(
                    FailureClass.AMBIGUOUS,
                    "adapter.fault",
                    "the adapter failed unexpectedly; whether the write happened is unknown",
                )
            )
        if provenance is None and not result.already_existed:
            # Not written with the resource: right after it, then. A create that found its
            # resource already there (a resend) leaves the Provenance as the first attempt left
            # it: rewriting it would point it at whatever version is current now.
            provenance = self._provenance(verified, result)
        log.info(
            "write done: proposal=%s %s/%s version=%s existed=%s",
            verified.proposal_id,
            verified.resource_type,
            result.fhir_id,
            result.fhir_version,
            result.already_existed,
        )
        return adapter_pb2.WriteResponse(
            written=True,
            fhir_id=result.fhir_id,
            fhir_version=result.fhir_version,
            already_existed=result.already_existed,
            http_status=result.http_status,
            provenance_id=provenance or "",
        )

    def Lookup(
        self, request: adapter_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.LookupResponse:
        try:
            verified = self._verifier.verify(request.token, request.resource_json)
            if not verified.lookup:
                raise token_error("token.scope", "a write token does not authorize a look-up")
            if not self._jti.consume(verified.jti, verified.expires_at):
                raise token_error("token.replayed", "this token was already used")
            if verified.operation == "create":
                found = self._guarded(
                    lambda: self._fhir.find_created(verified.resource_type, verified.proposal_id)
                )
            else:
                found = self._guarded(
                    lambda: self._fhir.find_updated(verified.resource, verified.patient_id)
                )
        except AdapterError as exc:
            log.warning("look-up failed: reason=%s class=%s", exc.reason, exc.failure)
            return adapter_pb2.LookupResponse(
                found=False,
                failure_class=exc.failure.proto,
                reason=exc.reason,
                message=exc.message[:1000],
                retry_after_seconds=exc.retry_after or 0.0,
            )
        except Exception as exc:
            log.error("unexpected adapter failure in a look-up (%s)", type(exc).__name__)
            return adapter_pb2.LookupResponse(
                found=False,
                failure_class=FailureClass.TRANSPORT.proto,
                reason="adapter.fault",
                message="the adapter failed unexpectedly; look again later",
            )
        log.info("look-up: proposal=%s found=%s", verified.proposal_id, found is not None)
        if found is None:
            return adapter_pb2.LookupResponse(found=False)
        return adapter_pb2.LookupResponse(
            found=True, fhir_id=found.fhir_id, fhir_version=found.fhir_version
        )

    def ReadCurrent(
        self, request: adapter_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.ReadResponse:
        try:
            verified = self._verifier.verify(request.token, request.resource_json)
            if not verified.lookup:
                raise token_error("token.scope", "a write token does not authorize a read")
            if verified.operation != "update":
                raise token_error("token.scope", "only an update's target has a current version")
            if not self._jti.consume(verified.jti, verified.expires_at):
                raise token_error("token.replayed", "this token was already used")
            current = self._guarded(
                lambda: self._fhir.read_current(verified.resource, verified.patient_id)
            )
            found = current is not None and current.body is not None
            resource_json = canonicalize(current.body) if found and current else b""
        except AdapterError as exc:
            log.warning("read failed: reason=%s class=%s", exc.reason, exc.failure)
            return adapter_pb2.ReadResponse(
                found=False,
                failure_class=exc.failure.proto,
                reason=exc.reason,
                message=exc.message[:1000],
            )
        except Exception as exc:
            log.error("unexpected adapter failure in a read (%s)", type(exc).__name__)
            return adapter_pb2.ReadResponse(
                found=False,
                failure_class=FailureClass.TRANSPORT.proto,
                reason="adapter.fault",
                message="the adapter failed unexpectedly",
            )
        if not found or current is None:
            return adapter_pb2.ReadResponse(found=False)
        return adapter_pb2.ReadResponse(
            found=True, resource_json=resource_json, fhir_version=current.fhir_version
        )

    def ReadBack(
        self, request: adapter_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.ReadBackResponse:
        try:
            verified = self._verifier.verify(request.token, request.resource_json)
            if not verified.lookup:
                raise token_error("token.scope", "a write token does not authorize a read")
            if not self._jti.consume(verified.jti, verified.expires_at):
                raise token_error("token.replayed", "this token was already used")
            fhir_id, version = request.fhir_id, request.fhir_version
            if not all(_FHIR_ID.fullmatch(v) and v.strip(".") for v in (fhir_id, version)):
                # Both go into the read's URL: FHIR ids only (datatypes.html#id), and not a
                # dot-segment, so no path, query or traversal can be smuggled in.
                raise payload_error("payload.no_version", "name the stored id and version")
            if verified.operation == "update" and fhir_id != verified.resource_id:
                raise payload_error("payload.wrong_target", "not the resource the token names")
            stored = self._guarded(
                lambda: self._fhir.read_version(verified.resource_type, fhir_id, version)
            )
            if stored is not None:
                _check_own(verified, stored)
            stored_json = canonicalize(stored) if stored is not None else b""
            accepted = self._provenance_accepted()
            provenance = (
                stored is not None
                and accepted
                and self._guarded(
                    lambda: self._fhir.exists("Provenance", provenance_id(verified.proposal_id))
                )
            )
            if stored is not None and accepted and not provenance:
                # A write whose answer was lost (settled by a look-up) never got its
                # Provenance: write it now, for the version the write stored.
                written = WriteResult(fhir_id, version, True, 200)
                provenance = bool(self._provenance(verified, written))
        except AdapterError as exc:
            log.warning("read-back failed: reason=%s class=%s", exc.reason, exc.failure)
            return adapter_pb2.ReadBackResponse(
                found=False,
                failure_class=exc.failure.proto,
                reason=exc.reason,
                message=exc.message[:1000],
            )
        except Exception as exc:
            log.error("unexpected adapter failure in a read-back (%s)", type(exc).__name__)
            return adapter_pb2.ReadBackResponse(
                found=False,
                failure_class=FailureClass.TRANSPORT.proto,
                reason="adapter.fault",
                message="the adapter failed unexpectedly",
            )
        if stored is None:
            return adapter_pb2.ReadBackResponse(found=False)
        return adapter_pb2.ReadBackResponse(
            found=True,
            resource_json=stored_json,
            provenance_found=bool(provenance),
            provenance_not_accepted=not accepted,
        )

    def _guarded(self, exchange: Callable[[], T]) -> T:
        """Run one EHR exchange through the rate limit and the circuit breaker: refused before
        sending (safe to retry, with the time to wait) or counted by the breaker."""
        admission = self._breaker.admit()
        if not admission.allowed:
            raise AdapterError(
                FailureClass.CIRCUIT_OPEN,
                "adapter.circuit_open",
                "the EHR connection is failing; the adapter is not sending for now",
                retry_after=admission.wait_seconds,
            )
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait > 0:
                if admission.probe:
                    self._breaker.release()  # not the EHR's answer: it neither opens nor closes
                raise AdapterError(
                    FailureClass.THROTTLED,
                    "adapter.rate_limited",
                    "the adapter's rate limit for this EHR is reached",
                    retry_after=wait,
                )
        try:
            result = exchange()
        except AdapterError as exc:
            self._breaker.record(exc.failure not in _BREAKER_FAILURES)
            raise
        except Exception:
            # Counted too: a probe left unreported would hold the breaker half-open for good.
            self._breaker.record(False)
            raise
        self._breaker.record(True)
        return result

    def _write(self, verified: VerifiedWrite) -> tuple[WriteResult, str | None]:
        """The write, and its Provenance's id when it went in the same transaction (None: it
        is still to be written)."""
        if verified.operation == "create" and patient_of(verified.resource) != verified.patient_id:
            raise payload_error(
                "payload.wrong_patient", "the body is for another patient than the token's"
            )
        # Consumed only once every check passed, just before the write: a token is good for one
        # attempt; a retry needs a fresh token from the sidecar.
        if not self._jti.consume(verified.jti, verified.expires_at):
            raise token_error("token.replayed", "this token was already used")
        labels = labels_for(verified)
        if self._in_transaction(verified):
            companion = Companion.of(lambda target: provenance_for(verified, target))
            if verified.operation == "create":
                written = self._fhir.create_in_transaction(
                    verified.resource, verified.proposal_id, labels, companion
                )
            else:
                written = self._fhir.update_in_transaction(
                    verified.resource, verified.patient_id, labels, companion
                )
            return written, provenance_id(verified.proposal_id)
        if verified.operation == "create":
            return self._fhir.create(verified.resource, verified.proposal_id, labels), None
        return self._fhir.update(verified.resource, verified.patient_id, labels), None

    def _in_transaction(self, verified: VerifiedWrite) -> bool:
        """Whether the write and its Provenance go in one transaction: where the EHR takes
        transactions, the Provenance, and (for the create inside it) conditional create; and
        not for a resent create, which may find the first attempt's resource (and so its
        Provenance) stored: in a transaction the Provenance would be rewritten regardless."""
        conditionals = self._vendor.conditionals
        resent_create = verified.operation == "create" and verified.attempt > 1
        return (
            conditionals.transactions
            and conditionals.conditional_create
            and self._provenance_accepted()
            and not resent_create
        )

    def _provenance_accepted(self) -> bool:
        """Whether this EHR takes the Provenance PUT (update-as-create); where it does not, the
        write's Provenance is the audit log's export (docs/adapter.md, "AI provenance")."""
        return self._vendor.accepts("update", "Provenance")

    def _provenance(self, verified: VerifiedWrite, result: WriteResult) -> str:
        """The written version's Provenance; "" when it could not be written now (the write
        itself stands: reconciliation finds the Provenance missing and says so) or the EHR
        does not take it."""
        if not self._provenance_accepted():
            return ""
        try:
            return self._guarded(
                lambda: self._fhir.put_provenance(
                    provenance_for(
                        verified,
                        version_target(verified.resource_type, result.fhir_id, result.fhir_version),
                    )
                )
            )
        except AdapterError as exc:
            log.warning("provenance not written: reason=%s class=%s", exc.reason, exc.failure)
            return ""
        except Exception as exc:  # the write stands whatever happens here: never UNKNOWN
            log.error("provenance not written: unexpected %s", type(exc).__name__)
            return ""


def _check_own(verified: VerifiedWrite, stored: dict[str, Any]) -> None:
    """A read-back returns only the proposal's own resource: in the token's patient's chart,
    and for a create, carrying the proposal's identifier stamp."""
    if patient_of(stored) != verified.patient_id:
        raise payload_error("payload.wrong_patient", "the stored resource is another patient's")
    if verified.operation == "create":
        stamps = stored.get("identifier")
        own = isinstance(stamps, list) and any(
            isinstance(i, dict)
            and i.get("system") == PROPOSAL_IDENTIFIER_SYSTEM
            and i.get("value") == verified.proposal_id
            for i in stamps
        )
        if not own:
            raise payload_error("payload.wrong_target", "not the resource this proposal wrote")


def serve(config: AdapterConfig, *, ready: threading.Event | None = None) -> None:
    """Run the adapter until SIGTERM or SIGINT."""
    verifier = TokenVerifier(
        load_keyset(config.jwks_path), issuer=config.issuer, audience=config.audience
    )
    jti_store = JtiStore(config.workdir / "adapter" / "jti.sqlite3")
    # Fails here, at start, on an unreadable or unsuitable key (SigningKeyError names the file).
    auth = BackendServicesAuth.from_settings(config.smart) if config.smart else None
    vendor = get_profile(config.vendor)
    if config.smart is not None:
        for mismatch in vendor.token_mismatches(
            config.smart.alg, config.smart.assertion_lifetime_seconds
        ):
            log.warning("SMART settings: %s (docs/adapters.md)", mismatch)
    # The vendor's quirks live in the transport under the client (adapters/vendors/transport.py).
    transport = VendorTransport(
        vendor, base_url=config.fhir_base_url, settings=config.vendor_settings
    )
    fhir = FhirClient(
        config.fhir_base_url,
        timeout_seconds=config.fhir_timeout_seconds,
        auth=auth,
        transport=transport,
    )
    bucket = (
        TokenBucket(config.rate_limit_per_second, config.rate_limit_burst)
        if config.rate_limit_per_second
        else None
    )
    breaker = CircuitBreaker(config.breaker_threshold, config.breaker_cool_down_seconds)
    service = AdapterService(
        verifier, jti_store, fhir, bucket=bucket, breaker=breaker, vendor=vendor
    )
    server, port, _ = build_server(
        config.listen,
        lambda s: adapter_pb2_grpc.add_AdapterServicer_to_server(service, s),
        [SERVICE_NAME],
    )
    server.start()
    log.info(
        "adapter listening on port %d, FHIR base %s, vendor %s, SMART %s",
        port,
        config.fhir_base_url,
        vendor.name,
        f"client {config.smart.client_id}" if config.smart else "off",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if ready is not None:
        ready.set()
    stop.wait()
    server.stop(grace=5).wait()
    fhir.close()
    jti_store.close()
