"""Assemble the sidecar from its configuration and workdir, and run it until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chartgate import keys
from chartgate.grpc_server import build_server
from sidecar.adapter_client import AdapterClient
from sidecar.audit.events import AdminPolicyReloaded, PolicyShadowDisagreement
from sidecar.audit.log import AuditLog
from sidecar.config import SidecarConfig
from sidecar.consent import ConsentDirectory
from sidecar.policy.engine import Decision, PolicyEngine
from sidecar.proposals.service import AuditSink, ProposalService
from sidecar.review.service import ReviewService
from sidecar.server.gateway import SERVICE_NAME, ToolGatewayService, add_gateway
from sidecar.storage.sqlite.store import SqliteStore
from sidecar.storage.store import ProposalStore
from sidecar.tokens.mint import TokenMinter
from sidecar.validation.fhir import preload_models

if TYPE_CHECKING:  # the reload module loads the embedded engine: only when it is used
    from sidecar.policy.reload import PolicyChange

log = logging.getLogger("chartgate.sidecar")


@dataclass(frozen=True)
class WorkdirLayout:
    """Where the sidecar keeps its state under --workdir."""

    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / "sidecar" / "ledger.sqlite3"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    @property
    def token_key(self) -> Path:
        return self.root / "keys" / "token-signing.jwk"

    @property
    def audit_key(self) -> Path:
        return self.root / "keys" / "audit-signing.jwk"


def build_engine(config: SidecarConfig, audit: AuditSink | None = None) -> PolicyEngine:
    """The OPA server engine when configured, else the embedded engine with hot reload; with
    `shadow_policy_dir` set, a candidate policy is evaluated beside it and every disagreement
    is logged and, given an audit log, recorded as `policy.shadow_disagreement`."""
    enforced: PolicyEngine
    if config.opa_url:
        from sidecar.policy.engines.opa_server.engine import OpaServerEngine

        enforced = OpaServerEngine(config.opa_url, timeout_seconds=config.opa_timeout_seconds)
    else:
        from sidecar.policy.reload import ReloadingEngine

        enforced = ReloadingEngine(
            config.effective_policy_dir,
            extra_data=config.policy_data,
            engine=config.policy_engine,
            on_change=_policy_change_recorder(audit, config.policy_engine),
        )
    if config.shadow_policy_dir is None:
        return enforced
    from sidecar.policy.reload import ReloadingEngine
    from sidecar.policy.shadow import ShadowEngine, disagreement_record

    candidate = ReloadingEngine(
        config.shadow_policy_dir,
        extra_data=config.shadow_policy_data or config.policy_data,
        engine=config.policy_engine,
    )

    def record(
        enforced_decision: Decision, candidate_decision: Decision, policy_input: Mapping[str, Any]
    ) -> None:
        body = disagreement_record(enforced_decision, candidate_decision, policy_input)
        log.warning("shadow policy disagrees: %s", body)
        if audit is not None:
            # Rides the durable policy.decision append that follows in the same proposal.
            event = PolicyShadowDisagreement(**body)
            audit.append(event.kind, event.body(), durable=False)

    return ShadowEngine(enforced, candidate, on_disagreement=record)


def _policy_change_recorder(
    audit: AuditSink | None, engine: str
) -> Callable[[PolicyChange], None] | None:
    """Each reload (a new revision in force, or a candidate refused) as an audit record: policy
    and operator data, kill switches included, are administrative acts an auditor sees."""
    if audit is None:
        return None

    def record(change: PolicyChange) -> None:
        event = AdminPolicyReloaded(
            policy_revision=change.revision,
            previous_revision=change.previous,
            engine=engine,
            loaded=change.loaded,
        )
        audit.append(event.kind, event.body(), durable=True)

    return record


@dataclass
class Sidecar:
    """A running sidecar's parts, so tests and the demo can start and stop it in-process."""

    service: ProposalService
    store: ProposalStore
    audit: AuditLog
    adapter: AdapterClient
    engine: PolicyEngine

    def close(self) -> None:
        self.adapter.close()
        self.store.close()
        self.audit.close()


def open_store(config: SidecarConfig, layout: WorkdirLayout) -> ProposalStore:
    """The shared proposal store: PostgreSQL when `store_dsn` is set, else SQLite in the workdir
    (or at `store_path`, a file several processes on one host may share)."""
    if config.store_dsn:
        from sidecar.storage.postgres.store import PostgresStore

        return PostgresStore(config.store_dsn)
    return SqliteStore(config.store_path or layout.ledger)


def assemble(
    config: SidecarConfig,
    workdir: Path,
    engine: PolicyEngine | None = None,
    *,
    token_key_path: Path | None = None,
    audit_key_path: Path | None = None,
) -> Sidecar:
    layout = WorkdirLayout(workdir)
    preload_models()
    # Keys given as paths (mounted Secrets) must exist; the workdir's are created on first start.
    token_key = (
        keys.load_private(token_key_path)
        if token_key_path
        else keys.load_or_create(layout.token_key, "token")
    )
    audit_key = (
        keys.load_private(audit_key_path)
        if audit_key_path
        else keys.load_or_create(layout.audit_key, "audit")
    )
    store = open_store(config, layout)
    audit = AuditLog(layout.audit_log, audit_key)
    engine = engine or build_engine(config, audit)
    adapter = AdapterClient(config.adapter_target, config.adapter_timeout_seconds)
    minter = TokenMinter(
        token_key,
        issuer=config.issuer,
        audience=config.adapter_audience,
        ttl_seconds=config.token_ttl_seconds,
    )
    service = ProposalService(
        config, store, engine, ConsentDirectory(config.consents_file), minter, adapter, audit
    )
    return Sidecar(service=service, store=store, audit=audit, adapter=adapter, engine=engine)


class Sweeper:
    """A daemon thread that expires, escalates and resumes proposals every `sweep_seconds`.
    Every replica runs one; compare-and-set on the shared store makes each move happen once."""

    def __init__(self, review: ReviewService, every_seconds: float) -> None:
        self._review = review
        self._every = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._review.sweep()
            except Exception:  # the sweeper must outlive any failure; the next pass retries
                log.exception("sweep failed")


def serve(
    config: SidecarConfig,
    workdir: Path,
    listen: str,
    *,
    token_key: Path | None = None,
    audit_key: Path | None = None,
) -> None:
    """Run the sidecar until SIGTERM or SIGINT: ToolGateway on `listen` (the agent's loopback),
    the Review API on `review_listen` when configured, and the sweeper."""
    sidecar = assemble(config, workdir, token_key_path=token_key, audit_key_path=audit_key)
    gateway = ToolGatewayService(sidecar.service)
    server, port, _ = build_server(
        listen,
        lambda s: add_gateway(gateway, s),
        [SERVICE_NAME],
    )
    review = ReviewService(sidecar.service)
    servers = [server]
    if config.review_listen:
        from sidecar.review.auth import ReviewerAuthenticator
        from sidecar.review.deadletters import DeadLetterService
        from sidecar.review.server import SERVICE_NAME as REVIEW_SERVICE
        from sidecar.review.server import ReviewServicer, add_review

        servicer = ReviewServicer(
            review,
            ReviewerAuthenticator(config.reviewer_issuers),
            DeadLetterService(sidecar.service, config.operator_roles),
        )
        review_server, review_port, _ = build_server(
            config.review_listen, lambda s: add_review(servicer, s), [REVIEW_SERVICE]
        )
        servers.append(review_server)
        log.info("Review API listening on port %d", review_port)
    sweeper = Sweeper(review, config.sweep_seconds)
    for running in servers:
        running.start()
    sweeper.start()
    log.info(
        "sidecar for agent %s listening on port %d, policy revision %s",
        config.agent_id,
        port,
        sidecar.engine.revision,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sweeper.stop()
    for running in servers:
        running.stop(grace=5).wait()
    sidecar.close()
