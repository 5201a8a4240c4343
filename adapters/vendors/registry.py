"""The registry: every module of `adapters.vendors.profiles` that defines PROFILE is a vendor, found by package scan."""

from __future__ import annotations

import importlib
import pkgutil
import threading
from types import ModuleType
from typing import Final

from adapters.vendors.profile import VendorProfile

PACKAGE: Final = "adapters.vendors.profiles"

_lock = threading.Lock()
_found: dict[str, VendorProfile] | None = None


class UnknownVendor(ValueError):
    """No profile has this name; the message lists the ones there are."""


def get_profile(name: str) -> VendorProfile:
    """The profile called `name` (e.g. `epic`), else UnknownVendor."""
    found = _profiles()
    try:
        return found[name]
    except KeyError:
        raise UnknownVendor(f"unknown vendor {name!r}; known: {', '.join(sorted(found))}") from None


def profile_names() -> tuple[str, ...]:
    return tuple(sorted(_profiles()))


def all_profiles() -> tuple[VendorProfile, ...]:
    found = _profiles()
    return tuple(found[name] for name in sorted(found))


def rescan() -> None:
    """Forget what was found, so the next call scans again (for tests that add a vendor)."""
    global _found
    with _lock:
        _found = None


def _profiles() -> dict[str, VendorProfile]:
    global _found
    with _lock:
        if _found is None:
            _found = _scan(importlib.import_module(PACKAGE))
        return _found


def _scan(package: ModuleType) -> dict[str, VendorProfile]:
    """Import every public module (or folder) of the package; each must define PROFILE, named
    as the module is, so a seventh vendor is a new module and nothing else."""
    found: dict[str, VendorProfile] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue  # shared helpers, not vendors
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        profile = getattr(module, "PROFILE", None)
        if not isinstance(profile, VendorProfile):
            raise TypeError(f"{module.__name__} defines no PROFILE (a VendorProfile)")
        if profile.name != info.name:
            raise ValueError(f"{module.__name__} defines the profile {profile.name!r}")
        found[profile.name] = profile
    return found
