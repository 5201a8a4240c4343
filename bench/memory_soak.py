"""Soak: 50,000 proposals through a real sidecar process over gRPC; its RSS must stay within 20 MB.

Mostly held vital-sign Observations, every --write-every-th an autonomous write, from several
clients; prints the sidecar's VmRSS every 5,000 and PASS when RSS after the last less RSS after
the first 5,000 is within 20 MB. --warm-threads fills the sidecar's worker pool first; --parts
loops on each part of the pipeline in this process instead, to find one that grows.

    .venv/bin/python bench/memory_soak.py [--proposals 50000] [--every 5000] [--clients 4]
        [--write-every 20] [--written telecom|vital-sign] [--warm-threads 32] [--json]
    .venv/bin/python bench/memory_soak.py --parts [--proposals 50000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.propose_latency import (
    WRITTEN,
    bench_sidecar_config,
    patients,
    start_bench_stack,
    vital_sign_request,
)
from chartgate.demo import PATIENT
from chartgate.v1 import gateway_pb2, gateway_pb2_grpc
from sidecar.policy.library import shipped_policy_dir

LIMIT_MB = 20.0
POOL_THREADS = 16  # chartgate/grpc_server.py build_server's max_workers


@dataclasses.dataclass
class Progress:
    """Counters the client threads share (under one lock)."""

    issued: int = 0
    done: int = 0
    held: int = 0
    written: int = 0
    errors: int = 0
    first_error: str = ""


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM (kB) and Threads of a process, from /proc/<pid>/status."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"}
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in wanted:
            values[name] = int(rest.split()[0])
    return values


def file_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6


def warm_pool(target: str, clients: int, patient: str, per_client: int = 20) -> None:
    """Held proposals from `clients` clients at once, before anything is counted: the sidecar's
    gRPC pool then has all its worker threads, each with its own regorus Engine, so what the
    soak measures afterwards is growth per proposal rather than the pool filling up."""
    barrier = threading.Barrier(clients)

    def client() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.ToolGatewayStub(channel)
            barrier.wait()
            for _ in range(per_client):
                stub.Propose(vital_sign_request(patient), timeout=30)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def soak(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="chartgate-soak-"))
    patient_ids = patients(args.clients)  # one per client: Patient updates do not race
    stack = start_bench_stack(workdir, args.policy_dir, patient_ids)
    try:
        pid = stack.process("sidecar").popen.pid
        if args.warm_threads:
            warm_pool(stack.sidecar_target, args.warm_threads, patient_ids[0])
        samples: list[dict[str, Any]] = []
        lock = threading.Lock()
        state = Progress()
        started = time.perf_counter()
        written_what, build_written = WRITTEN[args.written]

        def next_index() -> int | None:
            with lock:
                if state.issued >= args.proposals:
                    return None
                state.issued += 1
                return state.issued

        def finish(kind: str, error: str | None) -> None:
            with lock:
                state.done += 1
                state.written += kind == "written"
                state.held += kind == "held"
                if error:
                    state.errors += 1
                    state.first_error = state.first_error or error
                done = state.done
                if done % args.every == 0 or done == args.proposals:
                    # Sampled by the thread that finished it: a few other proposals may be in
                    # flight, which is noise far below the criterion.
                    sample = {
                        "proposals": done,
                        "seconds": round(time.perf_counter() - started, 1),
                        **memory_kb(pid),
                    }
                    samples.append(sample)
                    if not args.json:
                        print(
                            f"{done:>8,} proposals  {sample['seconds']:>7.1f} s  "
                            f"VmRSS {sample['VmRSS'] / 1024:8.1f} MB  "
                            f"RssAnon {sample['RssAnon'] / 1024:8.1f} MB  "
                            f"threads {sample['Threads']:>3}  "
                            f"errors {state.errors}",
                            flush=True,
                        )

        def client(patient: str) -> None:
            with grpc.insecure_channel(stack.sidecar_target) as channel:
                stub = gateway_pb2_grpc.ToolGatewayStub(channel)
                while (index := next_index()) is not None:
                    write = args.write_every > 0 and index % args.write_every == 0
                    request = build_written(patient) if write else vital_sign_request(patient)
                    expect = (
                        gateway_pb2.PROPOSAL_STATE_ACCEPTED
                        if write
                        else gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
                    )
                    error: str | None = None
                    try:
                        proposal = stub.Propose(request, timeout=30)
                        if proposal.state != expect:
                            error = (
                                f"{gateway_pb2.ProposalState.Name(proposal.state)} "
                                f"{[r.code for r in proposal.reasons]}"
                            )
                    except grpc.RpcError as exc:
                        call = exc if isinstance(exc, grpc.Call) else None
                        error = f"{call.code().name}: {call.details()}" if call else repr(exc)
                    finish("written" if write else "held", error)

        before = memory_kb(pid)
        if not args.json:
            if args.warm_threads:
                print(
                    f"pool warmed by {args.warm_threads} concurrent clients "
                    f"({args.warm_threads * 20} held proposals, not counted)"
                )
            print(
                f"sidecar pid {pid}, RSS before the first proposal "
                f"{before['VmRSS'] / 1024:.1f} MB; {args.proposals:,} proposals from "
                f"{args.clients} clients, every {args.write_every}th written ({written_what}), "
                f"the rest held for approval"
            )
        threads = [threading.Thread(target=client, args=(p,)) for p in patient_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        ledger = workdir / "sidecar" / "ledger.sqlite3"
        files = {
            "ledger_mb": round(file_mb(ledger, Path(f"{ledger}-wal")), 1),
            "audit_log_mb": round(file_mb(workdir / "audit" / "audit.jsonl"), 1),
        }
    finally:
        stack.stop()
    first = next(s for s in samples if s["proposals"] >= args.every)
    last = samples[-1]
    growth_mb = (last["VmRSS"] - first["VmRSS"]) / 1024
    return {
        "workdir": str(workdir),
        "proposals": args.proposals,
        "clients": args.clients,
        "warm_threads": args.warm_threads,
        "written_kind": written_what,
        "held": state.held,
        "written": state.written,
        "errors": state.errors,
        "first_error": state.first_error,
        "seconds": round(elapsed, 1),
        "per_s": round(args.proposals / elapsed, 1),
        "rss_before_kb": before["VmRSS"],
        "samples": samples,
        "files": files,
        "growth_mb": round(growth_mb, 1),
        "growth_from": first["proposals"],
        "growth_to": last["proposals"],
        "limit_mb": LIMIT_MB,
        "pass": growth_mb <= LIMIT_MB and state.errors == 0,
    }


# -- --parts: the same loop in this process, one part at a time --------------------------------


def parts(args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth of this process over the loop, for each part of the Propose pipeline alone."""
    from chartgate import keys
    from sidecar.audit.log import AuditLog
    from sidecar.config import SidecarConfig
    from sidecar.consent import ConsentDirectory
    from sidecar.policy.embedded import EmbeddedEngine
    from sidecar.policy.input import ProposalContext, build_input
    from sidecar.proposals.lifecycle import State
    from sidecar.proposals.service import ProposeCommand, proposal_id_for
    from sidecar.server.app import assemble
    from sidecar.storage.records import ProposalRecord
    from sidecar.storage.sqlite.store import SqliteStore
    from sidecar.validation.fhir import preload_models, validate_write

    workdir = Path(tempfile.mkdtemp(prefix="chartgate-soak-parts-"))
    config = SidecarConfig.model_validate(
        {
            "adapter_target": "127.0.0.1:1",
            **bench_sidecar_config(workdir, args.policy_dir, [PATIENT]),
        }
    )
    preload_models()
    consents = ConsentDirectory(config.consents_file)
    engine = EmbeddedEngine(config.effective_policy_dir, config.policy_data)
    ledger = SqliteStore(workdir / "ledger.sqlite3")
    audit = AuditLog(workdir / "audit.jsonl", keys.load_or_create(workdir / "audit.jwk", "audit"))

    def validated() -> Any:
        request = vital_sign_request()
        return request, validate_write(
            tool=request.tool,
            resource_type=request.resource_type,
            resource_json=request.resource_json,
            patient_id=request.patient_id,
        )

    def context(request: gateway_pb2.ProposeRequest) -> ProposalContext:
        return ProposalContext(
            patient_id=request.patient_id,
            encounter_id=request.encounter_id,
            purpose_of_use=request.purpose_of_use,
            on_behalf_of=request.on_behalf_of,
            model_version=request.model_version,
            prompt_version=request.prompt_version,
            confidence=request.confidence,
            mode="live",
            evidence_refs=tuple(request.evidence_refs),
            trace_id=request.trace_id,
        )

    def as_record(request: gateway_pb2.ProposeRequest, write: Any) -> ProposalRecord:
        return ProposalRecord(
            proposal_id=proposal_id_for(config.tenant_id, config.agent_id, request.idempotency_key),
            tenant_id=config.tenant_id,
            agent_id=config.agent_id,
            idempotency_key=request.idempotency_key,
            payload_sha256=write.payload.sha256,
            payload=write.payload.canonical,
            tool=write.tool,
            operation=write.operation,
            resource_type=write.resource_type,
            target=write.target,
            patient_id=PATIENT,
            encounter_id="",
            trace_id="",
            state=State.VALIDATED,
            context=context(request),
            fields=write.fields,
            summary=write.summary,
        )

    fixed_request, fixed_write = validated()
    fixed_record = as_record(fixed_request, fixed_write)

    def validation() -> None:
        validated()

    def policy() -> None:
        request, write = validated()
        engine.evaluate(
            build_input(config, as_record(request, write), consents.for_patient(PATIENT))
        )

    def policy_only() -> None:
        engine.evaluate(build_input(config, fixed_record, consents.for_patient(PATIENT)))

    counter = iter(range(10**9))

    def ledger_part() -> None:
        key = f"soak-{next(counter)}"
        record, _ = ledger.insert_or_get(
            replace(
                fixed_record,
                idempotency_key=key,
                proposal_id=proposal_id_for(config.tenant_id, config.agent_id, key),
            )
        )
        ledger.transition(
            record.proposal_id,
            State.VALIDATED,
            State.PENDING_APPROVAL,
            tier="approval",
            reasons=({"code": "tier.approval", "message": "held", "rule": "r"},),
            policy_revision=engine.revision,
        )

    def audit_part() -> None:
        body = {"proposal_id": f"pr-{next(counter)}", "allow": True, "tier": "approval"}
        audit.append("proposal.received", body, durable=False)
        audit.append("policy.decision", body)

    # The sidecar serves from a pool of 16 gRPC worker threads, and the regorus backend builds
    # one Engine per thread (they are thread-affine): this part spreads evaluations over a pool
    # of that size, 16 at a time, so every worker gets its own Engine.
    pool = ThreadPoolExecutor(max_workers=POOL_THREADS)

    def policy_pool() -> None:
        for future in [pool.submit(policy_only) for _ in range(POOL_THREADS)]:
            future.result()

    # The whole pipeline as the gRPC servicer calls it, held proposals only (no adapter call).
    sidecar = assemble(config, workdir / "pipeline")

    def propose_held() -> None:
        request = vital_sign_request()
        record = sidecar.service.propose(
            ProposeCommand(
                request.idempotency_key,
                request.tool,
                request.resource_type,
                request.resource_json,
                context(request),
            )
        )
        if record.state is not State.PENDING_APPROVAL:
            raise RuntimeError(f"unexpected state {record.state.value}: {record.reasons}")

    def pipeline_pool() -> None:
        for future in [pool.submit(propose_held) for _ in range(POOL_THREADS)]:
            future.result()

    steps: list[tuple[str, Callable[[], None], int]] = [
        ("validation (validate_write)", validation, 1),
        ("policy input + evaluate (same write)", policy_only, 1),
        ("validation + policy input + evaluate", policy, 1),
        (f"policy evaluate on {POOL_THREADS} pool threads", policy_pool, POOL_THREADS),
        ("ledger insert + transition", ledger_part, 1),
        ("audit append x2 (one durable)", audit_part, 1),
        (f"ProposalService.propose, {POOL_THREADS} threads", pipeline_pool, POOL_THREADS),
    ]
    out: list[dict[str, Any]] = []
    me = os.getpid()
    if not args.json:
        print(
            f"{'part, in this process':<40}{'calls':>8}{'µs/call':>9}{'RSS before':>12}"
            f"{'warm-up':>9}{'loop':>9}  (MB)"
        )
    try:
        for label, step, per_step in steps:
            before = memory_kb(me)["VmRSS"]
            for _ in range(min(args.every, 2000) // per_step):  # warm-up
                step()
            first = memory_kb(me)["VmRSS"]
            started = time.perf_counter()
            for _ in range(args.proposals // per_step):
                step()
            last = memory_kb(me)["VmRSS"]
            row = {
                "part": label,
                "calls": args.proposals // per_step * per_step,
                "seconds": round(time.perf_counter() - started, 1),
                "us_per_call": round(
                    (time.perf_counter() - started) / (args.proposals // per_step * per_step) * 1e6
                ),
                "rss_before_mb": round(before / 1024, 1),
                "warmup_growth_mb": round((first - before) / 1024, 1),
                "growth_mb": round((last - first) / 1024, 1),
            }
            out.append(row)
            if not args.json:
                print(
                    f"{label:<40}{row['calls']:>8,}{row['us_per_call']:>9}"
                    f"{row['rss_before_mb']:>12.1f}{row['warmup_growth_mb']:>+9.1f}"
                    f"{row['growth_mb']:>+9.1f}",
                    flush=True,
                )
    finally:
        pool.shutdown()
        sidecar.close()
        ledger.close()
        audit.close()
    return {"workdir": str(workdir), "parts": out}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--proposals", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=5_000, help="proposals between RSS samples")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument(
        "--write-every", type=int, default=20, help="every Nth proposal is an autonomous write"
    )
    parser.add_argument("--written", choices=sorted(WRITTEN), default="telecom")
    parser.add_argument(
        "--warm-threads",
        type=int,
        default=0,
        help="first fill the sidecar's worker pool with this many concurrent clients (not counted)",
    )
    parser.add_argument("--policy-dir", type=Path, default=shipped_policy_dir())
    parser.add_argument("--parts", action="store_true", help="loop on each part in-process")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args()

    if args.parts:
        result = parts(args)
        if args.json:
            print(json.dumps(result, indent=2))
        return 0

    out = soak(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"\n{out['proposals']:,} proposals in {out['seconds']} s ({out['per_s']}/s): "
            f"{out['held']:,} held, {out['written']:,} written, {out['errors']} unexpected"
            + (f" (e.g. {out['first_error']})" if out["errors"] else "")
        )
        print(
            f"ledger {out['files']['ledger_mb']} MB, audit log {out['files']['audit_log_mb']} MB "
            f"on disk ({out['workdir']})"
        )
        print(
            f"RSS after {out['growth_to']:,} less RSS after {out['growth_from']:,}: "
            f"{out['growth_mb']:+.1f} MB (limit {LIMIT_MB:g} MB): "
            f"{'PASS' if out['pass'] else 'FAIL'}"
        )
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
