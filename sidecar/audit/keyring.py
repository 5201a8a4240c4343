"""Audit keyring: Ed25519 JWKs (RFC 8037) with RFC 7638 thumbprint kids, a role, a log (origin) and a validity window.

A keyring file is a JWKS (RFC 7517 §5) whose keys carry three more members:

    {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "...", "kid": "audit-<thumbprint[:16]>",
               "role": "audit", "origin": "chartgate.local/audit/3f9c...",
               "not_before": "2026-01-31T09:30:00.000000Z", "retired_at": "2026-03-01T00:00:00.000000Z"}]}

* `kid` must be derived from the key: the full RFC 7638 SHA-256 thumbprint, or `<prefix>-<t>`
  where t is at least its first 16 characters. A key file that pairs a genuine kid with another
  key is refused on load, so a substituted key cannot pass for the real one.
* `role` is what the key may sign; audit records and checkpoints need `audit`.
* `origin` (optional) binds the key to one log: it may sign that log and no other.
* A record verifies only under a key whose window holds its `ts`: not_before <= ts <= retired_at
  (either bound may be absent).
Duplicate kids, and two entries for one key, are refused: "last one wins" would let a second
entry override the first.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sidecar.audit.note import check_name, key_id
from sidecar.audit.records import (
    b64url_decode,
    b64url_encode,
    json_nesting_exceeds,
    utc_timestamp,
)
from sidecar.validation.strict_json import loads_strict

AUDIT_ROLE = "audit"
ROLES = frozenset({"audit", "token", "review"})
MAX_KEYRING_BYTES = 1024 * 1024
MAX_KEYS = 4096
_MAX_DEPTH = 8
_THUMBPRINT_MIN = 16
_PUBLIC_MEMBERS = frozenset({"kty", "crv", "x", "kid", "alg", "use", "key_ops"})
_EXTRA_MEMBERS = frozenset({"role", "origin", "not_before", "retired_at"})


class KeyringError(ValueError):
    """A keyring (or key file) cannot be used: unreadable, malformed, or a key is not what its
    entry claims. The message names the entry."""


def thumbprint(x: str, crv: str = "Ed25519") -> str:
    """RFC 7638 §3 SHA-256 thumbprint of an OKP public key (members crv, kty, x; RFC 8037 §2),
    base64url without padding."""
    members = json.dumps({"crv": crv, "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(members.encode("ascii")).digest())


def kid_matches(kid: str, print_: str) -> bool:
    """Whether `kid` is derived from the key with this thumbprint: the thumbprint itself, or a
    prefix, a '-', and at least the thumbprint's first 16 characters."""
    if kid == print_:
        return True
    # The thumbprint may itself contain '-', so try every split point.
    start = kid.find("-")
    while start >= 0:
        tail = kid[start + 1 :]
        if len(tail) >= _THUMBPRINT_MIN and print_.startswith(tail):
            return True
        start = kid.find("-", start + 1)
    return False


def normalize_time(value: Any, what: str) -> str | None:
    """An RFC 3339 time as the record timestamp form (UTC, microseconds), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise KeyringError(f"{what} must be an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KeyringError(f"{what} {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise KeyringError(f"{what} {value!r} has no time zone")
    return utc_timestamp(moment.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One public key of a keyring, checked: its kid is derived from it."""

    kid: str
    x: str
    thumbprint: str
    public_key: Ed25519PublicKey = field(compare=False, repr=False)
    role: str = AUDIT_ROLE
    origin: str | None = None
    not_before: str | None = None
    retired_at: str | None = None

    def covers(self, ts: str) -> bool:
        """Whether a record dated `ts` (record timestamp form) is inside this key's window."""
        if self.not_before is not None and ts < self.not_before:
            return False
        return not (self.retired_at is not None and ts > self.retired_at)

    def window(self) -> str:
        return f"{self.not_before or '-inf'} .. {self.retired_at or 'now'}"

    def note_key_id(self, origin: str) -> bytes:
        return key_id(origin, self.public_key)

    def to_json(self) -> dict[str, str]:
        data = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
            "role": self.role,
        }
        for name in ("origin", "not_before", "retired_at"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    def describe(self) -> str:
        bound = f", log {self.origin}" if self.origin else ""
        return (
            f"{self.kid} (RFC 7638 thumbprint {self.thumbprint}, role {self.role}{bound}, "
            f"valid {self.window()})"
        )


def entry_from_public_key(
    public_key: Ed25519PublicKey,
    kid: str,
    *,
    role: str = AUDIT_ROLE,
    origin: str | None = None,
    not_before: str | None = None,
    retired_at: str | None = None,
) -> KeyEntry:
    from sidecar.audit.note import raw_public_key

    x = b64url_encode(raw_public_key(public_key))
    print_ = thumbprint(x)
    if not kid_matches(kid, print_):
        raise KeyringError(f"kid {kid!r} is not derived from its key (thumbprint {print_})")
    return KeyEntry(
        kid=kid,
        x=x,
        thumbprint=print_,
        public_key=public_key,
        role=role,
        origin=origin,
        not_before=not_before,
        retired_at=retired_at,
    )


def parse_entry(data: Any, where: str, *, legacy: bool = False) -> KeyEntry:
    """Check one JWK of a keyring. `legacy` accepts a plain JWKS entry (no role or window:
    an audit key valid at any time), as `chartgate keys init` writes."""
    if not isinstance(data, dict):
        raise KeyringError(f"{where} is not a JSON object")
    if "d" in data:
        raise KeyringError(f"{where} holds a private key ('d'); a keyring holds public keys only")
    unknown = set(data) - _PUBLIC_MEMBERS - _EXTRA_MEMBERS
    if unknown:
        raise KeyringError(f"{where} has unknown members: {', '.join(sorted(unknown))[:200]}")
    if data.get("kty") != "OKP" or data.get("crv") != "Ed25519":
        raise KeyringError(f"{where} is not an Ed25519 key (kty OKP, crv Ed25519)")
    x, kid = data.get("x"), data.get("kid")
    if not isinstance(x, str) or not isinstance(kid, str) or not kid or len(kid) > 256:
        raise KeyringError(f"{where} needs string members x and kid")
    if not kid.isprintable():
        raise KeyringError(f"{where}: kid has control characters")
    try:
        raw = b64url_decode(x)
    except ValueError:
        raise KeyringError(f"{where} ({kid}): x is not base64url") from None
    if len(raw) != 32:
        raise KeyringError(f"{where} ({kid}): x is not a 32-byte Ed25519 public key")
    try:
        public_key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyringError(f"{where} ({kid}): {exc}") from None
    print_ = thumbprint(x)
    if not kid_matches(kid, print_):
        raise KeyringError(
            f"{where}: kid {kid!r} is not derived from this key (its RFC 7638 thumbprint is "
            f"{print_}): a key file pairing a kid with another key is refused"
        )
    role = data.get("role", AUDIT_ROLE if legacy else None)
    if role not in ROLES:
        raise KeyringError(f"{where} ({kid}): role {role!r} is not one of {sorted(ROLES)}")
    origin = data.get("origin")
    if origin is not None:
        try:
            check_name(origin)
        except ValueError:
            raise KeyringError(f"{where} ({kid}): origin {origin!r} is not a log name") from None
    not_before = normalize_time(data.get("not_before"), f"{where} ({kid}) not_before")
    retired_at = normalize_time(data.get("retired_at"), f"{where} ({kid}) retired_at")
    if not_before and retired_at and retired_at < not_before:
        raise KeyringError(f"{where} ({kid}): retired_at is before not_before")
    return KeyEntry(
        kid=kid,
        x=x,
        thumbprint=print_,
        public_key=public_key,
        role=role,
        origin=origin,
        not_before=not_before,
        retired_at=retired_at,
    )


@dataclass(frozen=True)
class Keyring:
    """Keys by kid. Build with Keyring.of (refuses duplicates) or Keyring.load."""

    keys: Mapping[str, KeyEntry]
    source: str = ""

    @classmethod
    def of(cls, entries: Iterable[KeyEntry], source: str = "") -> Keyring:
        keys: dict[str, KeyEntry] = {}
        prints: dict[str, str] = {}
        for entry in entries:
            if entry.kid in keys:
                raise KeyringError(f"duplicate kid {entry.kid!r}: a keyring names each key once")
            if entry.thumbprint in prints:
                raise KeyringError(
                    f"one key appears twice, as {prints[entry.thumbprint]!r} and {entry.kid!r}"
                )
            if len(keys) >= MAX_KEYS:
                raise KeyringError(f"more than {MAX_KEYS} keys")
            keys[entry.kid] = entry
            prints[entry.thumbprint] = entry.kid
        return cls(keys=keys, source=source)

    @classmethod
    def load(cls, path: Path, *, legacy: bool | None = None) -> Keyring:
        """Read a keyring, a JWKS or a single JWK, bounded (size, nesting) and checked. Plain
        JWKS entries (no role member) are taken as audit keys valid at any time."""
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_KEYRING_BYTES + 1)
        except OSError as exc:
            raise KeyringError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_KEYRING_BYTES:
            raise KeyringError(f"{path} is larger than {MAX_KEYRING_BYTES} bytes")
        return cls.parse(data, str(path), legacy=legacy)

    @classmethod
    def parse(cls, data: bytes, source: str, *, legacy: bool | None = None) -> Keyring:
        if json_nesting_exceeds(data, _MAX_DEPTH):
            raise KeyringError(f"{source}: JSON nested deeper than {_MAX_DEPTH} levels")
        try:
            # A member named twice (a second `keys`, a second `kid`) is refused, not last-wins.
            value = loads_strict(data)
        except ValueError as exc:
            raise KeyringError(f"{source} is not JSON: {str(exc)[:200]}") from None
        if isinstance(value, dict) and "keys" in value:
            extra = set(value) - {"keys"}
            if extra:
                raise KeyringError(f"{source}: unknown top-level members {sorted(extra)[:5]}")
            entries = value["keys"]
            if not isinstance(entries, list):
                raise KeyringError(f"{source}: 'keys' is not a list")
        else:
            entries = [value]
        if not entries:
            raise KeyringError(f"{source} holds no keys")
        if len(entries) > MAX_KEYS:
            raise KeyringError(f"{source} holds more than {MAX_KEYS} keys")
        parsed = []
        for index, entry in enumerate(entries):
            plain = (
                legacy if legacy is not None else (isinstance(entry, dict) and "role" not in entry)
            )
            parsed.append(parse_entry(entry, f"{source} key {index}", legacy=plain))
        return cls.of(parsed, source)

    def get(self, kid: str) -> KeyEntry | None:
        return self.keys.get(kid)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Any:
        return iter(self.keys.values())

    def audit_keys(self) -> list[KeyEntry]:
        return [k for k in self.keys.values() if k.role == AUDIT_ROLE]

    def for_origin(self, origin: str) -> list[KeyEntry]:
        """Audit keys that may sign the log `origin` (bound to it, or to no log)."""
        return [k for k in self.audit_keys() if k.origin in (None, origin)]

    def origins(self) -> set[str]:
        return {k.origin for k in self.keys.values() if k.origin}

    def with_entry(self, entry: KeyEntry) -> Keyring:
        """This keyring with `entry` added, or replacing the entry of the same kid and key."""
        current = self.keys.get(entry.kid)
        if current is not None and current.thumbprint != entry.thumbprint:
            raise KeyringError(f"kid {entry.kid!r} already names another key")
        keys = {k: v for k, v in self.keys.items() if k != entry.kid}
        return Keyring.of([*keys.values(), entry], self.source)

    def retire(self, kid: str, at: str) -> Keyring:
        entry = self.keys[kid]
        if entry.retired_at is not None and entry.retired_at <= at:
            return self
        return self.with_entry(replace(entry, retired_at=at))

    def to_json(self) -> dict[str, Any]:
        return {"keys": [k.to_json() for k in self.keys.values()]}

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file renamed over the old one, both fsynced), so a
        crash leaves the old keyring or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        sync_directory(path.parent)


def merge(keyrings: Iterable[Keyring]) -> Keyring:
    """One keyring of several (e.g. every writer's): duplicate kids are refused, not merged."""
    entries: list[KeyEntry] = []
    for ring in keyrings:
        entries.extend(ring.keys.values())
    return Keyring.of(entries, "merged")


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
