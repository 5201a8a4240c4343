"""The patient consent directory: consent records (derived from FHIR Consent) read from a JSON file."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sidecar.consent_from_fhir import record_from_fhir


class ConsentFileError(ValueError):
    """The consent file is unreadable or holds a malformed record."""


class ConsentPeriod(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: datetime | None = None
    end: datetime | None = None


class ConsentRecord(BaseModel):
    """A machine-readable consent: who it is for, for which purposes, to whom, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    patient: str = Field(min_length=1)
    # FHIR R4 Consent.status: draft | proposed | active | rejected | inactive | entered-in-error
    status: str = Field(pattern="^(draft|proposed|active|rejected|inactive|entered-in-error)$")
    purposes: tuple[str, ...] = ()
    actors: tuple[str, ...] = ("*",)
    data_classes: tuple[str, ...] = ("*",)
    period: ConsentPeriod = ConsentPeriod()

    def as_policy_input(self) -> dict[str, Any]:
        """Policy input shape (docs/policy.md): period bounds as integer ns, 0 meaning open."""
        return {
            "id": self.id,
            "patient": self.patient,
            "status": self.status,
            "purposes": list(self.purposes),
            "actors": list(self.actors),
            "data_classes": list(self.data_classes),
            "period": {
                "start_ns": _ns(self.period.start),
                "end_ns": _ns(self.period.end),
            },
        }


# Policy input numbers stay within what every engine represents exactly (signed 64-bit integers;
# sidecar/policy/representable.py). A bound past 2262-04-11T23:47:16Z, the last instant int64
# nanoseconds reach (a consent "until 9999"), is clamped to it: still in the far future for
# every decision, where the exact value (2.5e20 ns) would be refused by one engine and not another.
NS_MAX = 2**63 - 1


def _ns(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        raise ValueError("consent period bounds need a timezone offset")
    ns = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    return max(1, min(ns, NS_MAX))


def parse_consents(raw: Any) -> list[ConsentRecord]:
    """Records from the file's JSON: a list of consent records or FHIR Consent resources, or a
    FHIR Bundle of Consents (e.g. a saved `GET [base]/Consent?patient=...` searchset)."""
    if isinstance(raw, dict) and raw.get("resourceType") == "Bundle":
        raw = [entry.get("resource") for entry in raw.get("entry") or ()]
    if not isinstance(raw, list):
        raise ValueError("expected a JSON list of consent records or a FHIR Bundle")
    records = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"item {index} is not a JSON object")
        if "resourceType" in item:
            if item["resourceType"] != "Consent":
                raise ValueError(f"item {index} is a {item['resourceType']}, not a Consent")
            item = record_from_fhir(item)
        records.append(ConsentRecord.model_validate(item))
    return records


class ConsentDirectory:
    """Consents by patient, re-read when the file changes (operators update it without restart)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime_ns: int | None = None
        self._by_patient: Mapping[str, Sequence[dict[str, Any]]] = {}
        if path is not None:
            self._reload()

    def for_patient(self, patient_id: str) -> Sequence[dict[str, Any]]:
        """The patient's consent records in policy-input form (empty when there are none)."""
        if self._path is not None:
            try:
                mtime = os.stat(self._path).st_mtime_ns
            except OSError:
                mtime = None
            if mtime != self._mtime_ns:
                self._reload()
        return self._by_patient.get(patient_id, ())

    def _reload(self) -> None:
        assert self._path is not None
        with self._lock:
            try:
                mtime = os.stat(self._path).st_mtime_ns
                records = parse_consents(json.loads(self._path.read_text()))
            except (OSError, ValueError, ValidationError, TypeError) as exc:
                if self._mtime_ns is None:
                    raise ConsentFileError(f"cannot load consents {self._path}: {exc}") from exc
                # A bad edit leaves the last good directory in force rather than erasing consent
                # (which would deny everything) or keeping half a file.
                return
            by_patient: dict[str, list[dict[str, Any]]] = {}
            for record in records:
                by_patient.setdefault(record.patient, []).append(record.as_policy_input())
            self._by_patient = by_patient
            self._mtime_ns = mtime
