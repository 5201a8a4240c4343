"""The Propose pipeline and its steps, each a function of a stored proposal: validate, record, decide, hold or submit.

`propose` is what an agent calls. `decide`, `submit` and `resume` take a ProposalRecord as the
store holds it, so any process sharing the store can continue any proposal: the replica a
reviewer's approval reached, the agent's retry, a restart. Every step is audited before its
effect: a decision is durable in the audit log before the store moves, a token's record before the
write leaves (issue 7, 8).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

from sidecar.adapter_client import (
    AdapterOutcome,
    LookupOutcome,
    ReadBackOutcome,
    ReadOutcome,
)
from sidecar.audit.events import (
    AuditEvent,
    DeadLetterDiscarded,
    DeadLetterReplayed,
    PolicyDecision,
    ProposalExpired,
    ProposalInvalid,
    ProposalKeyConflict,
    ProposalReceived,
    ProposalReplayed,
    Reason,
    TokenMinted,
    WriteDeadLettered,
    WriteOutcome,
    WriteReconciled,
    WriteSubmitted,
    action_of,
)
from sidecar.config import SidecarConfig
from sidecar.consent import ConsentDirectory
from sidecar.errors import (
    AuditUnavailable,
    ChartgateError,
    DeliveryUnavailable,
    IdempotencyConflict,
    IllegalTransition,
    InvalidProposal,
    LedgerUnavailable,
    ProposalNotFound,
    WritesThrottled,
)
from sidecar.policy.engine import Decision, PolicyEngine, Tier, deny
from sidecar.policy.input import build_input
from sidecar.proposals.delivery import BACKPRESSURE, Delivery, RetryPolicy, verdict
from sidecar.proposals.lifecycle import State
from sidecar.reconcile.compare import Difference, Severity, compare, worst
from sidecar.storage.records import ApprovalRecord, ProposalContext, ProposalQuery, ProposalRecord
from sidecar.storage.store import ProposalStore
from sidecar.tokens.mint import MintedToken, TokenMinter, WriteGrant, WriteProvenance
from sidecar.validation.fhir import ValidatedWrite, validate_write
from sidecar.validation.request import validate_request_fields
from sidecar.validation.strict_json import loads_strict

log = logging.getLogger("chartgate.sidecar")

_SCOPE_LETTER: Final = {"create": "c", "update": "u"}
# When a held proposal's wait is escalated: this share of its approval window in.
ESCALATE_AT_FRACTION: Final = 0.75
# How much longer than an adapter call may take a `submitted` write waits before it is taken for
# abandoned (its sender died) and looked up.
_STALE_MARGIN_SECONDS: Final = 2.0

T = TypeVar("T")

try:  # PostgreSQL is optional; its errors are storage errors too when it is installed.
    import psycopg

    _STORAGE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
except ImportError:  # pragma: no cover - the driver is a dependency, but a store need not use it
    _STORAGE_ERRORS = (sqlite3.Error,)


class AuditSink(Protocol):
    def append(self, kind: str, body: Mapping[str, Any], *, durable: bool = True) -> Any: ...


class AdapterPort(Protocol):
    def write(self, token: str, canonical_payload: bytes) -> AdapterOutcome: ...

    def lookup(self, token: str, canonical_payload: bytes) -> LookupOutcome: ...

    def read_current(self, token: str, canonical_payload: bytes) -> ReadOutcome: ...

    def read_back(
        self, token: str, canonical_payload: bytes, fhir_id: str, fhir_version: str
    ) -> ReadBackOutcome: ...


@dataclass(frozen=True, slots=True)
class ProposeCommand:
    """One Propose call as the pipeline sees it (decoupled from protobuf)."""

    idempotency_key: str
    tool: str
    resource_type: str
    resource_json: str
    context: ProposalContext


@dataclass(frozen=True, slots=True)
class _Issued:
    """A token minted for one attempt: what the audit record names."""

    minted: MintedToken
    scope: str
    approvals: tuple[str, ...]


def proposal_id_for(tenant_id: str, agent_id: str, idempotency_key: str) -> str:
    """Deterministic: a retry after a lost ledger row still gets the same id, and so the same
    stamped identifier, which the EHR's conditional create turns into "already there"."""
    digest = hashlib.sha256(f"{tenant_id}\x00{agent_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"pr-{digest[:32]}"


def rfc3339(moment: datetime) -> str:
    """The store's timestamp format (sorts as text in time order)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def guard_storage(call: Callable[[], T]) -> T:
    """Run a store call; a storage failure is `ledger.unavailable` (retryable), not a crash."""
    try:
        return call()
    except _STORAGE_ERRORS as exc:
        log.error("proposal store failed: %s", type(exc).__name__)
        raise LedgerUnavailable(
            "the proposal ledger is unavailable; retry with the same idempotency key"
        ) from None


class ProposalService:
    """The policy enforcement point for one agent (identity and scopes from configuration), and the
    steps any process sharing the store uses to continue a proposal."""

    def __init__(
        self,
        config: SidecarConfig,
        store: ProposalStore,
        engine: PolicyEngine,
        consents: ConsentDirectory,
        minter: TokenMinter,
        adapter: AdapterPort,
        audit: AuditSink,
        *,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._engine = engine
        self._consents = consents
        self._minter = minter
        self._adapter = adapter
        self._audit = audit
        self._clock = clock
        self._retry = retry or RetryPolicy(
            max_attempts=config.retry_max_attempts,
            base_seconds=config.retry_base_seconds,
            cap_seconds=config.retry_cap_seconds,
            max_total_seconds=config.retry_max_total_seconds,
            index_delay_seconds=config.retry_index_delay_seconds,
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._backpressure_until = 0.0
        self._adapter_timeout = float(
            getattr(adapter, "timeout_seconds", config.adapter_timeout_seconds)
        )

    @property
    def store(self) -> ProposalStore:
        return self._store

    @property
    def config(self) -> SidecarConfig:
        return self._config

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    def audit(self, event: AuditEvent, *, durable: bool = True) -> Any:
        """Append an audit record (a typed event, sidecar/audit/events.py) and return what the log
        returns; a log that cannot take it stops the proposal here, retryable: nothing after this
        step happens unaudited (docs/errors.md, `audit.unavailable`)."""
        try:
            return self._audit.append(event.kind, event.body(), durable=durable)
        except (ValueError, OSError, RuntimeError) as exc:
            log.error("audit log refused a %s record: %s", event.kind, type(exc).__name__)
            raise AuditUnavailable(
                "the audit log could not record this step, so the proposal stopped before it; "
                "retry with the same idempotency key"
            ) from None

    # --- the agent's calls ---------------------------------------------------------------------

    def get(self, proposal_id: str) -> ProposalRecord:
        """A proposal of this agent (another agent's is as good as absent)."""
        record = guard_storage(lambda: self._store.get(proposal_id))
        if (
            record is None
            or record.agent_id != self._config.agent_id
            or record.tenant_id != self._config.tenant_id
        ):
            raise ProposalNotFound("no proposal with this id exists for this agent")
        return record

    def propose(self, command: ProposeCommand) -> ProposalRecord:
        try:
            write = self._validate(command)
        except InvalidProposal as exc:
            self._audit_refusal(command, exc)
            raise
        ctx = command.context
        pid = proposal_id_for(
            self._config.tenant_id, self._config.agent_id, command.idempotency_key
        )
        if self.backpressure_seconds() > 0:
            self._admit(pid)
        record, created = guard_storage(
            lambda: self._store.insert_or_get(
                ProposalRecord(
                    proposal_id=pid,
                    tenant_id=self._config.tenant_id,
                    agent_id=self._config.agent_id,
                    idempotency_key=command.idempotency_key,
                    payload_sha256=write.payload.sha256,
                    payload=write.payload.canonical,
                    tool=write.tool,
                    operation=write.operation,
                    resource_type=write.resource_type,
                    target=write.target,
                    patient_id=ctx.patient_id,
                    encounter_id=ctx.encounter_id,
                    trace_id=ctx.trace_id,
                    # Validation ran before the store saw the proposal, so it enters validated.
                    state=State.VALIDATED,
                    context=replace(ctx, agent_scopes=tuple(self._config.agent_scopes)),
                    fields=write.fields,
                    summary=write.summary,
                )
            )
        )
        if not created:
            return self._replay(record, write, ctx)
        return self.decide(record)

    def _admit(self, proposal_id: str) -> None:
        """While the adapter asks for a pause, a new write may join this agent's queue of waiting
        writes up to `max_queued_writes`; past it the agent is told when to come back, so it
        cannot flood the EHR. A retry of a proposal already stored always gets its state."""
        bound = self._config.max_queued_writes
        waiting = guard_storage(
            lambda: self._store.find(
                ProposalQuery(
                    states=(State.APPROVED, State.FAILED_RETRYABLE, State.AMBIGUOUS),
                    tenant_id=self._config.tenant_id,
                    agent_id=self._config.agent_id,
                    limit=bound + 1,
                )
            )
        )
        if len(waiting) < bound or guard_storage(lambda: self._store.get(proposal_id)):
            return
        wait = max(1.0, self.backpressure_seconds())
        raise WritesThrottled(
            f"the EHR connection asked for a pause and {bound} writes of this agent are waiting; "
            f"nothing was recorded: propose again in {wait:.0f} s",
            retry_after_seconds=wait,
        )

    def _audit_refusal(self, command: ProposeCommand, exc: InvalidProposal) -> None:
        """What was refused, by field name and reason code; never a value the agent sent (the key
        and trace id only once they passed validation). Not made durable on its own (a refusal
        has no effect; the next durable record covers it), so a flood of malformed requests
        cannot make every one cost an fsync; if the log cannot take it, the agent still learns
        what to fix."""
        fields = {v.field for v in exc.violations}
        with contextlib.suppress(AuditUnavailable):
            self.audit(
                ProposalInvalid(
                    agent=self._config.agent_id,
                    tenant=self._config.tenant_id,
                    idempotency_key="" if "idempotency_key" in fields else command.idempotency_key,
                    trace_id="" if "trace_id" in fields else command.context.trace_id,
                    fields=sorted(fields)[:50],
                    reasons=sorted({v.reason for v in exc.violations})[:50],
                ),
                durable=False,
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
            profiles=self._config.required_profiles,
            must_support=self._config.must_support,
        )

    def _replay(
        self, existing: ProposalRecord, write: ValidatedWrite, ctx: ProposalContext
    ) -> ProposalRecord:
        """Same key again: the same proposal if it is the same write, else a clear refusal. A
        proposal a failure stopped part way is continued (`resume`), so it never stays there."""
        same = (
            existing.payload_sha256 == write.payload.sha256
            and existing.tool == write.tool
            and existing.resource_type == write.resource_type
            and existing.patient_id == ctx.patient_id
            and existing.encounter_id == ctx.encounter_id
        )
        replay_event = ProposalReplayed if same else ProposalKeyConflict
        self.audit(
            replay_event(
                proposal_id=existing.proposal_id,
                idempotency_key=existing.idempotency_key,
                payload_sha256=write.payload.sha256,
                trace_id=ctx.trace_id,
            )
        )
        if not same:
            raise IdempotencyConflict(
                f"this idempotency key was already used for a different write (proposal "
                f"{existing.proposal_id}); use a new key for a new write"
            )
        return self.resume(existing)

    # --- steps on a stored proposal -----------------------------------------------------------

    def resume(self, record: ProposalRecord) -> ProposalRecord:
        """Take a stored proposal to its next step, whichever process left it: decide one left
        `validated`; send one left `approved` or `failed_retryable` once its wait is over; look
        up one left `ambiguous`, or `submitted` by a sender that stopped answering. Compare-and-
        set lets exactly one of several processes move it; the others report where it got to.
        Nothing here sends a write whose earlier attempt may have been stored without looking
        first."""
        try:
            if record.state is State.VALIDATED:
                return self.decide(record)
            if record.state in (State.APPROVED, State.FAILED_RETRYABLE):
                return self.retry_due(record)
            if record.state is State.AMBIGUOUS:
                return self.resolve_ambiguous(record)
            if record.state is State.SUBMITTED:
                return self.settle_stale(record)
        except IllegalTransition:
            current = guard_storage(lambda: self._store.get(record.proposal_id))
            return current if current is not None else record
        return record

    def sweep_deliveries(self, limit: int = 200) -> int:
        """Continue every write a failure or a wait left unsettled: due retries, held-back
        approvals, ambiguous outcomes, and `submitted` writes whose sender died. Run by every
        replica's sweeper; returns how many proposals moved."""
        moved = 0
        # An approved proposal is sent by the process that approved it within milliseconds; one
        # older than this without a scheduled attempt was left by a process that died first.
        stale = rfc3339(self.now() - timedelta(seconds=5))
        for record in guard_storage(
            lambda: self._store.find(
                ProposalQuery(
                    states=(
                        State.APPROVED,
                        State.FAILED_RETRYABLE,
                        State.AMBIGUOUS,
                        State.SUBMITTED,
                    ),
                    limit=limit,
                )
            )
        ):
            if (
                record.state is State.APPROVED
                and not Delivery.of(record.delivery).next_attempt_at
                and record.updated_at >= stale
            ):
                continue
            try:
                after = self.resume(record)
            except ChartgateError as exc:
                # One proposal's trouble (the audit log full, the store busy) must not stop the
                # others; the next pass tries it again.
                log.warning("could not continue %s: %s", record.proposal_id, exc.reason)
                continue
            if after.state is not record.state or after.delivery != record.delivery:
                moved += 1
        if self._config.reconcile_writes:
            moved += self._sweep_reconciliations(limit)
        return moved

    def _sweep_reconciliations(self, limit: int) -> int:
        moved = 0
        for record in guard_storage(
            lambda: self._store.find(ProposalQuery(states=(State.ACCEPTED,), limit=limit))
        ):
            try:
                after = self.reconcile(record)
            except ChartgateError as exc:  # another replica moved it, the log is full, ...
                log.warning("could not reconcile %s: %s", record.proposal_id, exc.reason)
                continue
            moved += after.state is not record.state
        return moved

    # --- reconciliation: read the write back and compare (sidecar/reconcile/) --------------------

    def reconcile(self, record: ProposalRecord) -> ProposalRecord:
        """Read an accepted write back (the exact version stored, through the adapter) and compare
        it with what was intended: nothing or only normalisations differ → `reconciled`; a
        meaning-changing difference, the write gone, or its Provenance missing → `mismatch`, with
        the differences (paths and kinds) for a reviewer. A read-back without an answer is tried
        again with backoff; past the retry budget it is a mismatch (`unreadable`)."""
        if record.state is not State.ACCEPTED or not record.fhir_id:
            return record
        now = self._clock()
        state = dict(record.reconciliation)
        attempts = int(state.get("attempts", 0) or 0)
        # When it was accepted: the lag is measured from there (a retried read-back moves
        # updated_at, so the first attempt keeps it).
        accepted_at = float(
            state.get("accepted_at")
            or (parse_time(record.updated_at).timestamp() if record.updated_at else now)
        )
        if float(state.get("next_at", 0) or 0) > now:
            return record
        token = self._token(record, lookup=True)
        assert token is not None  # look-up tokens do not depend on the approval window
        read = self._adapter.read_back(
            token.minted.token, record.payload, record.fhir_id, record.fhir_version
        )
        if read.failure and attempts + 1 < self._retry.max_attempts:
            wait = self._retry.delay(attempts + 1, 0.0, self._rng)
            return guard_storage(
                lambda: self._store.update(
                    record.proposal_id,
                    State.ACCEPTED,
                    reconciliation={
                        **state,
                        "accepted_at": accepted_at,
                        "attempts": attempts + 1,
                        "next_at": now + max(wait, 0.2),
                        "last_failure": read.reason or read.failure,
                    },
                )
            )
        differences: list[Difference] = []
        stored_sha = ""
        if read.failure:
            differences.append(Difference("", Severity.MEANING, "unreadable"))
        elif not read.found:
            differences.append(Difference("", Severity.MEANING, "version_missing"))
        else:
            stored_sha = hashlib.sha256(read.resource_json).hexdigest()
            try:
                # The EHR's answer is as hostile as an agent's: bounded depth, no duplicate names.
                stored = loads_strict(read.resource_json)
                intended = loads_strict(record.payload)
            except ValueError:
                stored, intended = None, None
            if not isinstance(stored, dict) or not isinstance(intended, dict):
                differences.append(Difference("", Severity.MEANING, "unreadable"))
            else:
                differences.extend(compare(intended, stored))
            if read.provenance_not_accepted:
                # Not a difference of the resource: this EHR takes no Provenance, so the
                # write's Provenance is the audit log's (chartgate audit export --format fhir).
                differences.append(Difference("Provenance", Severity.COSMETIC, "in_audit_log"))
            elif not read.provenance_found:
                differences.append(Difference("Provenance", Severity.MEANING, "missing"))
        target = State.MISMATCH if worst(differences) is Severity.MEANING else State.RECONCILED
        result = {
            "result": target.value,
            "differences": [d.to_json() for d in differences],
            "checked_at": rfc3339(datetime.fromtimestamp(now, tz=UTC)),
            "lag_seconds": round(max(0.0, now - accepted_at), 3),
            "attempts": attempts + 1,
        }
        self.audit(
            WriteReconciled(
                proposal_id=record.proposal_id,
                result=target.value,
                fhir_id=record.fhir_id,
                fhir_version=record.fhir_version,
                intended_sha256=record.payload_sha256,
                stored_sha256=stored_sha,
                mismatched_fields=[
                    d.path or d.kind for d in differences if d.severity is Severity.MEANING
                ],
            )
        )
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id, State.ACCEPTED, target, reconciliation=result
            )
        )

    def decide(self, record: ProposalRecord) -> ProposalRecord:
        """From `validated`: audit the proposal, evaluate policy, then hold, block or submit."""
        ctx = record.context
        self.audit(
            ProposalReceived(
                proposal_id=record.proposal_id,
                agent=record.agent_id,
                tenant=record.tenant_id,
                idempotency_key=record.idempotency_key,
                tool=record.tool,
                resource_type=record.resource_type,
                target=record.target,
                fields=list(record.fields),
                patient=ctx.patient_id,
                encounter=ctx.encounter_id,
                purpose_of_use=ctx.purpose_of_use,
                on_behalf_of=ctx.on_behalf_of,
                model_version=ctx.model_version,
                prompt_version=ctx.prompt_version,
                confidence=ctx.confidence,
                mode=ctx.mode,
                evidence_refs=list(ctx.evidence_refs),
                trace_id=ctx.trace_id,
                payload_sha256=record.payload_sha256,
                supersedes=record.supersedes,
            ),
            durable=False,
        )
        decision = self._evaluate(record)
        try:
            record = self._apply_decision(record, decision)
        except IllegalTransition:
            # Another process (a concurrent retry with the same key) decided it first: report
            # where that one got to, as every compare-and-set loser does.
            current = guard_storage(lambda: self._store.get(record.proposal_id))
            return current if current is not None else record
        if record.state is State.APPROVED:
            record = self.submit(record)
        return record

    def _evaluate(self, record: ProposalRecord) -> Decision:
        """Evaluate policy; engines never raise by contract, and if one does anyway, deny."""
        try:
            return self._engine.evaluate(
                build_input(self._config, record, self._consents.for_patient(record.patient_id))
            )
        except Exception as exc:  # fail closed on any engine defect
            log.exception("policy engine raised; denying")
            return deny(
                "policy.engine_error",
                f"the policy engine failed ({type(exc).__name__}); denying",
                revision=getattr(self._engine, "revision", "unknown"),
                engine=getattr(self._engine, "name", "unknown"),
            )

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
        held: dict[str, Any] = {}
        if target is State.PENDING_APPROVAL:
            held = self._approval_window(decision)
        # The decision record is made durable before the store moves: a proposal never leaves
        # `validated` without its decision in the audit log, so nothing is written undecided.
        appended = self.audit(
            PolicyDecision(
                proposal_id=record.proposal_id,
                allow=decision.allow,
                tier=decision.tier.value,
                reasons=[Reason(r.code, r.rule) for r in decision.reasons],
                policy_revision=decision.revision,
                engine=decision.engine,
                state=target.value,
                approvals_required=held.get("approvals_required", 0),
                approver_roles=list(held.get("approver_roles", ())),
                expires_at=held.get("expires_at", ""),
            )
        )
        receipt = self._receipt(appended)
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                State.VALIDATED,
                target,
                tier=decision.tier.value,
                reasons=reasons,
                policy_revision=decision.revision,
                obligations=dict(decision.obligations),
                receipt=receipt,
                **held,
            )
        )

    def _receipt(self, appended: Any) -> dict[str, Any]:
        """The decision record's receipt (leaf index and a signed checkpoint that includes it),
        for the agent and the auditor; empty when the sink gives none (a log that cannot
        publish a checkpoint now does not stop a decision already durable)."""
        receipt_of = getattr(self._audit, "receipt", None)
        if receipt_of is None or appended is None:
            return {}
        try:
            made = receipt_of(appended)
        except (ValueError, OSError, RuntimeError) as exc:
            log.warning("no audit receipt for a decision: %s", type(exc).__name__)
            return {}
        return {
            "origin": made.origin,
            "leaf_index": made.index,
            "leaf_hash": made.leaf_hash,
            "checkpoint": made.checkpoint,
        }

    def _approval_window(self, decision: Decision) -> dict[str, Any]:
        """What a held proposal needs, from the decision's obligations: how many approvals, by
        whom, until when. Missing or odd obligations fall back to the strictest reading."""
        obligations = decision.obligations
        required = obligations.get("approvals_required")
        if not isinstance(required, int) or isinstance(required, bool) or required < 1:
            required = 2 if decision.tier is Tier.DUAL_APPROVAL else 1
        if decision.tier is Tier.DUAL_APPROVAL:
            required = max(required, 2)
        roles = obligations.get("approver_roles")
        approver_roles = (
            tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
        )
        expiry = obligations.get("approval_expiry_seconds")
        seconds = expiry if isinstance(expiry, int) and not isinstance(expiry, bool) else 0
        seconds = max(1, seconds) if seconds else 3600
        now = self.now()
        return {
            "approvals_required": required,
            "approver_roles": approver_roles,
            "expires_at": rfc3339(now + timedelta(seconds=seconds)),
            "escalate_at": rfc3339(now + timedelta(seconds=seconds * ESCALATE_AT_FRACTION)),
        }

    # --- delivery: from `approved` to a settled write (issue 9; sidecar/proposals/delivery.py) ---

    def submit(self, record: ProposalRecord) -> ProposalRecord:
        """From `approved`: the first attempt to write it."""
        return self._attempt(record, State.APPROVED)

    def _token(
        self, record: ProposalRecord, *, lookup: bool = False, attempt: int = 1
    ) -> _Issued | None:
        """A fresh one-use token for the record's write (or its look-up); None when the approval
        window ended (a token never outlives the approval it carries)."""
        ttl = record.obligations.get("token_ttl_seconds")
        ttl_seconds = ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None
        approval_ids: tuple[str, ...] = ()
        counted: list[ApprovalRecord] = []
        if record.tier in (Tier.APPROVAL.value, Tier.DUAL_APPROVAL.value):
            approvals = guard_storage(lambda: self._store.approvals(record.proposal_id))
            counted = [a for a in approvals if a.payload_sha256 == record.payload_sha256]
            approval_ids = tuple(a.approval_id for a in counted)
            if record.expires_at and not lookup:
                remaining = int((parse_time(record.expires_at) - self.now()).total_seconds())
                if remaining < 1:
                    return None
                ttl_seconds = remaining if ttl_seconds is None else min(ttl_seconds, remaining)
        # Look-up tokens carry it too: a read-back that finds the Provenance missing (a write
        # whose answer was lost never got one) writes it then.
        ctx = record.context
        provenance = WriteProvenance(
            model_version=ctx.model_version,
            prompt_version=ctx.prompt_version,
            evidence_refs=tuple(ctx.evidence_refs),
            reviewers=tuple(a.fhir_user or f"{a.issuer}#{a.subject}" for a in counted),
        )
        letters = "rs" if lookup else _SCOPE_LETTER.get(record.operation, "?")
        scope = f"patient/{record.resource_type}.{letters}"
        minted = self._minter.mint(
            WriteGrant(
                proposal_id=record.proposal_id,
                tenant_id=record.tenant_id,
                agent_id=record.agent_id,
                on_behalf_of=record.context.on_behalf_of,
                patient_id=record.patient_id,
                scope=scope,
                operation=record.operation,
                target=record.target,
                payload_sha256=record.payload_sha256,
                approvals=approval_ids,
                lookup=lookup,
                provenance=provenance,
                attempt=attempt,
            ),
            ttl_seconds=ttl_seconds,
        )
        return _Issued(minted, scope, approval_ids)

    def _attempt(self, record: ProposalRecord, expected: State) -> ProposalRecord:
        """One attempt: mint a fresh token and audit it, record the intent (`submitted`, with the
        token id) by compare-and-set before anything leaves (of several processes, exactly one
        sends), write, and move the proposal by what came of it. A token whose compare-and-set
        lost is never sent; its audit record says only that it was minted."""
        now = self._clock()
        if self._backpressure_until > now and expected is State.APPROVED:
            # The adapter asked for a pause (throttled, circuit open): the write waits here,
            # approved, and the sweeper sends it when the pause is over. Nothing is lost.
            return self._hold_back(record)
        delivery = Delivery.of(record.delivery)
        token = self._token(record, attempt=delivery.token_attempt)
        if token is None:
            return self._approval_lapsed(record, expected)
        minted, scope = token.minted, token.scope
        intent = replace(
            delivery,
            attempts=delivery.attempts + 1,
            first_attempt_at=delivery.first_attempt_at or now,
            last_attempt_at=now,
            next_attempt_at=0.0,
            jti=minted.jti,
        )
        self.audit(
            TokenMinted(
                proposal_id=record.proposal_id,
                jti=minted.jti,
                audience=self._config.adapter_audience,
                scope=scope,
                expires_at=rfc3339(datetime.fromtimestamp(minted.expires_at, tz=UTC)),
                payload_sha256=record.payload_sha256,
                approvals=list(token.approvals),
                attempt=intent.attempts,
                policy_revision=record.policy_revision,
            )
        )
        record = guard_storage(
            lambda: self._store.transition(
                record.proposal_id, expected, State.SUBMITTED, delivery=intent.to_json()
            )
        )
        # Rides the durable write.outcome that follows (one fsync per attempt, not two); a crash
        # in between leaves `submitted` in the store, which the sweeper settles by looking.
        self.audit(
            WriteSubmitted(
                proposal_id=record.proposal_id,
                jti=minted.jti,
                attempt=intent.attempts,
                adapter=self._config.adapter_audience,
                action=action_of(record.tool),
            ),
            durable=False,
        )
        outcome = self._adapter.write(minted.token, record.payload)
        return self._settle(record, intent, outcome)

    def _settle(
        self, record: ProposalRecord, delivery: Delivery, outcome: AdapterOutcome
    ) -> ProposalRecord:
        """Move a `submitted` proposal by what its attempt came to (delivery.verdict)."""
        now = self._clock()
        step = {
            "at": round(now, 3),
            "attempt": delivery.attempts,
            "class": "written" if outcome.ok else outcome.failure,
            "reason": outcome.reason,
            "http_status": outcome.http_status,
        }
        delivery = replace(delivery, history=(*delivery.history, step))
        if outcome.ok:
            target, reasons = State.ACCEPTED, record.reasons
        else:
            if outcome.failure in BACKPRESSURE and outcome.retry_after > 0:
                self._backpressure_until = max(
                    self._backpressure_until, now + min(outcome.retry_after, 300.0)
                )
            verdict_ = verdict(outcome.failure, record.operation)
            reason = {
                "code": outcome.reason,
                "message": outcome.message,
                "rule": f"adapter.{outcome.failure}",
            }
            reasons = (*record.reasons, reason)
            if verdict_ == "resend":
                target = State.FAILED_RETRYABLE
                wait = self._retry.delay(delivery.attempts, outcome.retry_after, self._rng)
                delivery = replace(delivery, next_attempt_at=now + wait)
            elif verdict_ == "look_up":
                target = State.AMBIGUOUS
                delivery = replace(delivery, next_attempt_at=now + self._retry.index_delay_seconds)
            else:
                target = State.FAILED_FINAL
        try:
            updated = guard_storage(
                lambda: self._store.transition(
                    record.proposal_id,
                    State.SUBMITTED,
                    target,
                    fhir_id=outcome.fhir_id,
                    fhir_version=outcome.fhir_version,
                    reasons=reasons,
                    delivery=delivery.to_json(),
                )
            )
        except IllegalTransition:
            # This attempt outlived its deadline and a sweeper already took it for abandoned
            # (ambiguous): the look-up settles it from what the EHR holds.
            current = guard_storage(lambda: self._store.get(record.proposal_id))
            return current if current is not None else record
        self.audit(
            WriteOutcome(
                proposal_id=record.proposal_id,
                state=target.value,
                attempt=delivery.attempts,
                failure_class=outcome.failure,
                fhir_id=outcome.fhir_id,
                fhir_version=outcome.fhir_version,
                already_existed=outcome.already_existed,
                http_status=outcome.http_status,
                reason=outcome.reason,
                retry_after=round(outcome.retry_after, 3),
                policy_revision=record.policy_revision,
            )
        )
        if target is State.FAILED_RETRYABLE and delivery.exhausted(self._retry, now):
            return self._dead_letter(updated, State.FAILED_RETRYABLE)
        return updated

    def _hold_back(self, record: ProposalRecord) -> ProposalRecord:
        delivery = replace(Delivery.of(record.delivery), next_attempt_at=self._backpressure_until)
        return guard_storage(
            lambda: self._store.update(
                record.proposal_id, State.APPROVED, delivery=delivery.to_json()
            )
        )

    def _dead_letter(self, record: ProposalRecord, expected: State) -> ProposalRecord:
        """Out of attempts or time: parked for an operator (`chartgate deadletter`), with its
        history; never dropped."""
        updated = guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                expected,
                State.DEAD_LETTERED,
                reasons=(
                    *record.reasons,
                    {
                        "code": "delivery.exhausted",
                        "message": "the write could not be delivered within its retry budget; "
                        "an operator may replay it",
                        "rule": "delivery",
                    },
                ),
            )
        )
        self.audit(
            WriteDeadLettered(
                proposal_id=record.proposal_id,
                attempts=Delivery.of(record.delivery).attempts,
                state=expected.value,
            )
        )
        return updated

    def backpressure_seconds(self) -> float:
        """How long the adapter asked this sidecar to hold new writes back (0 when it did not)."""
        return max(0.0, self._backpressure_until - self._clock())

    def retry_due(self, record: ProposalRecord) -> ProposalRecord:
        """A `failed_retryable` (or held-back `approved`) write whose time has come: resend it, or
        dead-letter it when its budget is spent."""
        now = self._clock()
        delivery = Delivery.of(record.delivery)
        if delivery.next_attempt_at > now or self._backpressure_until > now:
            return record
        if record.state is State.APPROVED:
            return self._attempt(record, State.APPROVED)
        if record.state is not State.FAILED_RETRYABLE:
            return record
        if delivery.exhausted(self._retry, now):
            return self._dead_letter(record, State.FAILED_RETRYABLE)
        return self._attempt(record, State.FAILED_RETRYABLE)

    def resolve_ambiguous(self, record: ProposalRecord) -> ProposalRecord:
        """Settle an `ambiguous` write by looking it up: found, it is accepted; absent (once the
        EHR had time to index it), it is resent under the same conditional create; a look-up
        without an answer is tried again later."""
        now = self._clock()
        delivery = Delivery.of(record.delivery)
        if record.state is not State.AMBIGUOUS or delivery.next_attempt_at > now:
            return record
        token = self._token(record, lookup=True)
        assert token is not None  # look-up tokens do not depend on the approval window
        found = self._adapter.lookup(token.minted.token, record.payload)
        step = {"at": round(now, 3), "attempt": delivery.attempts, "class": "lookup"}
        if found.found:
            delivery = replace(delivery, history=(*delivery.history, {**step, "result": "found"}))
            updated = guard_storage(
                lambda: self._store.transition(
                    record.proposal_id,
                    State.AMBIGUOUS,
                    State.ACCEPTED,
                    fhir_id=found.fhir_id,
                    fhir_version=found.fhir_version,
                    delivery=delivery.to_json(),
                )
            )
            self.audit(
                WriteOutcome(
                    proposal_id=record.proposal_id,
                    state=State.ACCEPTED.value,
                    attempt=delivery.attempts,
                    failure_class="",
                    fhir_id=found.fhir_id,
                    fhir_version=found.fhir_version,
                    already_existed=True,
                    http_status=0,
                    reason="lookup.found",
                    retry_after=0.0,
                    policy_revision=record.policy_revision,
                )
            )
            return updated
        if found.failure:
            failed_lookups = 1 + sum(
                1
                for h in delivery.history
                if h.get("class") == "lookup" and h.get("result") not in ("found", "absent")
            )
            wait = self._retry.delay(failed_lookups, found.retry_after, self._rng)
            delivery = replace(
                delivery,
                next_attempt_at=now + max(wait, 0.2),
                history=(*delivery.history, {**step, "result": found.failure}),
            )
            if failed_lookups >= self._retry.max_attempts or delivery.exhausted(self._retry, now):
                # The EHR cannot be asked: an operator settles it (a replay looks it up first).
                record = guard_storage(
                    lambda: self._store.update(
                        record.proposal_id, State.AMBIGUOUS, delivery=delivery.to_json()
                    )
                )
                return self._dead_letter(record, State.AMBIGUOUS)
            return guard_storage(
                lambda: self._store.update(
                    record.proposal_id, State.AMBIGUOUS, delivery=delivery.to_json()
                )
            )
        if delivery.exhausted(self._retry, now):
            return self._dead_letter(record, State.AMBIGUOUS)
        # Known absent: resending under the same conditional create cannot make a second copy.
        record = guard_storage(
            lambda: self._store.update(
                record.proposal_id,
                State.AMBIGUOUS,
                delivery=replace(
                    delivery, history=(*delivery.history, {**step, "result": "absent"})
                ).to_json(),
            )
        )
        return self._attempt(record, State.AMBIGUOUS)

    def settle_stale(self, record: ProposalRecord) -> ProposalRecord:
        """A `submitted` write whose sender stopped answering for longer than an attempt can take
        (the process died mid-write): its outcome is unknown, so it becomes `ambiguous` and is
        looked up, never resent blind."""
        if record.state is not State.SUBMITTED:
            return record
        delivery = Delivery.of(record.delivery)
        now = self._clock()
        started = delivery.last_attempt_at or parse_time(record.updated_at).timestamp()
        if now - started < self._adapter_timeout + _STALE_MARGIN_SECONDS:
            return record
        delivery = replace(
            delivery,
            next_attempt_at=now,
            history=(*delivery.history, {"at": round(now, 3), "class": "stale"}),
        )
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                State.SUBMITTED,
                State.AMBIGUOUS,
                reasons=(
                    *record.reasons,
                    {
                        "code": "delivery.sender_lost",
                        "message": "the process sending the write stopped before its outcome "
                        "was known; it is looked up",
                        "rule": "delivery",
                    },
                ),
                delivery=delivery.to_json(),
            )
        )

    # --- the chart's current version, for a reviewer's diff ------------------------------------

    def current_resource(self, record: ProposalRecord) -> tuple[str, str]:
        """(current resource JSON, note) for an update proposal, read through the adapter with a
        one-use look-up token nobody else sees; ("", why) when it cannot be shown. A create has
        no current version."""
        if record.operation != "update":
            return "", ""
        token = self._token(record, lookup=True)
        assert token is not None  # look-up tokens do not depend on the approval window
        read = self._adapter.read_current(token.minted.token, record.payload)
        if read.failure:
            return "", f"the chart's current version could not be read ({read.reason})"
        if not read.found:
            return "", "the EHR holds no current version of this resource"
        return read.resource_json.decode("utf-8", errors="replace"), ""

    # --- dead letters: an operator's replay or discard (chartgate deadletter) -----------------

    def replay_dead_letter(self, record: ProposalRecord, operator: str) -> ProposalRecord:
        """Send a dead-lettered write again through the same gate: looked up first (found, it is
        accepted, nothing is sent); policy evaluated again when its revision changed since the
        decision (a write it would now block, or hold for a review it did not have, is not sent);
        then a fresh token and a fresh retry budget. Audited with the operator's identity."""
        found = self._look_up_dead_letter(record)
        if found is not None:
            return self._settle_found(record, found, operator, DeadLetterReplayed)
        decision_note = ""
        if self._engine.revision != record.policy_revision:
            decision = self._evaluate(record)
            if not _still_allows(record, decision):
                return self._refuse_replay(record, decision, operator)
            decision_note = decision.revision
        self.audit(
            DeadLetterReplayed(
                proposal_id=record.proposal_id,
                operator=operator,
                result="resent",
                policy_revision=record.policy_revision,
                rechecked_with=decision_note,
            )
        )
        delivery = Delivery.of(record.delivery)
        fresh = replace(delivery, attempts=0, first_attempt_at=0.0, next_attempt_at=0.0)
        record = replace(record, delivery=fresh.to_json())
        return self._attempt(record, State.DEAD_LETTERED)

    def discard_dead_letter(self, record: ProposalRecord, operator: str) -> ProposalRecord:
        """Give a dead-lettered write up: looked up first, so a write the EHR holds is accepted,
        never reported as not written; else it ends `failed_final`. Audited."""
        found = self._look_up_dead_letter(record)
        if found is not None:
            return self._settle_found(record, found, operator, DeadLetterDiscarded)
        self.audit(
            DeadLetterDiscarded(
                proposal_id=record.proposal_id, operator=operator, result="discarded"
            )
        )
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                State.DEAD_LETTERED,
                State.FAILED_FINAL,
                reasons=(
                    *record.reasons,
                    {
                        "code": "deadletter.discarded",
                        "message": "an operator discarded the write after its retries were "
                        "spent; nothing was written",
                        "rule": "delivery",
                    },
                ),
            )
        )

    def _look_up_dead_letter(self, record: ProposalRecord) -> LookupOutcome | None:
        if record.state is not State.DEAD_LETTERED:
            raise IllegalTransition(
                f"the proposal is {record.state.value}, not dead_lettered; nothing was changed"
            )
        token = self._token(record, lookup=True)
        assert token is not None  # look-up tokens do not depend on the approval window
        found = self._adapter.lookup(token.minted.token, record.payload)
        if found.failure:
            raise DeliveryUnavailable(
                "the EHR could not be asked whether this write is there "
                f"({found.reason or found.failure}); nothing was changed, try again"
            )
        return found if found.found else None

    def _settle_found(
        self,
        record: ProposalRecord,
        found: LookupOutcome,
        operator: str,
        event: type[DeadLetterReplayed] | type[DeadLetterDiscarded],
    ) -> ProposalRecord:
        self.audit(
            event(
                proposal_id=record.proposal_id,
                operator=operator,
                result="found",
                fhir_id=found.fhir_id,
                fhir_version=found.fhir_version,
            )
        )
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                State.DEAD_LETTERED,
                State.ACCEPTED,
                fhir_id=found.fhir_id,
                fhir_version=found.fhir_version,
            )
        )

    def _refuse_replay(
        self, record: ProposalRecord, decision: Decision, operator: str
    ) -> ProposalRecord:
        """Policy changed and no longer lets this write through as it was decided: not sent."""
        self.audit(
            DeadLetterReplayed(
                proposal_id=record.proposal_id,
                operator=operator,
                result="refused_by_policy",
                policy_revision=record.policy_revision,
                rechecked_with=decision.revision,
                tier=decision.tier.value,
                allow=decision.allow,
            )
        )
        reasons = tuple(
            {"code": r.code, "message": r.message, "rule": r.rule} for r in decision.reasons
        )
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                State.DEAD_LETTERED,
                State.FAILED_FINAL,
                reasons=(
                    *record.reasons,
                    *reasons,
                    {
                        "code": "deadletter.policy_changed",
                        "message": f"policy revision {decision.revision} no longer allows this "
                        f"write as decided (now {decision.tier.value}); propose it again",
                        "rule": "delivery",
                    },
                ),
            )
        )

    def _approval_lapsed(self, record: ProposalRecord, expected: State) -> ProposalRecord:
        """The approval window ended before the write could be sent (again): no token is minted
        and nothing more is sent. Never sent, or known absent, it expires with a reason the agent
        can read; an earlier attempt that may have been stored is looked up first (ambiguous),
        so nothing written is ever reported as not written."""
        if expected is State.FAILED_RETRYABLE:
            now = self._clock()
            delivery = Delivery.of(record.delivery)
            delivery = replace(
                delivery,
                next_attempt_at=now,
                history=(*delivery.history, {"at": round(now, 3), "class": "approval_lapsed"}),
            )
            return guard_storage(
                lambda: self._store.transition(
                    record.proposal_id,
                    State.FAILED_RETRYABLE,
                    State.AMBIGUOUS,
                    delivery=delivery.to_json(),
                )
            )
        self.audit(
            ProposalExpired(
                proposal_id=record.proposal_id, expires_at=record.expires_at, state=expected.value
            )
        )
        return guard_storage(
            lambda: self._store.transition(
                record.proposal_id,
                expected,
                State.EXPIRED,
                reasons=(
                    *record.reasons,
                    {
                        "code": "approval.lapsed",
                        "message": "the approval window ended before the write was sent; "
                        "nothing was written",
                        "rule": "review",
                    },
                ),
            )
        )


_TIER_RANK: Final = {
    Tier.AUTONOMOUS.value: 0,
    Tier.APPROVAL.value: 1,
    Tier.DUAL_APPROVAL.value: 2,
    Tier.BLOCKED.value: 3,
}


def _still_allows(record: ProposalRecord, decision: Decision) -> bool:
    """Whether a fresh decision lets the write through as it was decided: allowed, and needing
    no more review than it had."""
    if not decision.allow or decision.tier is Tier.BLOCKED:
        return False
    return _TIER_RANK[decision.tier.value] <= _TIER_RANK.get(record.tier, 3)
