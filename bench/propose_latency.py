"""Benchmark: Propose through the real processes (FHIR store, adapter, sidecar) against a bare gRPC echo.

Two kinds of distinct proposals, "held" (a vital-sign Observation policy holds for approval) and
"written" (an autonomous write through the adapter), and the echo take turns in short slices of
each phase: paced at --rate/s, saturated with 1 client and with --clients. See bench/README.md.

    .venv/bin/python bench/propose_latency.py [--rate 200] [--seconds 10] [--clients 4]
        [--written telecom|vital-sign] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chartgate.demo import OBS_CATEGORY, PATIENT, demo_sidecar_config
from chartgate.stack import Stack, free_port, grpc_serving, start_stack
from chartgate.v1 import gateway_pb2, gateway_pb2_grpc
from sidecar.policy.library import shipped_policy_dir
from tests.support import seed_patient

TARGET_P50_MS = 2.0
TARGET_RATIO = 3.0

ECHO_SERVER = """
import sys, threading, signal
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc
def echo(request, context):
    return request
handler = grpc.method_handlers_generic_handler("bench.Echo", {
    "Echo": grpc.unary_unary_rpc_method_handler(echo, request_deserializer=bytes,
                                                response_serializer=bytes)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((handler,))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port(sys.argv[1])
server.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
"""

# What an agent would send besides the resource and the patient (values a strict validator
# accepts).
COMMON: dict[str, Any] = {
    "purpose_of_use": "TREAT",
    "on_behalf_of": "Practitioner/dr-lee",
    "model_version": "scribe-2026-10",
    "prompt_version": "p-41",
    "mode": gateway_pb2.MODE_LIVE,
    "evidence_refs": ["DocumentReference/abc"],
}

_serial = itertools.count(1)  # next() on a count is atomic under the GIL: safe across clients


def patients(count: int) -> list[str]:
    """demo-patient-1 (the demo's) and more like it: one per client, so concurrent Patient
    updates do not race on one resource (the adapter's If-Match would refuse all but one)."""
    return [PATIENT, *(f"demo-patient-{n}" for n in range(2, count + 1))]


def bench_sidecar_config(workdir: Path, policy_dir: Path, patient_ids: list[str]) -> dict[str, Any]:
    """The demo's sidecar configuration, its TREAT consent given to every bench patient too."""
    config = demo_sidecar_config(workdir, policy_dir)
    consents_file = Path(config["consents_file"])
    records = json.loads(consents_file.read_text())
    template = next(r for r in records if r["patient"] == PATIENT)
    for n, patient_id in enumerate(patient_ids, start=1):
        if patient_id != PATIENT:
            records.append({**template, "id": f"consent-bench-{n}", "patient": patient_id})
    consents_file.write_text(json.dumps(records, indent=2))
    return config


def start_bench_stack(workdir: Path, policy_dir: Path, patient_ids: list[str]) -> Stack:
    stack = start_stack(workdir, bench_sidecar_config(workdir, policy_dir, patient_ids))
    try:
        for patient_id in patient_ids:
            seed_patient(stack.fhir_base, patient_id)
    except BaseException:
        stack.stop()
        raise
    return stack


def vital_sign_request(
    patient: str = PATIENT, confidence: float = 0.8
) -> gateway_pb2.ProposeRequest:
    """A heart rate: at confidence 0.8 tier approval (held); at 0.97, at or over the demo tenant's
    `autonomous_vital_signs_min_confidence` of 0.9, tier autonomous (written)."""
    serial = next(_serial)
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-22T09:30:00+00:00",
        "valueQuantity": {
            "value": 50 + serial % 100,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    return gateway_pb2.ProposeRequest(
        idempotency_key=f"bench-hr-{uuid.uuid4().hex}",
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(resource),
        patient_id=patient,
        confidence=confidence,
        trace_id=uuid.uuid4().hex,
        **COMMON,
    )


def telecom_request(patient: str = PATIENT) -> gateway_pb2.ProposeRequest:
    """An administrative Patient update: tier autonomous, written through the adapter."""
    serial = next(_serial)
    resource = {
        "resourceType": "Patient",
        "id": patient,
        "telecom": [{"system": "phone", "value": f"+1-555-{serial % 10000:04d}", "use": "mobile"}],
    }
    return gateway_pb2.ProposeRequest(
        idempotency_key=f"bench-telecom-{uuid.uuid4().hex}",
        tool="fhir.update",
        resource_type="Patient",
        resource_json=json.dumps(resource),
        patient_id=patient,
        confidence=0.99,
        trace_id=uuid.uuid4().hex,
        **COMMON,
    )


def autonomous_vital_sign_request(patient: str = PATIENT) -> gateway_pb2.ProposeRequest:
    return vital_sign_request(patient, confidence=0.97)


# The written kind: what `--written` picks.
WRITTEN = {
    "telecom": (
        "Patient telecom update: autonomous, written to the FHIR store through the adapter",
        telecom_request,
    ),
    "vital-sign": (
        "vital-sign Observation, confidence 0.97: autonomous, created in the FHIR store "
        "through the adapter",
        autonomous_vital_sign_request,
    ),
}


@dataclasses.dataclass
class Kind:
    """One kind of call: how to build it on a channel, and what a correct answer is."""

    name: str
    what: str
    # (channel, patient) -> a call, which returns an error or None
    make: Callable[[grpc.Channel, str], Callable[[], str | None]]


def propose_kind(
    name: str, what: str, build: Callable[[str], gateway_pb2.ProposeRequest], expect: int
) -> Kind:
    def make(channel: grpc.Channel, patient: str) -> Callable[[], str | None]:
        stub = gateway_pb2_grpc.ToolGatewayStub(channel)

        def call() -> str | None:
            request = build(
                patient
            )  # built inside the timed call: an agent builds one per call too
            proposal = stub.Propose(request, timeout=10)
            if proposal.state != expect:
                state = gateway_pb2.ProposalState.Name(proposal.state)
                return f"{state}: {[r.code for r in proposal.reasons]}"
            return None

        return call

    return Kind(name, what, make)


def echo_kind(payload: bytes) -> Kind:
    def make(channel: grpc.Channel, patient: str) -> Callable[[], str | None]:
        echo = channel.unary_unary(
            "/bench.Echo/Echo", request_serializer=bytes, response_deserializer=bytes
        )

        def call() -> str | None:
            echo(payload, timeout=10)
            return None

        return call

    return Kind("echo", f"bare gRPC echo of {len(payload)} B", make)


@dataclasses.dataclass
class Result:
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""

    def add(self, latencies: list[float], seconds: float, errors: list[str]) -> None:
        self.latencies_ms += latencies
        self.seconds += seconds
        self.errors += len(errors)
        if errors and not self.first_error:
            self.first_error = errors[0]

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "calls": len(ordered),
            "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "per_s": round(len(ordered) / self.seconds, 1),
            "errors": self.errors,
            "first_error": self.first_error,
        }


def run_paced(
    call: Callable[[], str | None], rate: float, seconds: float
) -> tuple[list[float], float, list[str]]:
    """One client paced to `rate` calls/s for `seconds`; a call that runs late delays the next
    (closed loop), so the achieved rate is reported beside the latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    interval = 1.0 / rate
    started = next_at = time.perf_counter()
    end = started + seconds
    while next_at < end and (now := time.perf_counter()) < end:
        if now < next_at:
            time.sleep(next_at - now)
        start = time.perf_counter()
        error = call()
        latencies.append((time.perf_counter() - start) * 1000)
        if error:
            errors.append(error)
        next_at += interval
    return latencies, time.perf_counter() - started, errors


def run_saturated(
    calls: list[Callable[[], str | None]], seconds: float
) -> tuple[list[float], float, list[str]]:
    """One thread per call (each on its own channel), back to back for `seconds`."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def worker(call: Callable[[], str | None]) -> None:
        local: list[float] = []
        failed: list[str] = []
        while time.perf_counter() < end:
            start = time.perf_counter()
            error = call()
            local.append((time.perf_counter() - start) * 1000)
            if error:
                failed.append(error)
        with lock:
            latencies.extend(local)
            errors.extend(failed)

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, errors


def start_echo() -> tuple[subprocess.Popen[bytes], str]:
    target = f"127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, target])
    deadline = time.monotonic() + 30
    while not grpc_serving(target):
        if echo.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the echo server did not start")
        time.sleep(0.05)
    return echo, target


def measure(
    stack: Stack, echo_target: str, patient_ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    echo_payload = vital_sign_request().SerializeToString()  # as big as a held Propose request
    kinds = [
        propose_kind(
            "held",
            "vital-sign Observation, confidence 0.8: held for approval (decision path, no write)",
            vital_sign_request,
            gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL,
        ),
        propose_kind("written", *WRITTEN[args.written], gateway_pb2.PROPOSAL_STATE_ACCEPTED),
        echo_kind(echo_payload),
    ]
    clients = max(1, args.clients)
    sidecar_channels = [grpc.insecure_channel(stack.sidecar_target) for _ in range(clients)]
    echo_channels = [grpc.insecure_channel(echo_target) for _ in range(clients)]
    try:
        calls = {
            kind.name: [
                kind.make(channel, patient)
                for channel, patient in zip(
                    echo_channels if kind.name == "echo" else sidecar_channels,
                    patient_ids,
                    strict=True,
                )
            ]
            for kind in kinds
        }
        for kind in kinds:  # warm up connections, imports, caches and every channel
            for call in calls[kind.name]:
                for _ in range(args.warmup // clients + 1):
                    if error := call():
                        raise SystemExit(
                            f"{kind.name} ({kind.what}): unexpected answer in warm-up: {error}"
                        )

        Runner = Callable[[str, float], tuple[list[float], float, list[str]]]
        phases: dict[str, Runner] = {
            f"paced {args.rate:g}/s": lambda name, s: run_paced(calls[name][0], args.rate, s),
            "saturated x1": lambda name, s: run_saturated(calls[name][:1], s),
            f"saturated x{clients}": lambda name, s: run_saturated(calls[name], s),
        }
        slices = max(1, round(args.seconds / args.slice))
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for phase, runner in phases.items():
            results = {kind.name: Result() for kind in kinds}
            for _ in range(slices):
                for kind in kinds:
                    results[kind.name].add(*runner(kind.name, args.seconds / slices))
            table[phase] = {name: result.summary() for name, result in results.items()}
    finally:
        for channel in (*sidecar_channels, *echo_channels):
            channel.close()

    checks: list[dict[str, Any]] = []
    paced = table[f"paced {args.rate:g}/s"]
    for name in ("held", "written"):
        p50, echo_p50 = paced[name]["p50_ms"], paced["echo"]["p50_ms"]
        checks.append(
            {
                "what": f"{name} p50 at {args.rate:g}/s <= {TARGET_P50_MS:g} ms",
                "value": p50,
                "ok": p50 <= TARGET_P50_MS,
            }
        )
        checks.append(
            {
                "what": f"{name} p50 at {args.rate:g}/s <= {TARGET_RATIO:g}x echo p50",
                "value": round(p50 / echo_p50, 2),
                "ok": p50 <= TARGET_RATIO * echo_p50,
            }
        )
        achieved = paced[name]["per_s"]
        if achieved < 0.95 * args.rate:
            checks.append(
                {
                    "what": f"{name} kept the paced rate of {args.rate:g}/s (one client)",
                    "value": achieved,
                    "ok": False,
                }
            )
    return {
        "kinds": {kind.name: kind.what for kind in kinds},
        "seconds_per_phase_and_kind": args.seconds,
        "slices": slices,
        "phases": table,
        "checks": checks,
        "all_ok": all(c["ok"] for c in checks)
        and not any(row["errors"] for phase in table.values() for row in phase.values()),
    }


def print_table(out: dict[str, Any]) -> None:
    print("Propose through sidecar + adapter + FHIR store processes vs a bare gRPC echo")
    for name, what in out["kinds"].items():
        print(f"  {name:<8} {what}")
    print(
        f"  {out['seconds_per_phase_and_kind']:g} s per phase and kind, in {out['slices']} "
        "interleaved slices; fresh idempotency key and trace id on every call\n"
    )
    print(
        f"{'phase':<16}{'kind':<9}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}"
        f"{'p50/echo':>10}{'p99/echo':>10}{'errors':>8}"
    )
    for phase, rows in out["phases"].items():
        echo = rows["echo"]
        for name, row in rows.items():
            ratios = (
                f"{row['p50_ms'] / echo['p50_ms']:>9.2f}x{row['p99_ms'] / echo['p99_ms']:>9.2f}x"
                if name != "echo"
                else f"{'':>10}{'':>10}"
            )
            print(
                f"{phase:<16}{name:<9}{row['calls']:>7}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
                f"{row['per_s']:>8.0f}{ratios}{row['errors']:>8}"
            )
    for phase, rows in out["phases"].items():
        for name, row in rows.items():
            if row["errors"]:
                print(
                    f"ERROR {phase} {name}: {row['errors']} unexpected answers, e.g. {row['first_error']}"
                )
    print()
    for check in out["checks"]:
        print(f"{'PASS' if check['ok'] else 'FAIL'}  {check['what']}: {check['value']}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="paced request rate (req/s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase and kind")
    parser.add_argument("--slice", type=float, default=2.0, help="seconds per interleaved slice")
    parser.add_argument("--clients", type=int, default=4, help="clients in the concurrent phase")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls per kind")
    parser.add_argument(
        "--written",
        choices=sorted(WRITTEN),
        default="telecom",
        help="the autonomous write: a Patient telecom update, or a vital sign at confidence 0.97",
    )
    parser.add_argument("--policy-dir", type=Path, default=shipped_policy_dir())
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="chartgate-bench-"))
    patient_ids = patients(max(1, args.clients))
    stack = start_bench_stack(workdir, args.policy_dir, patient_ids)
    echo: subprocess.Popen[bytes] | None = None
    try:
        echo, echo_target = start_echo()
        out = measure(stack, echo_target, patient_ids, args)
    finally:
        if echo is not None:
            echo.terminate()
            echo.wait()
        stack.stop()
    out["workdir"] = str(workdir)
    # Other work on the machine moves every figure; say how busy it was.
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)
        print(f"\nload average at the end (1, 5, 15 min): {out['load_average']}")
        print(f"state and process logs in {workdir}")
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
