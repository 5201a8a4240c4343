"""Keyrings: kids derived from the key (RFC 7638), windows, roles, duplicates refused, hostile files refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from chartgate import keys
from sidecar.audit.keyring import (
    Keyring,
    KeyringError,
    entry_from_public_key,
    kid_matches,
    merge,
    thumbprint,
)


def jwk(key: keys.SigningKey, **extra: str) -> dict[str, str]:
    return {**key.public_jwk(), **extra}


def test_thumbprint_is_rfc7638_as_joserfc_computes_it(signing_key: keys.SigningKey) -> None:
    entry = jwk(signing_key)
    assert thumbprint(entry["x"]) == OKPKey.import_key(entry).thumbprint()
    # chartgate.keys names keys <prefix>-<first 16 characters of the thumbprint>.
    assert kid_matches(signing_key.kid, thumbprint(entry["x"]))
    assert not kid_matches("audit-AAAAAAAAAAAAAAAA", thumbprint(entry["x"]))
    assert not kid_matches("audit-" + thumbprint(entry["x"])[:8], thumbprint(entry["x"]))


def test_a_substituted_key_under_the_genuine_kid_is_refused(
    tmp_path: Path, signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    # The attack: keep the real kid, swap in another public key.
    forged = {**jwk(other_key), "kid": signing_key.kid}
    path = tmp_path / "forged.json"
    path.write_text(json.dumps({"keys": [forged]}))
    with pytest.raises(KeyringError, match="not derived from this key"):
        Keyring.load(path)


def test_duplicate_kids_and_repeated_keys_are_refused(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"keys": [jwk(signing_key), jwk(signing_key, role="audit")]}))
    with pytest.raises(KeyringError, match="duplicate kid"):
        Keyring.load(path)
    full = {**jwk(signing_key), "kid": thumbprint(jwk(signing_key)["x"])}
    path.write_text(json.dumps({"keys": [jwk(signing_key), full]}))
    with pytest.raises(KeyringError, match="appears twice"):
        Keyring.load(path)


def test_windows_roles_and_origins_are_read_and_normalized(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "ring.json"
    entry = jwk(
        signing_key,
        role="audit",
        origin="chartgate.example/audit/a",
        not_before="2026-01-01T00:00:00Z",
        retired_at="2026-02-01T00:00:00+01:00",
    )
    path.write_text(json.dumps({"keys": [entry]}))
    key = Keyring.load(path).keys[signing_key.kid]
    assert key.not_before == "2026-01-01T00:00:00.000000Z"
    assert key.retired_at == "2026-01-31T23:00:00.000000Z"
    assert key.covers("2026-01-15T00:00:00.000000Z")
    assert key.covers("2026-01-31T23:00:00.000000Z")  # the retiring record itself
    assert not key.covers("2025-12-31T23:59:59.999999Z")
    assert not key.covers("2026-01-31T23:00:00.000001Z")
    assert key.origin == "chartgate.example/audit/a"
    # Saved and read back unchanged.
    ring = Keyring.load(path)
    ring.save(tmp_path / "again.json")
    assert Keyring.load(tmp_path / "again.json").keys == ring.keys


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"role": "root"}, "role"),
        ({"not_before": "yesterday"}, "RFC 3339"),
        ({"not_before": "2026-01-01T00:00:00"}, "time zone"),
        ({"retired_at": "2025-01-01T00:00:00Z", "not_before": "2026-01-01T00:00:00Z"}, "before"),
        ({"origin": "has space"}, "origin"),
        ({"crv": "P-256"}, "Ed25519"),
        ({"x": "AAAA"}, "32-byte"),
        ({"x": "!!!"}, "base64url"),
        ({"d": "secret"}, "private key"),
        ({"surprise": "1"}, "unknown members"),
    ],
)
def test_bad_entries_are_refused_by_name(
    tmp_path: Path, signing_key: keys.SigningKey, change: dict[str, str], says: str
) -> None:
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"keys": [{**jwk(signing_key, role="audit"), **change}]}))
    with pytest.raises(KeyringError, match=says):
        Keyring.load(path)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested deeper"),
        (b"[" * 600_000 + b"]" * 600_000, "larger than"),
        (b"not json", "not JSON"),
        (b'{"keys": []}', "no keys"),
        (b'{"keys": {}}', "not a list"),
        (b'{"keys": [], "extra": 1}', "unknown top-level"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_hostile_key_files_are_refused_not_crashed_on(
    tmp_path: Path, data: bytes, says: str
) -> None:
    path = tmp_path / "ring.json"
    path.write_bytes(data)
    with pytest.raises(KeyringError, match=says):
        Keyring.load(path)


def test_missing_file_is_a_keyring_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load(tmp_path / "nope.json")


def test_plain_jwks_and_single_jwk_are_audit_keys_valid_at_any_time(
    signing_key: keys.SigningKey, jwks_path: Path, tmp_path: Path
) -> None:
    ring = Keyring.load(jwks_path)
    entry = ring.keys[signing_key.kid]
    assert (entry.role, entry.not_before, entry.retired_at) == ("audit", None, None)
    single = tmp_path / "one.jwk"
    single.write_text(json.dumps(signing_key.public_jwk()))
    assert list(Keyring.load(single).keys) == [signing_key.kid]


def test_merge_refuses_duplicate_kids(
    signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    a = Keyring.of([entry_from_public_key(signing_key.public_key, signing_key.kid)])
    b = Keyring.of([entry_from_public_key(other_key.public_key, other_key.kid)])
    assert set(merge([a, b]).keys) == {signing_key.kid, other_key.kid}
    with pytest.raises(KeyringError, match="duplicate kid"):
        merge([a, a])


def test_a_member_named_twice_is_refused(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    # With plain json.loads the second `keys` (or `kid`) would silently replace the first.
    genuine = json.dumps([jwk(signing_key)])
    path = tmp_path / "twice.json"
    path.write_text(f'{{"keys": {genuine}, "keys": []}}')
    with pytest.raises(KeyringError, match="is not JSON"):
        Keyring.load(path)
    entry = json.dumps(jwk(signing_key))
    path.write_text(f'{{"keys": [{entry[:-1]}, "kid": "audit-AAAAAAAAAAAAAAAA"}}]}}')
    with pytest.raises(KeyringError, match="is not JSON"):
        Keyring.load(path)
