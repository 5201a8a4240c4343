"""SIGKILL the sidecar while it appends under load: every write the adapter performed has its decision in the
log, the log verifies, and no sequence number is used twice."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chartgate.demo import demo_sidecar_config
from chartgate.stack import Stack, start_sidecar, start_stack
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.audit.files import LogFiles
from sidecar.audit.verify import verify_command
from sidecar.client import ChartgateClient
from sidecar.policy.library import shipped_policy_dir
from tests.support import fhir_search, seed_patient

PATIENT = "demo-patient-1"
CLIENTS = 6
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def vital(value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path, demo_sidecar_config(tmp_path, shipped_policy_dir()))
    seed_patient(running.fhir_base, PATIENT)
    yield running
    running.stop()


def load(target: str, stop: threading.Event, prefix: str, sent: list[str]) -> None:
    """Propose autonomous writes (a heart rate at high confidence) until told to stop or the
    sidecar goes away."""
    n = 0
    with ChartgateClient(target, timeout_seconds=5) as client:
        while not stop.is_set():
            n += 1
            key = f"{prefix}-{n}"
            sent.append(key)
            try:
                client.propose(
                    tool="fhir.create",
                    resource=vital(60 + n % 40),
                    patient_id=PATIENT,
                    idempotency_key=key,
                    confidence=0.97,
                )
            except Exception:  # the sidecar was killed: this client is done
                return


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def test_sigkill_during_appends(stack: Stack) -> None:
    log = stack.workdir / "audit" / "audit.jsonl"
    config = demo_sidecar_config(stack.workdir, shipped_policy_dir())
    stop = threading.Event()
    sent: list[str] = []
    clients = [
        threading.Thread(target=load, args=(stack.sidecar_target, stop, f"c{i}", sent))
        for i in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 20
    # Kill once a fair number of writes have gone through (appends are in full flow).
    while time.monotonic() < deadline and len(log.read_bytes().splitlines()) < 120:
        time.sleep(0.05)
    stack.process("sidecar").popen.send_signal(signal.SIGKILL)
    stack.process("sidecar").popen.wait(10)
    stop.set()
    for client in clients:
        client.join(20)
    before = log.read_bytes()
    assert len(before.splitlines()) >= 120

    # Every write the EHR holds (the adapter stamps each with its proposal id) was decided,
    # and its token recorded, in the log as the kill left it: durable before the write left.
    stored = fhir_search(
        stack.fhir_base, "Observation", subject=f"Patient/{PATIENT}", _count="1000"
    )
    written = {
        identifier["value"]
        for resource in stored
        for identifier in resource.get("identifier", [])
        if identifier.get("system") == PROPOSAL_IDENTIFIER_SYSTEM
    }
    assert written
    on_disk = records(log)
    decided = {r["body"]["proposal_id"] for r in on_disk if r["kind"] == "policy.decision"}
    minted = {r["body"]["proposal_id"] for r in on_disk if r["kind"] == "token.minted"}
    assert written <= decided, written - decided
    assert written <= minted, written - minted

    # Restart on the same workdir: the writer checks the tail, cuts anything torn, and goes on.
    start_sidecar(stack, config)
    with ChartgateClient(stack.sidecar_target) as client:
        after_restart = client.propose(
            tool="fhir.create",
            resource=vital(77),
            patient_id=PATIENT,
            idempotency_key="after-restart",
            confidence=0.97,
        )
    stack.stop()
    final = log.read_bytes()
    # Nothing the killed process wrote in full was rewritten: its complete lines are a prefix.
    complete = before[: before.rfind(b"\n") + 1]
    assert final.startswith(complete)
    lines = [json.loads(line) for line in final.splitlines()]
    assert [r["seq"] for r in lines] == list(range(len(lines)))  # no seq used twice
    if len(complete) < len(before):
        assert any(r["kind"] == "audit.recovered" for r in lines[len(complete.splitlines()) :])
    assert any(r["body"].get("proposal_id") == after_restart.proposal_id for r in lines)
    assert verify_command(log, LogFiles(log).keyring, quiet_progress=True) == 0
