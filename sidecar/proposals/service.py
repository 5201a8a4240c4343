"""The Propose pipeline: validate, record idempotently, decide, then hold, block or write, auditing each step."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from sidecar.adapter_client import AdapterOutcome
from sidecar.config import SidecarConfig
from sidecar.consent import ConsentDirectory
from sidecar.errors import (
    AuditUnavailable,
    IdempotencyConflict,
    IllegalTransition,
    InvalidProposal,
    LedgerUnavailable,
    ProposalNotFound,
)
from sidecar.policy.engine import Decision, PolicyEngine, Tier, deny
from sidecar.policy.input import ProposalContext, build_input
from sidecar.proposals.lifecycle import State
from sidecar.storage.ledger import Ledger, ProposalRecord
from sidecar.tokens.mint import TokenMinter, WriteGrant
from sidecar.validation.fhir import ValidatedWrite, validate_write
from sidecar.validation.request import validate_request_fields

log = logging.getLogger("chartgate.sidecar")

_SCOPE_LETTER = {"create": "c", "update": "u"}
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

T = TypeVar("T")


class AuditSink(Protocol):
    def append(self, kind: str, body: Mapping[str, Any], *, durable: bool = True) -> Any: ...


class AdapterPort(Protocol):
    def write(self, token: str, canonical_payload: bytes) -> AdapterOutcome: ...


@dataclass(frozen=True, slots=True)
class ProposeCommand:
    """One Propose call as the pipeline sees it (decoupled from protobuf)."""

    idempotency_key: str
    tool: str
    resource_type: str
    resource_json: str
    context: ProposalContext


def proposal_id_for(tenant_id: str, agent_id: str, idempotency_key: str) -> str:
    """Deterministic: a retry after a lost ledger row still gets the same id, and so the same
    stamped identifier, which the EHR's conditional create turns into "already there"."""
    digest = hashlib.sha256(f"{tenant_id}\x00{agent_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"pr-{digest[:32]}"


class ProposalService:
    """The policy enforcement point for one agent (identity and scopes from configuration)."""

    def __init__(
        self,
        config: SidecarConfig,
        ledger: Ledger,
        engine: PolicyEngine,
        consents: ConsentDirectory,
        minter: TokenMinter,
        adapter: AdapterPort,
        audit: AuditSink,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._engine = engine
        self._consents = consents
        self._minter = minter
        self._adapter = adapter
        self._audit = audit

    def _audit_append(self, kind: str, body: Mapping[str, Any], *, durable: bool = True) -> None:
        """Append an audit record; a log that cannot take it stops the proposal here, retryable:
        nothing after this step happens unaudited (docs/errors.md, `audit.unavailable`)."""
        try:
            self._audit.append(kind, body, durable=durable)
        except (ValueError, OSError, RuntimeError) as exc:
            log.error("audit log refused a %s record: %s", kind, type(exc).__name__)
            raise AuditUnavailable(
                "the audit log could not record this step, so the proposal stopped before it; "
                "retry with the same idempotency key"
            ) from None

    def get(self, proposal_id: str) -> ProposalRecord:
        record = self._guard_ledger(lambda: self._ledger.get(proposal_id))
        if (
            record is None
            or record.agent_id != self._config.agent_id
            or record.tenant_id != self._config.tenant_id
        ):
            raise ProposalNotFound("no proposal with this id exists for this agent")
        return record

    @staticmethod
    def _guard_ledger(call: Callable[[], T]) -> T:
        """Run a ledger call; a storage failure is `ledger.unavailable` (retryable), not a crash."""
        try:
            return call()
        except sqlite3.Error as exc:
            log.error("ledger failed: %s", type(exc).__name__)
            raise LedgerUnavailable(
                "the proposal ledger is unavailable; retry with the same idempotency key"
            ) from None

    def propose(self, command: ProposeCommand) -> ProposalRecord:
        try:
            write = self._validate(command)
        except InvalidProposal as exc:
            # What was refused, by field name and reason code; never a value the agent sent
            # (the key and trace id only once they passed validation). Not made durable on its
            # own (a refusal has no effect; the next durable record covers it), so a flood of
            # malformed requests cannot make every one cost an fsync; and if the log cannot take
            # it, the agent still learns what to fix.
            fields = {v.field for v in exc.violations}
            with contextlib.suppress(AuditUnavailable):
                self._audit_append(
                    "proposal.invalid",
                    {
                        "agent": self._config.agent_id,
                        "tenant": self._config.tenant_id,
                        "idempotency_key": ""
                        if "idempotency_key" in fields
                        else command.idempotency_key,
                        "trace_id": "" if "trace_id" in fields else command.context.trace_id,
                        "fields": sorted(fields)[:50],
                        "reasons": sorted({v.reason for v in exc.violations})[:50],
                    },
                    durable=False,
                )
            raise
        ctx = command.context
        record, created = self._guard_ledger(
            lambda: self._ledger.insert_or_get(
                ProposalRecord(
                    proposal_id=proposal_id_for(
                        self._config.tenant_id, self._config.agent_id, command.idempotency_key
                    ),
                    tenant_id=self._config.tenant_id,
                    agent_id=self._config.agent_id,
                    idempotency_key=command.idempotency_key,
                    payload_sha256=write.payload.sha256,
                    payload=write.payload.canonical,
                    tool=write.tool,
                    resource_type=write.resource_type,
                    target=write.target,
                    patient_id=ctx.patient_id,
                    encounter_id=ctx.encounter_id,
                    trace_id=ctx.trace_id,
                    # Validation ran before the ledger saw the proposal, so it enters as validated.
                    state=State.VALIDATED,
                )
            )
        )
        if not created:
            return self._replay(record, write, ctx)
        return self._decide_and_act(record, write, ctx)

    def _decide_and_act(
        self, record: ProposalRecord, write: ValidatedWrite, ctx: ProposalContext
    ) -> ProposalRecord:
        """From `validated` on: audit the proposal, decide, then hold, block or write it."""
        self._audit_append(
            "proposal.received",
            {
                "proposal_id": record.proposal_id,
                "agent": record.agent_id,
                "tenant": record.tenant_id,
                "idempotency_key": record.idempotency_key,
                "tool": record.tool,
                "resource_type": record.resource_type,
                "target": record.target,
                "fields": list(write.fields),
                "patient": ctx.patient_id,
                "encounter": ctx.encounter_id,
                "purpose_of_use": ctx.purpose_of_use,
                "on_behalf_of": ctx.on_behalf_of,
                "model_version": ctx.model_version,
                "prompt_version": ctx.prompt_version,
                "confidence": ctx.confidence,
                "mode": ctx.mode,
                "evidence_refs": list(ctx.evidence_refs),
                "trace_id": ctx.trace_id,
                "payload_sha256": record.payload_sha256,
            },
            # Made durable by the policy.decision append that always follows (group commit).
            durable=False,
        )
        decision = self._decide(write, ctx)
        record = self._apply_decision(record, decision)
        if record.state is State.APPROVED:
            ttl = decision.obligations.get("token_ttl_seconds")
            record = self._submit(record, write, ctx, ttl if isinstance(ttl, int) else None)
        return record

    def _decide(self, write: ValidatedWrite, ctx: ProposalContext) -> Decision:
        """Evaluate policy; engines never raise by contract, and if one does anyway, deny."""
        try:
            return self._engine.evaluate(
                build_input(self._config, write, ctx, self._consents.for_patient(ctx.patient_id))
            )
        except Exception as exc:  # fail closed on any engine defect
            log.exception("policy engine raised; denying")
            return deny(
                "policy.engine_error",
                f"the policy engine failed ({type(exc).__name__}); denying",
                revision=getattr(self._engine, "revision", "unknown"),
                engine=getattr(self._engine, "name", "unknown"),
            )

    def _validate(self, command: ProposeCommand) -> ValidatedWrite:
        """Every request field first (bounded, formats checked, never echoed); the resource only
        once they pass, so it is checked against a patient id that is known to be well formed."""
        ctx = command.context
        violations = validate_request_fields(
            idempotency_key=command.idempotency_key,
            patient_id=ctx.patient_id,
            encounter_id=ctx.encounter_id,
            purpose_of_use=ctx.purpose_of_use,
            on_behalf_of=ctx.on_behalf_of,
            model_version=ctx.model_version,
            prompt_version=ctx.prompt_version,
            confidence=ctx.confidence,
            mode=ctx.mode,
            evidence_refs=ctx.evidence_refs,
            trace_id=ctx.trace_id,
        )
        if violations:
            raise InvalidProposal("the proposal is malformed", tuple(violations))
        return validate_write(
            tool=command.tool,
            resource_type=command.resource_type,
            resource_json=command.resource_json,
            patient_id=ctx.patient_id,
        )

    def _replay(
        self, existing: ProposalRecord, write: ValidatedWrite, ctx: ProposalContext
    ) -> ProposalRecord:
        """Same key again: the same proposal if it is the same write, else a clear refusal. A
        proposal left `validated` (a failure between the ledger insert and the decision: the
        audit log was unavailable, the process died) is decided now, so it never stays there,
        and one left `approved` is sent; compare-and-set lets only one of several concurrent
        retries move it."""
        same = (
            existing.payload_sha256 == write.payload.sha256
            and existing.tool == write.tool
            and existing.resource_type == write.resource_type
            and existing.patient_id == ctx.patient_id
            and existing.encounter_id == ctx.encounter_id
        )
        self._audit_append(
            "proposal.replayed" if same else "proposal.key_conflict",
            {
                "proposal_id": existing.proposal_id,
                "idempotency_key": existing.idempotency_key,
                "payload_sha256": write.payload.sha256,
                "trace_id": ctx.trace_id,
            },
        )
        if not same:
            raise IdempotencyConflict(
                f"this idempotency key was already used for a different write (proposal "
                f"{existing.proposal_id}); use a new key for a new write"
            )
        try:
            if existing.state is State.VALIDATED:
                return self._decide_and_act(existing, write, ctx)
            if existing.state is State.APPROVED:
                # Decided and audited, never sent (the token record or the process failed in
                # between): send it now, with the configured token lifetime (the decision's
                # obligations are not stored yet; policy may only shorten it).
                return self._submit(existing, write, ctx, None)
        except IllegalTransition:
            # Another attempt moved it first; report where it is.
            current = self._guard_ledger(lambda: self._ledger.get(existing.proposal_id))
            return current if current is not None else existing
        return existing

    def _apply_decision(self, record: ProposalRecord, decision: Decision) -> ProposalRecord:
        if not decision.allow or decision.tier is Tier.BLOCKED:
            target = State.BLOCKED
        elif decision.tier is Tier.AUTONOMOUS:
            target = State.APPROVED
        else:
            target = State.PENDING_APPROVAL
        reasons = tuple(
            {"code": r.code, "message": r.message, "rule": r.rule} for r in decision.reasons
        )
        # The decision record is made durable before the ledger moves: a proposal never leaves
        # `validated` without its decision in the audit log, so nothing is written undecided.
        self._audit_append(
            "policy.decision",
            {
                "proposal_id": record.proposal_id,
                "allow": decision.allow,
                "tier": decision.tier.value,
                "reasons": [{"code": r.code, "rule": r.rule} for r in decision.reasons],
                "policy_revision": decision.revision,
                "engine": decision.engine,
                "state": target.value,
            },
        )
        updated = self._guard_ledger(
            lambda: self._ledger.transition(
                record.proposal_id,
                State.VALIDATED,
                target,
                tier=decision.tier.value,
                reasons=reasons,
                policy_revision=decision.revision,
            )
        )
        return updated

    def _submit(
        self,
        record: ProposalRecord,
        write: ValidatedWrite,
        ctx: ProposalContext,
        ttl: int | None,
    ) -> ProposalRecord:
        """From `approved`: mint a one-write token, record the submission, write, record what
        came of it. The move to `submitted` happens before the write leaves (compare-and-set),
        so of several processes resuming one approved proposal exactly one sends it."""
        scope = f"patient/{write.resource_type}.{_SCOPE_LETTER[write.operation]}"
        minted = self._minter.mint(
            WriteGrant(
                proposal_id=record.proposal_id,
                tenant_id=record.tenant_id,
                agent_id=record.agent_id,
                on_behalf_of=ctx.on_behalf_of,
                patient_id=ctx.patient_id,
                scope=scope,
                operation=write.operation,
                target=write.target,
                payload_sha256=record.payload_sha256,
            ),
            ttl_seconds=ttl,
        )
        self._audit_append(
            "token.minted",
            {
                "proposal_id": record.proposal_id,
                "jti": minted.jti,
                "audience": self._config.adapter_audience,
                "scope": scope,
                "expires_at": minted.expires_at,
                "payload_sha256": record.payload_sha256,
                "policy_revision": record.policy_revision,
            },
        )
        record = self._guard_ledger(
            lambda: self._ledger.transition(record.proposal_id, State.APPROVED, State.SUBMITTED)
        )
        outcome = self._adapter.write(minted.token, record.payload)
        if outcome.ok:
            target = State.ACCEPTED
            reasons: tuple[Mapping[str, str], ...] = record.reasons
        else:
            if outcome.code in _RETRYABLE:
                target = State.FAILED_RETRYABLE
            elif outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED:
                target = State.AMBIGUOUS
            else:
                target = State.FAILED_FINAL
            reasons = (
                *record.reasons,
                {"code": outcome.reason, "message": outcome.message, "rule": "adapter"},
            )
        updated = self._guard_ledger(
            lambda: self._ledger.transition(
                record.proposal_id,
                State.SUBMITTED,
                target,
                fhir_id=outcome.fhir_id,
                fhir_version=outcome.fhir_version,
                reasons=reasons,
            )
        )
        self._audit_append(
            "write.outcome",
            {
                "proposal_id": record.proposal_id,
                "state": target.value,
                "fhir_id": outcome.fhir_id,
                "fhir_version": outcome.fhir_version,
                "already_existed": outcome.already_existed,
                "http_status": outcome.http_status,
                "grpc_code": outcome.code.name,
                "reason": outcome.reason,
                "policy_revision": record.policy_revision,
            },
        )
        return updated
