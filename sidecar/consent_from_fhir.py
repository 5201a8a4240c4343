"""Derive Chartgate consent records from FHIR R4 Consent resources (http://hl7.org/fhir/R4/consent.html)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fhir.resources.R4B.consent import Consent
from pydantic import ValidationError

# The agent is a FHIR Device; an actor naming one is matched against the agent's id.
_AGENT_REFERENCE_PREFIX = "Device/"


class UnsupportedConsent(ValueError):
    """A Consent this derivation cannot read without guessing (it is refused, never half-read)."""


def record_from_fhir(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The consent record (docs/policy.md, "Consent records") of one FHIR Consent.

    Read: `id`, `status`, `patient`, and the root `provision`: `type`, `period`, `purpose`
    (PurposeOfUse codes), `actor[].reference` and `class` (resource types). A root provision of
    type `deny` becomes status `rejected` (the patient refused those purposes). Nested
    provisions (exceptions) are refused rather than ignored: ignoring a nested `deny` would
    grant what the patient refused.
    """
    try:
        consent = Consent.model_validate(dict(resource))
    except ValidationError as exc:
        raise UnsupportedConsent(f"not a valid FHIR Consent: {exc.errors()[0]['msg']}") from None
    name = f"Consent/{consent.id}" if consent.id else "a Consent without id"
    if not consent.id:
        raise UnsupportedConsent(f"{name}: an id is required, so reasons can name it")
    patient = consent.patient.reference if consent.patient else None
    if not patient or not patient.startswith("Patient/"):
        raise UnsupportedConsent(f"{name}: patient must be a Patient/<id> reference")
    provision = consent.provision
    if provision is None:
        raise UnsupportedConsent(f"{name}: no provision, so no purpose is granted")
    if provision.provision:
        raise UnsupportedConsent(f"{name}: nested provisions are not supported")
    status = consent.status
    if provision.type == "deny" and status == "active":
        status = "rejected"
    purposes = [c.code for c in provision.purpose or () if c.code]
    if not purposes:
        raise UnsupportedConsent(f"{name}: provision.purpose names no purpose of use")
    actors = [_actor(a.reference.reference, name) for a in provision.actor or ()]
    classes = [c.code for c in provision.class_fhir or () if c.code]
    period = provision.period
    return {
        "id": consent.id,
        "patient": patient.removeprefix("Patient/"),
        "status": status,
        "purposes": purposes,
        "actors": actors or ["*"],
        "data_classes": classes or ["*"],
        "period": {
            "start": _bound(period.start if period else None, name, end=False),
            "end": _bound(period.end if period else None, name, end=True),
        },
    }


def _actor(reference: str | None, name: str) -> str:
    if not reference:
        raise UnsupportedConsent(f"{name}: an actor without a literal reference")
    if reference.startswith(_AGENT_REFERENCE_PREFIX):
        return reference.removeprefix(_AGENT_REFERENCE_PREFIX)
    return reference


def _bound(moment: datetime | date | str | None, name: str, *, end: bool) -> str | None:
    """A period bound as RFC 3339. A date is the whole day in UTC, so an end date stays covered
    until the next midnight (Period.end is inclusive at its precision; ours is exclusive). A year
    or year-month is refused: which instant it means is a guess."""
    if moment is None:
        return None
    if isinstance(moment, str):
        raise UnsupportedConsent(f"{name}: period bound {moment!r} needs at least a full date")
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise UnsupportedConsent(f"{name}: a period bound without a timezone offset")
        return moment.isoformat()
    day = datetime.combine(moment, time(), tzinfo=UTC)
    return (day + timedelta(days=1) if end else day).isoformat()
