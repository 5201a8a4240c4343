"""Compare what was intended with what the EHR stored, path by path, and classify each difference.

Only the elements the write set are compared (the whole resource for a create, the named
elements for an update); what the server adds (id, meta, narrative, our identifier stamp, its own
extra elements) is not a difference. What EHRs normalise is recognised as such rather than
reported as a change: code system URI spellings (the HL7 OID forms of LOINC, SNOMED CT, RxNorm
and UCUM), whitespace, the spelling of an instant (`Z` or `+00:00`, fractional zeros), added
date precision, decimal spelling (`72` and `72.0`), and arrays reordered where order carries no
meaning. A changed `display` is cosmetic. Anything else that differs, is missing or lost precision
changes the meaning. Differences carry paths and kinds, never values (they go to the audit log).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Any, Final

from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM


class Severity(IntEnum):
    COSMETIC = 1
    NORMALISED = 2
    MEANING = 3

    @property
    def label(self) -> str:
        return {1: "cosmetic", 2: "normalised", 3: "meaning-changing"}[int(self)]


@dataclass(frozen=True, slots=True)
class Difference:
    """One element that differs: where (a FHIRPath-like path), how much it matters, what kind."""

    path: str
    severity: Severity
    kind: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "severity": self.severity.label, "kind": self.kind}


# Elements the server owns: never compared.
_SERVER_OWNED: Final = frozenset({"id", "meta", "text"})
# Code system spellings an EHR may swap (HL7 terminology, "Using ... with HL7 Standards" pages).
_SYSTEM_ALIASES: Final[Mapping[str, str]] = {
    "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
    "urn:oid:2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "urn:oid:2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "http://hl7.org/fhir/sid/icd-10-cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "urn:oid:2.16.840.1.113883.6.90": "http://hl7.org/fhir/sid/icd-10-cm",
}
# Arrays whose order carries meaning (names, lines of an address): a reorder changes them.
_ORDERED: Final = frozenset({"given", "line", "prefix", "suffix", "component", "dosageInstruction"})
_DATE: Final = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_INSTANT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_MAX_DIFFERENCES: Final = 100


def compare(intended: Mapping[str, Any], stored: Mapping[str, Any]) -> list[Difference]:
    """Every difference between the elements `intended` sets and what `stored` holds."""
    found: list[Difference] = []
    for key, value in intended.items():
        if key in _SERVER_OWNED or key == "resourceType":
            continue
        if key == "identifier" and isinstance(value, list):
            value = [i for i in value if not _is_stamp(i)]
            stored_ids = stored.get("identifier")
            stored_value: Any = (
                [i for i in stored_ids if not _is_stamp(i)]
                if isinstance(stored_ids, list)
                else stored_ids
            )
        else:
            stored_value = stored.get(key, _MISSING)
        found.extend(_diff(key, key, value, stored_value))
        if len(found) >= _MAX_DIFFERENCES:
            break
    return found[:_MAX_DIFFERENCES]


def worst(differences: Sequence[Difference]) -> Severity | None:
    return max((d.severity for d in differences), default=None)


class _Missing:
    pass


_MISSING: Final = _Missing()


def _is_stamp(identifier: Any) -> bool:
    return isinstance(identifier, dict) and identifier.get("system") == PROPOSAL_IDENTIFIER_SYSTEM


def _diff(path: str, name: str, want: Any, got: Any) -> Iterator[Difference]:
    if isinstance(got, _Missing) or got is None:
        yield Difference(path, Severity.MEANING, "missing")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict):
            yield Difference(path, Severity.MEANING, "changed_type")
            return
        for key, value in want.items():
            yield from _diff(f"{path}.{key}", key, value, got.get(key, _MISSING))
        return
    if isinstance(want, list):
        yield from _diff_list(path, name, want, got)
        return
    yield from _diff_leaf(path, name, want, got)


def _diff_list(path: str, name: str, want: list[Any], got: Any) -> Iterator[Difference]:
    if not isinstance(got, list):
        yield Difference(path, Severity.MEANING, "changed_type")
        return
    if len(got) < len(want):
        yield Difference(path, Severity.MEANING, "items_missing")
    pairs = list(zip(want, got, strict=False))
    in_order = [list(_diff(f"{path}[{i}]", name, w, g)) for i, (w, g) in enumerate(pairs)]
    if all(worst(d) is None for d in in_order) or name in _ORDERED:
        for differences in in_order:
            yield from differences
        return
    # Order may carry no meaning here: match each wanted item with the closest stored one.
    remaining = list(range(len(got)))
    reordered = False
    for i, item in enumerate(want):
        best: tuple[int, list[Difference]] | None = None
        for j in remaining:
            candidate = list(_diff(f"{path}[{i}]", name, item, got[j]))
            if best is None or (worst(candidate) or 0) < (worst(best[1]) or 0):
                best = (j, candidate)
            if worst(candidate) is None:
                break
        if best is None:
            break
        remaining.remove(best[0])
        reordered = reordered or best[0] != i
        yield from best[1]
    if reordered:
        yield Difference(path, Severity.NORMALISED, "reordered")


def _diff_leaf(path: str, name: str, want: Any, got: Any) -> Iterator[Difference]:
    if want == got and type(want) is type(got):
        return
    if name == "display":
        yield Difference(path, Severity.COSMETIC, "display_changed")
        return
    if isinstance(want, str) and isinstance(got, str):
        yield from _diff_text(path, name, want, got)
        return
    if _number(want) is not None and _number(want) == _number(got):
        yield Difference(path, Severity.NORMALISED, "number_spelling")
        return
    yield Difference(path, Severity.MEANING, "changed")


def _diff_text(path: str, name: str, want: str, got: str) -> Iterator[Difference]:
    if name == "system" and _SYSTEM_ALIASES.get(want, want) == _SYSTEM_ALIASES.get(got, got):
        yield Difference(path, Severity.NORMALISED, "system_spelling")
        return
    if " ".join(want.split()) == " ".join(got.split()):
        yield Difference(path, Severity.NORMALISED, "whitespace")
        return
    want_time, got_time = _time(want), _time(got)
    if want_time is not None and got_time is not None:
        (want_at, want_precise), (got_at, got_precise) = want_time, got_time
        if want_at == got_at and want_precise == got_precise:
            yield Difference(path, Severity.NORMALISED, "time_spelling")
            return
        if got_precise and not want_precise and got_at.date() == want_at.date():
            yield Difference(path, Severity.NORMALISED, "precision_added")
            return
        if want_precise and not got_precise and got_at.date() == want_at.date():
            yield Difference(path, Severity.MEANING, "precision_lost")
            return
    if got and want.startswith(got) and len(got) < len(want):
        yield Difference(path, Severity.MEANING, "truncated")
        return
    yield Difference(path, Severity.MEANING, "changed")


def _time(text: str) -> tuple[datetime, bool] | None:
    """(moment, has a time of day) of a FHIR date or instant; None for other text."""
    try:
        if _INSTANT.match(text):
            return datetime.fromisoformat(text.replace("Z", "+00:00")), True
        if _DATE.match(text):
            parts = [int(p) for p in text.split("-")] + [1, 1]
            return datetime(parts[0], parts[1], parts[2]), False
    except ValueError:
        return None
    return None


def _number(value: Any) -> Decimal | None:
    """A JSON number as a decimal (so 72 and 72.0 compare equal); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return Decimal(json.dumps(value))
    except (InvalidOperation, ValueError):
        return None
