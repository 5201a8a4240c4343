"""Profile and terminology validation of a proposed write (US Core, FHIR R4 core required bindings).

`check_profiles(resource, operation=..., profiles=None)` returns field violations; the
definitions are package data (`data/`, from pinned upstream packages; docs/validation.md).
"""

from __future__ import annotations

from sidecar.validation.profiles.check import (
    UnknownProfile,
    applicable,
    check_profiles,
    check_settings,
    known_profiles,
    preload,
    profiles_for,
)
from sidecar.validation.profiles.walk import (
    BINDING,
    CARDINALITY,
    FIXED_VALUE,
    MUST_SUPPORT,
    REQUIRED,
    TYPE,
)

__all__ = [
    "BINDING",
    "CARDINALITY",
    "FIXED_VALUE",
    "MUST_SUPPORT",
    "REQUIRED",
    "TYPE",
    "UnknownProfile",
    "applicable",
    "check_profiles",
    "check_settings",
    "known_profiles",
    "preload",
    "profiles_for",
]
