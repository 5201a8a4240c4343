"""The adapter's SMART signing key: load it from a PEM or JWK file, or make one (RFC 7517; RFC 7518 3.3, 3.4).

client-confidential-asymmetric.html: the client registers the public half as a JWK Set whose keys
carry `kty` and `kid`, and protects the private half. Nothing here logs or prints key material,
and errors name the file and the problem only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from adapters.smart.settings import SigningAlgorithm

_MIN_RSA_BITS: Final = 2048


class SigningKeyError(ValueError):
    """The key file is missing, unreadable, not private, or does not suit the algorithm."""


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """A private key, its `kid`, and the algorithm it signs with. Its repr shows no key."""

    key: RSAKey | ECKey
    kid: str
    alg: SigningAlgorithm

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set to register with the EHR: the public key with kid, alg and use."""
        public = {**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg, "use": "sig"}
        return {"keys": [public]}


def load_signing_key(path: Path, alg: SigningAlgorithm, kid: str | None = None) -> SigningKey:
    """Read a private key (PEM, or JWK JSON) for alg; kid: the given one, the JWK's, or the
    RFC 7638 thumbprint."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read private key {path}: {exc.strerror}") from None
    jwk_kid: str | None = None
    try:
        if data.lstrip().startswith(b"{"):
            document = json.loads(data)
            if not isinstance(document, dict):
                raise SigningKeyError(f"{path}: a JWK file holds one JSON object")
            jwk_kid = document.get("kid") if isinstance(document.get("kid"), str) else None
            key = _import(document, alg)
        else:
            key = _import(data, alg)
    except SigningKeyError:
        raise
    except (JoseError, ValueError, TypeError):
        # The library's message could quote the input: say only what kind of thing failed.
        raise SigningKeyError(f"{path}: not a private {alg} key in PEM or JWK form") from None
    if not key.is_private:
        raise SigningKeyError(f"{path}: holds a public key; the adapter needs the private key")
    _check_strength(key, alg, path)
    return SigningKey(key, kid or jwk_kid or key.thumbprint(), alg)


def generate_signing_key(alg: SigningAlgorithm, kid: str | None = None) -> SigningKey:
    """A fresh key: RSA 2048 for RS384, P-384 for ES384."""
    key: RSAKey | ECKey = (
        RSAKey.generate_key(2048, private=True)
        if alg == "RS384"
        else ECKey.generate_key("P-384", private=True)
    )
    return SigningKey(key, kid or key.thumbprint(), alg)


def write_signing_key(key: SigningKey, private_path: Path, jwks_path: Path) -> None:
    """The private JWK (mode 0600, never overwritten) and the public JWK Set to register."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private = {**key.key.as_dict(private=True), "kid": key.kid, "alg": key.alg}
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(private, handle)
    jwks_path.parent.mkdir(parents=True, exist_ok=True)
    jwks_path.write_text(json.dumps(key.public_jwks(), indent=2))


def _import(value: bytes | dict[str, Any], alg: SigningAlgorithm) -> RSAKey | ECKey:
    if alg == "RS384":
        return RSAKey.import_key(value)
    return ECKey.import_key(value)


def _check_strength(key: RSAKey | ECKey, alg: SigningAlgorithm, path: Path) -> None:
    if isinstance(key, RSAKey) and key.public_key.key_size < _MIN_RSA_BITS:
        raise SigningKeyError(f"{path}: RS384 needs an RSA key of at least 2048 bits")
    if isinstance(key, ECKey) and key.curve_name != "P-384":
        raise SigningKeyError(f"{path}: ES384 needs a P-384 key, not {key.curve_name}")
