"""The registry finds vendors by scanning their package: a seventh vendor is one new module and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import adapters.vendors.profiles as profiles_package
from adapters.vendors import registry
from adapters.vendors.registry import UnknownVendor, get_profile, profile_names

SIX = ("advancedmd", "athenahealth", "eclinicalworks", "epic", "generic", "veradigm")

SEVENTH = '''
"""A seventh vendor, for the test: copied from generic, renamed."""
from adapters.vendors.profiles.generic import PROFILE as _GENERIC

PROFILE = _GENERIC.model_copy(update={"name": "acme", "title": "Acme EHR"})
'''


@pytest.fixture
def extra_modules(tmp_path: Path) -> Iterator[Path]:
    """A folder scanned as part of adapters.vendors.profiles, removed afterwards."""
    profiles_package.__path__.append(str(tmp_path))
    registry.rescan()
    yield tmp_path
    profiles_package.__path__.remove(str(tmp_path))
    registry.rescan()


def test_the_six_vendors_are_registered() -> None:
    assert profile_names() == SIX
    assert get_profile("epic").title == "Epic"


def test_an_unknown_vendor_lists_the_known_ones() -> None:
    with pytest.raises(UnknownVendor, match="epic") as info:
        get_profile("cerner")
    assert isinstance(info.value, ValueError)  # so a bad --vendor is a configuration error


def test_a_seventh_vendor_is_a_new_module(extra_modules: Path) -> None:
    (extra_modules / "acme.py").write_text(SEVENTH)
    registry.rescan()
    assert get_profile("acme").title == "Acme EHR"
    assert "acme" in profile_names()


def test_a_module_without_a_profile_is_an_error(extra_modules: Path) -> None:
    (extra_modules / "broken_vendor.py").write_text('"""No PROFILE here."""\n')
    registry.rescan()
    with pytest.raises(TypeError, match="defines no PROFILE"):
        profile_names()


def test_a_profile_must_be_named_as_its_module(extra_modules: Path) -> None:
    (extra_modules / "misnamed.py").write_text(SEVENTH)
    registry.rescan()
    with pytest.raises(ValueError, match="'acme'"):
        profile_names()
