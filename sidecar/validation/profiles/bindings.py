"""Required value-set bindings: is a coded value in the bound ValueSet's expansion."""

from __future__ import annotations

from typing import Any, Final

from sidecar.validation.profiles.definitions import ValueSetCodes

# How many of a ValueSet's codes a description lists; the rest is named by the ValueSet's URL.
_LISTED_CODES: Final = 8


def in_value_set(value: Any, type_code: str, value_set: ValueSetCodes) -> bool | None:
    """Whether `value` (of FHIR type `type_code`) is in `value_set`; None when the value carries
    nothing to look up (a Coding or Quantity with no code: its own required elements say so).

    FHIR R4 (terminologies.html#strength): a `code` must be one of the codes; a Coding's system
    and code must be a pair of the expansion; a CodeableConcept must carry at least one such
    Coding; a Quantity's system and code must be one (the units bindings of the vital signs).
    """
    if type_code in ("code", "string", "uri"):
        return value in value_set.codes if isinstance(value, str) else None
    if not isinstance(value, dict):
        return None
    if type_code in ("Coding", "Quantity") or type_code in _QUANTITIES:
        return _pair_in(value, value_set)
    if type_code == "CodeableConcept":
        codings = value.get("coding")
        if not isinstance(codings, list):
            return False
        return any(isinstance(c, dict) and _pair_in(c, value_set) for c in codings)
    return None


# Quantity's specialisations bind the same way (Age, Duration, ... are Quantities).
_QUANTITIES: Final = frozenset({"Age", "Count", "Distance", "Duration", "Money", "SimpleQuantity"})


def _pair_in(value: dict[str, Any], value_set: ValueSetCodes) -> bool | None:
    system, code = value.get("system"), value.get("code")
    if not isinstance(code, str):
        return None
    # No system (or not a string): the code cannot be known to be the ValueSet's.
    return isinstance(system, str) and (system, code) in value_set.pairs


def describe(value_set: ValueSetCodes, type_code: str) -> str:
    """What a binding expects, e.g. `a code of ValueSet observation-status (required): amended,
    cancelled, ...`, listing codes only (never the value sent)."""
    codes = sorted(value_set.codes)
    listed = ", ".join(codes[:_LISTED_CODES]) + (", …" if len(codes) > _LISTED_CODES else "")
    what = "a code" if type_code in ("code", "string", "uri") else "a coding"
    if type_code in ("Coding", "CodeableConcept"):
        system = {s for s, _ in value_set.pairs}
        if len(system) == 1:
            what = f"a coding of {next(iter(system))}"
    return f"must be {what} from the required ValueSet {value_set.name}: {listed}"
