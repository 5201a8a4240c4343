"""Signing keys (Ed25519, RFC 8037 OKP JWKs) kept as files, and the JWKS documents that publish them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc.jwk import KeySet, OKPKey


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 JWK/JWKS."""


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key with the key id (`kid`) that names it in tokens and audit records."""

    kid: str
    jwk: OKPKey

    @property
    def private_key(self) -> Ed25519PrivateKey:
        key = self.jwk.private_key
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"key {self.kid} is not an Ed25519 private key")
        return key

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK dict with kid, alg and use set."""
        data = self.jwk.as_dict(private=False)
        return {
            **{k: str(v) for k, v in data.items()},
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


def generate(kid_prefix: str) -> SigningKey:
    """Make a fresh Ed25519 key whose kid is the prefix plus its RFC 7638 thumbprint."""
    jwk = OKPKey.generate_key("Ed25519", private=True)
    return SigningKey(kid=f"{kid_prefix}-{jwk.thumbprint()[:16]}", jwk=jwk)


def load_or_create(path: Path, kid_prefix: str) -> SigningKey:
    """Load the private JWK at path, or create it (mode 0600) with its public JWKS beside it."""
    if path.exists():
        return load_private(path)
    key = generate(kid_prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = {**key.jwk.as_dict(private=True), "kid": key.kid, "alg": "EdDSA"}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(private, handle)
    write_jwks(public_jwks_path(path), [key])
    return key


def public_jwks_path(private_path: Path) -> Path:
    """Where the public JWKS for a private key file lives: `<name>.jwks.json` beside it."""
    return private_path.with_name(private_path.stem + ".jwks.json")


def load_private(path: Path) -> SigningKey:
    """Load a private Ed25519 JWK written by load_or_create."""
    try:
        data = json.loads(path.read_text())
        jwk = OKPKey.import_key(data)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot load private key {path}: {exc}") from exc
    if not jwk.is_private or data.get("crv") != "Ed25519" or "kid" not in data:
        raise KeyFileError(f"{path} is not a private Ed25519 JWK with a kid")
    return SigningKey(kid=str(data["kid"]), jwk=jwk)


def write_jwks(path: Path, keys: list[SigningKey]) -> None:
    """Write the public JWKS (RFC 7517 section 5) for the given keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keys": [k.public_jwk() for k in keys]}, indent=2))


def load_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Load public Ed25519 keys by kid from a JWKS file or a single JWK file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read public keys {path}: {exc}") from exc
    entries = data["keys"] if isinstance(data, dict) and "keys" in data else [data]
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("crv") != "Ed25519" or "kid" not in entry:
            raise KeyFileError(f"{path}: every key must be an Ed25519 JWK with a kid")
        public = {k: v for k, v in entry.items() if k != "d"}
        jwk = OKPKey.import_key(public)
        pub = jwk.public_key
        if not isinstance(pub, Ed25519PublicKey):
            raise KeyFileError(f"{path}: key {entry['kid']} is not Ed25519")
        keys[str(entry["kid"])] = pub
    if not keys:
        raise KeyFileError(f"{path} holds no keys")
    return keys


def load_keyset(path: Path) -> KeySet:
    """Load a public JWKS as a joserfc KeySet, for JWT verification by kid."""
    try:
        return KeySet.import_key_set(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read JWKS {path}: {exc}") from exc
