"""A local reviewer site for development and tests (not a product): FHIR store, adapter, sidecar, dev issuer, console.

`python -m console.devsite [--workdir DIR] [--console-port 8091] [--issuer-port 8090]` starts
every process on loopback, has the demo agent propose a few writes that policy holds, prints
where to sign in, and runs until Ctrl-C. Sign-in is the development issuer's user picker
(chartgate/devissuer: no passwords, anyone who reaches it is anyone), so this never binds
anything but loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from chartgate.demo import PATIENT, TENANT, demo_sidecar_config
from chartgate.devissuer.issuer import DEFAULT_USERS, DevUser
from chartgate.stack import Process, Stack, StackError, free_port, start_stack
from sidecar.policy.library import shipped_policy_dir

CLIENT_ID: Final = "chartgate-console"
# A second prescriber beside carol, so a dual approval can be completed through the web.
USERS: Final = (
    *DEFAULT_USERS,
    DevUser(sub="erin", name="Erin", roles=("prescriber",), fhir_user="Practitioner/erin"),
)
OBS: Final = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass
class DevSite:
    """The running processes (all stopped by `stack.stop()`) and where they answer."""

    stack: Stack
    issuer_url: str
    console_url: str

    def stop(self) -> None:
        self.stack.stop()


def _spawn(stack: Stack, name: str, args: Sequence[str]) -> Process:
    log_path = stack.workdir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    popen = subprocess.Popen(
        [sys.executable, *args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    process = Process(name, popen, log_path, log_file)
    stack.processes.append(process)  # stopped with the stack, in reverse order
    return process


def _wait_http(process: Process, url: str, deadline_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise StackError(f"{process.name} exited; see {process.log_path}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise StackError(f"{process.name} not ready after {deadline_seconds} s; see {process.log_path}")


def start_devsite(
    workdir: Path,
    *,
    issuer_port: int | None = None,
    console_port: int | None = None,
    approval_window_seconds: int = 1800,
) -> DevSite:
    """Start the five processes, each waited on until it answers; stops them all if one fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    issuer_port, console_port = issuer_port or free_port(), console_port or free_port()
    issuer_url = f"http://127.0.0.1:{issuer_port}"
    console_url = f"http://127.0.0.1:{console_port}"
    config: dict[str, Any] = demo_sidecar_config(workdir, shipped_policy_dir())
    # The sidecar trusts the issuer by the URL the served issuer puts in `iss` (its own URL),
    # with the key read from the JWKS file the two share in the workdir.
    config["reviewer_issuers"][0]["issuer"] = issuer_url
    # The demo's window is seconds long (it shows an expiry); a reviewer here needs minutes.
    policy_data = Path(config["policy_data"])
    data = json.loads(policy_data.read_text())
    data["chartgate_config"]["tenants"][TENANT]["approval_expiry_seconds"] = approval_window_seconds
    policy_data.write_text(json.dumps(data, indent=2))
    stack = start_stack(workdir, config)
    try:
        users = workdir / "dev-users.json"
        users.write_text(json.dumps({"users": [u.model_dump(mode="json") for u in USERS]}))
        clients = workdir / "dev-clients.json"
        clients.write_text(
            json.dumps(
                {
                    "clients": [
                        {"client_id": CLIENT_ID, "redirect_uris": [f"{console_url}/callback"]}
                    ]
                }
            )
        )
        issuer = _spawn(
            stack,
            "dev-issuer",
            [
                *("-m", "chartgate.devissuer", "serve", "--workdir", str(workdir)),
                *("--listen", f"127.0.0.1:{issuer_port}"),
                *("--users", str(users), "--clients", str(clients)),
            ],
        )
        _wait_http(issuer, f"{issuer_url}/.well-known/openid-configuration")
        console_config = workdir / "console.json"
        console_config.write_text(
            json.dumps(
                {
                    "issuer": issuer_url,
                    "client_id": CLIENT_ID,
                    "redirect_uri": f"{console_url}/callback",
                    "review_target": stack.review_target,
                    "listen": f"127.0.0.1:{console_port}",
                    # Search covers decided proposals too, through the sidecar's audit index.
                    "audit_logs": [str(stack.workdir / "audit" / "audit.jsonl")],
                },
                indent=2,
            )
        )
        console = _spawn(stack, "console", ["-m", "console", "--config", str(console_config)])
        _wait_http(console, f"{console_url}/healthz")
    except BaseException:
        stack.stop()
        raise
    return DevSite(stack, issuer_url, console_url)


def seed(site: DevSite) -> list[str]:
    """Patient demo-patient-1 in the FHIR store, and three writes the agent proposes that policy
    holds: two lab drafts (one clinician) and a medication order (two prescribers)."""
    from sidecar.client import ChartgateClient

    httpx.put(
        f"{site.stack.fhir_base}/Patient/{PATIENT}",
        json={"resourceType": "Patient", "id": PATIENT, "active": True},
        headers={"Content-Type": "application/fhir+json"},
    ).raise_for_status()
    lab = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucose"},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": 98, "unit": "mg/dL"},
    }
    order = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    common: dict[str, Any] = {
        "tool": "fhir.create",
        "patient_id": PATIENT,
        "on_behalf_of": "Practitioner/dr-lee",
        "model_version": "scribe-2026-10",
        "prompt_version": "p-41",
        "confidence": 0.8,
        "evidence_refs": ["DocumentReference/lab-report-7"],
    }
    with ChartgateClient(site.stack.sidecar_target) as agent:
        return [
            agent.propose(resource=lab, **common).proposal_id,
            agent.propose(
                resource={**lab, "valueQuantity": {"value": 131, "unit": "mg/dL"}}, **common
            ).proposal_id,
            agent.propose(resource=order, **common).proposal_id,
        ]


def main(argv: Sequence[str] | None = None) -> int:
    """Start, seed, print where to go, and wait for Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m console.devsite",
        description="A local reviewer site (development target, not a product).",
    )
    parser.add_argument("--workdir", type=Path, default=Path(".chartgate") / "devsite")
    parser.add_argument("--console-port", type=int, default=8091)
    parser.add_argument("--issuer-port", type=int, default=8090)
    args = parser.parse_args(argv)
    site = start_devsite(args.workdir, issuer_port=args.issuer_port, console_port=args.console_port)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        held = seed(site)
        print(
            f"Reviewer console: {site.console_url}/  (sign in as alice, bob, carol, erin, dave, mallory)"
        )
        print(f"Development issuer: {site.issuer_url}  (no passwords: a development target)")
        print(f"Review API: {site.stack.review_target}; agent API: {site.stack.sidecar_target}")
        print(
            f"{len(held)} proposals held for review; logs in {args.workdir / 'logs'}; Ctrl-C stops."
        )
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
