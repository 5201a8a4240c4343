"""Fixtures for the audit log tests: real Ed25519 keys on disk and real log files."""

from __future__ import annotations

from pathlib import Path

import pytest

from chartgate import keys


@pytest.fixture
def signing_key(tmp_path: Path) -> keys.SigningKey:
    return keys.load_or_create(tmp_path / "keys" / "audit.jwk", "audit")


@pytest.fixture
def jwks_path(tmp_path: Path, signing_key: keys.SigningKey) -> Path:
    return keys.public_jwks_path(tmp_path / "keys" / "audit.jwk")


@pytest.fixture
def other_key(tmp_path: Path) -> keys.SigningKey:
    return keys.load_or_create(tmp_path / "keys" / "other.jwk", "other")
