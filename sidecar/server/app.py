"""Assemble the sidecar from its configuration and workdir, and run it until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from chartgate import keys
from chartgate.grpc_server import build_server
from chartgate.v1 import gateway_pb2_grpc
from sidecar.adapter_client import AdapterClient
from sidecar.audit.log import AuditLog
from sidecar.config import SidecarConfig
from sidecar.consent import ConsentDirectory
from sidecar.policy.engine import PolicyEngine
from sidecar.proposals.service import ProposalService
from sidecar.server.gateway import SERVICE_NAME, ToolGatewayService
from sidecar.storage.ledger import Ledger
from sidecar.tokens.mint import TokenMinter
from sidecar.validation.fhir import preload_models

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


def build_engine(config: SidecarConfig) -> PolicyEngine:
    """The OPA server engine when configured, else the embedded engine with hot reload."""
    if config.opa_url:
        from sidecar.policy.opa import OpaEngine

        return OpaEngine(config.opa_url, timeout_seconds=config.opa_timeout_seconds)
    from sidecar.policy.reload import ReloadingEngine

    return ReloadingEngine(config.policy_dir, extra_data=config.policy_data)


@dataclass
class Sidecar:
    """A running sidecar's parts, so tests and the demo can start and stop it in-process."""

    service: ProposalService
    ledger: Ledger
    audit: AuditLog
    adapter: AdapterClient
    engine: PolicyEngine

    def close(self) -> None:
        self.adapter.close()
        self.ledger.close()
        self.audit.close()


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
    engine = engine or build_engine(config)
    ledger = Ledger(layout.ledger)
    audit = AuditLog(layout.audit_log, audit_key)
    adapter = AdapterClient(config.adapter_target, config.adapter_timeout_seconds)
    minter = TokenMinter(
        token_key,
        issuer=config.issuer,
        audience=config.adapter_audience,
        ttl_seconds=config.token_ttl_seconds,
    )
    service = ProposalService(
        config, ledger, engine, ConsentDirectory(config.consents_file), minter, adapter, audit
    )
    return Sidecar(service=service, ledger=ledger, audit=audit, adapter=adapter, engine=engine)


def serve(
    config: SidecarConfig,
    workdir: Path,
    listen: str,
    *,
    token_key: Path | None = None,
    audit_key: Path | None = None,
) -> None:
    """Run the sidecar until SIGTERM or SIGINT."""
    sidecar = assemble(config, workdir, token_key_path=token_key, audit_key_path=audit_key)
    gateway = ToolGatewayService(sidecar.service)
    server, port, _ = build_server(
        listen,
        lambda s: gateway_pb2_grpc.add_ToolGatewayServicer_to_server(gateway, s),
        [SERVICE_NAME],
    )
    server.start()
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
    server.stop(grace=5).wait()
    sidecar.close()
