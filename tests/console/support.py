"""What the console tests share: the site's handle, the writes the agent proposes, signing in over httpx."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from chartgate.stack import Stack
from chartgate.v1 import gateway_pb2
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from console.devsite import OBS
from sidecar.client import ChartgateClient
from tests.support import fhir_search

PATIENT = "demo-patient-1"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@dataclass
class Site:
    """The running processes and where they answer."""

    stack: Stack
    issuer_url: str
    console_url: str

    def propose(self, resource: dict[str, Any], **kwargs: Any) -> gateway_pb2.Proposal:
        kwargs.setdefault("confidence", 0.8)
        kwargs.setdefault("model_version", "scribe-2026-10")
        kwargs.setdefault("prompt_version", "p-41")
        kwargs.setdefault("on_behalf_of", "Practitioner/dr-lee")
        kwargs.setdefault("evidence_refs", ["DocumentReference/lab-report-7"])
        with ChartgateClient(self.stack.sidecar_target) as agent:
            return agent.propose(
                tool="fhir.create", resource=resource, patient_id=PATIENT, **kwargs
            )

    def written(self, resource_type: str, proposal_id: str) -> int:
        """How many resources the FHIR store holds for this proposal (by the adapter's stamp)."""
        identifier = f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"
        return len(fhir_search(self.stack.fhir_base, resource_type, identifier=identifier))


def lab_draft(value: float = 98, text: str | None = None) -> dict[str, Any]:
    """A preliminary lab Observation: policy holds it for one clinician's approval."""
    code: dict[str, Any] = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}
    if text is not None:
        code["text"] = text
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS, "code": "laboratory"}]}],
        "code": code,
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "mg/dL"},
    }


def medication_order() -> dict[str, Any]:
    """A draft MedicationRequest: policy holds it for two distinct prescribers."""
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197361"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(console_url: str, issuer_url: str, user: str, start: str = "/queue") -> httpx.Client:
    """A client holding `user`'s console session: console → issuer's user picker → callback."""
    http = httpx.Client(base_url=console_url, follow_redirects=False, timeout=30.0)
    response = http.get(start)
    assert response.status_code == 303, response.text
    signed_in(http, issuer_url, user, response.headers["location"])  # /login?next=...
    return http


def signed_in(http: httpx.Client, issuer_url: str, user: str, login: str) -> httpx.Response:
    """The page the console answers once `user` has signed in through `login` (a /login URL)."""
    response = http.get(login)
    assert response.status_code == 303, response.text
    authorize = response.headers["location"]
    assert authorize.startswith(f"{issuer_url}/authorize?")
    page = httpx.get(authorize)
    assert page.status_code == 200, page.text
    fields = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
    answer = httpx.post(urljoin(authorize, "authorize"), data={**fields, "user": user})
    assert answer.status_code == 303, answer.text
    callback = answer.headers["location"]
    response = http.get(callback)
    assert response.status_code == 200, response.text
    return response


def csrf_token(page: str) -> str:
    """The CSRF token a console page's forms carry."""
    match = _CSRF.search(page)
    assert match, "no CSRF token on the page"
    return html.unescape(match.group(1))
