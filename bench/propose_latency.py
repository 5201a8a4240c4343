"""Benchmark: the Propose decision path (held for approval, so no write) against a bare gRPC echo.

Starts a real FHIR store, adapter and sidecar (the sidecar as its own process), plus a bare gRPC
echo server in its own process, then drives each from this process at a fixed rate and at
saturation, and prints p50/p99 in milliseconds and the ratio decision/echo.

    .venv/bin/python bench/propose_latency.py [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chartgate.demo import demo_sidecar_config
from chartgate.stack import free_port, grpc_serving, start_stack
from chartgate.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support import seed_patient

REPO = Path(__file__).resolve().parent.parent

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

LAB_DRAFT = {
    "resourceType": "Observation",
    "status": "preliminary",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
    "subject": {"reference": "Patient/demo-patient-1"},
    "valueQuantity": {"value": 98, "unit": "mg/dL"},
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_fixed_rate(call: Callable[[], None], rate: float, seconds: float) -> list[float]:
    """Open-loop-ish: one caller paced to `rate` requests per second; latency per call in ms."""
    latencies: list[float] = []
    interval = 1.0 / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    while next_at < end:
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        start = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - start) * 1000)
        next_at += interval
    return latencies


def run_saturated(
    call: Callable[[], None], clients: int, seconds: float
) -> tuple[list[float], float]:
    """`clients` threads calling back to back; returns latencies (ms) and throughput (req/s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def worker() -> None:
        local: list[float] = []
        while time.perf_counter() < end:
            start = time.perf_counter()
            call()
            local.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(latencies) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="fixed request rate (req/s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    parser.add_argument("--clients", type=int, default=8, help="threads at saturation")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="chartgate-bench-"))
    stack = start_stack(workdir, demo_sidecar_config(workdir, REPO / "rego"))
    seed_patient(stack.fhir_base, "demo-patient-1")
    echo_target = f"127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echo_target])
    try:
        while not grpc_serving(echo_target):
            time.sleep(0.05)
        sidecar_channel = grpc.insecure_channel(stack.sidecar_target)
        gateway = gateway_pb2_grpc.ToolGatewayStub(sidecar_channel)
        body = json.dumps(LAB_DRAFT)
        echo_channel = grpc.insecure_channel(echo_target)
        echo_call = echo_channel.unary_unary(
            "/bench.Echo/Echo", request_serializer=bytes, response_deserializer=bytes
        )
        echo_payload = b"x" * len(body)

        def propose() -> None:
            proposal = gateway.Propose(
                gateway_pb2.ProposeRequest(
                    idempotency_key=uuid.uuid4().hex,
                    tool="fhir.create",
                    resource_type="Observation",
                    resource_json=body,
                    patient_id="demo-patient-1",
                    purpose_of_use="TREAT",
                    confidence=0.8,
                    mode=gateway_pb2.MODE_LIVE,
                ),
                timeout=10,
            )
            if proposal.state != gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL:
                raise SystemExit(f"unexpected state {proposal.state}: {proposal.reasons}")

        def bare_echo() -> None:
            echo_call(echo_payload, timeout=10)

        for call in (propose, bare_echo):  # warm up connections, imports and caches
            for _ in range(200):
                call()

        print(
            f"Propose decision path (held for approval, audit fsynced) vs bare gRPC echo; "
            f"{args.seconds:.0f} s per phase, payload {len(body)} B"
        )
        print(f"{'phase':<28}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
        results: dict[str, tuple[float, float]] = {}
        for label, call in (("propose", propose), ("echo", bare_echo)):
            fixed = run_fixed_rate(call, args.rate, args.seconds)
            p50, p99 = statistics.median(fixed), percentile(fixed, 0.99)
            results[f"{label}@rate"] = (p50, p99)
            print(
                f"{label + f' @ {args.rate:.0f}/s':<28}{p50:>9.3f}{p99:>9.3f}"
                f"{len(fixed) / args.seconds:>9.0f}"
            )
            saturated, throughput = run_saturated(call, args.clients, args.seconds)
            p50, p99 = statistics.median(saturated), percentile(saturated, 0.99)
            results[f"{label}@sat"] = (p50, p99)
            print(
                f"{label + f' saturated x{args.clients}':<28}{p50:>9.3f}{p99:>9.3f}"
                f"{throughput:>9.0f}"
            )
        for phase in ("rate", "sat"):
            p, e = results[f"propose@{phase}"], results[f"echo@{phase}"]
            print(f"ratio propose/echo @{phase}: p50 {p[0] / e[0]:.2f}x, p99 {p[1] / e[1]:.2f}x")
        sidecar_channel.close()
        echo_channel.close()
    finally:
        echo.terminate()
        echo.wait()
        stack.stop()


if __name__ == "__main__":
    main()
