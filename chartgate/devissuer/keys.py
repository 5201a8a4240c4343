"""The dev issuer's ES256 signing key (RFC 7518 §3.4) kept in a directory, and its public JWKS (RFC 7517 §5)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Final, cast

from joserfc.jwk import ECKey, KeySet, KeySetSerialization

ALGORITHM: Final = "ES256"
PRIVATE_KEY_FILE: Final = "signing-key.jwk"
JWKS_FILE: Final = "jwks.json"
# Public keys kept in the JWKS after a rotation, the current one included: tokens signed just
# before a rotation stay verifiable until they expire.
KEEP_PUBLIC_KEYS: Final = 3


class IssuerKeys:
    """The current private key (file mode 0600) and the JWKS publishing it and its predecessors.

    Files are the source of truth: another process (the `token` command, a test) may rotate the
    key while a server runs, and the server picks the change up on its next use.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.private_path = directory / PRIVATE_KEY_FILE
        self.jwks_path = directory / JWKS_FILE
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], ECKey] | None = None
        self._ensure()

    @property
    def kid(self) -> str:
        return str(self.signing_key().kid)

    def signing_key(self) -> ECKey:
        """The current private key, re-read when its file changed."""
        with self._lock:
            stat = self.private_path.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino)
            if self._cached is None or self._cached[0] != stamp:
                self._cached = (stamp, _load_private(self.private_path))
            return self._cached[1]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document as stored."""
        data: dict[str, Any] = json.loads(self.jwks_path.read_text())
        return data

    def public_keyset(self) -> KeySet:
        """The published public keys as a joserfc KeySet, to verify what this issuer signed."""
        return KeySet.import_key_set(cast(KeySetSerialization, self.jwks()))

    def rotate(self) -> str:
        """Make a new current key; the JWKS gains it (first, so no token names an unpublished kid)."""
        key = _generate()
        previous = [k for k in self.jwks().get("keys", []) if k.get("kid") != key.kid]
        self._write_jwks([_public(key), *previous][:KEEP_PUBLIC_KEYS])
        _write_private(self.private_path, key, replace=True)
        return str(key.kid)

    def _ensure(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.private_path.exists():
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                _write_private(self.private_path, _generate(), replace=False)
        key = _load_private(self.private_path)
        published = self.jwks().get("keys", []) if self.jwks_path.exists() else []
        if not any(k.get("kid") == key.kid for k in published):
            # First use, or a crash between the two writes: publish the current key.
            self._write_jwks([_public(key), *published][:KEEP_PUBLIC_KEYS])

    def _write_jwks(self, keys: list[dict[str, Any]]) -> None:
        _atomic_write(self.jwks_path, json.dumps({"keys": keys}, indent=2).encode(), 0o644)


def _generate() -> ECKey:
    raw = ECKey.generate_key("P-256", private=True)
    # kid from the RFC 7638 thumbprint: stable for the key, unique across rotations. alg and use
    # in the JWK make joserfc refuse the key for any other algorithm or purpose.
    kid = f"dev-{raw.thumbprint()[:16]}"
    return ECKey.import_key(
        {**raw.as_dict(private=True), "kid": kid, "alg": ALGORITHM, "use": "sig"}
    )


def _public(key: ECKey) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def _load_private(path: Path) -> ECKey:
    data = json.loads(path.read_text())
    key = ECKey.import_key(data)
    if not key.is_private or data.get("crv") != "P-256" or not isinstance(data.get("kid"), str):
        raise ValueError(f"{path} is not a private P-256 JWK with a kid")
    return key


def _write_private(path: Path, key: ECKey, *, replace: bool) -> None:
    body = json.dumps(key.as_dict(private=True)).encode()
    if replace:
        _atomic_write(path, body, 0o600)
        return
    # Link a complete temporary file into place: atomic, and fails if the name exists, so two
    # processes starting at once agree on one key and neither reads a half-written file.
    tmp = _temp_file(path, body, 0o600)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()


def _atomic_write(path: Path, body: bytes, mode: int) -> None:
    os.replace(_temp_file(path, body, mode), path)


def _temp_file(path: Path, body: bytes, mode: int) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; the public JWKS is world-readable
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)
