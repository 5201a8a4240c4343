"""C2SP signed-note (c2sp.org/signed-note, Ed25519) holding a C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint).

A checkpoint commits to the log's Merkle tree (RFC 9162) at a size:

    <origin>\\n<tree size, decimal>\\n<root hash, standard base64 (RFC 4648 §4)>\\n

A signed note is that text, a blank line, then one line per signature:

    \\u2014 <key name> <base64(key ID (4 bytes) || Ed25519 signature (64 bytes))>\\n

The signature covers the note text including its final newline. The key ID is the first four
bytes of SHA-256(key name || 0x0A || 0x01 || public key) (0x01: the Ed25519 signature type). The
key name of a log's checkpoints is its origin. A verifier ignores signatures by keys it does not
know, and refuses a note whose known key's signature fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sidecar.audit.merkle import HASH_SIZE

ED25519_TYPE = b"\x01"
SIG_PREFIX = "\u2014 "
# Bounds on what a verifier reads: a checkpoint is a few hundred bytes; anything far larger is
# not one (and must not cost memory), and Go's note package caps signatures at 100.
MAX_NOTE_BYTES = 16 * 1024
MAX_SIGNATURES = 100
_MAX_SIZE = 2**63 - 1

# A key name (and an origin) is non-empty, without Unicode spaces or '+' (c2sp.org/signed-note).
_NAME_RE = re.compile(r"[^\s+]+")
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteError(ValueError):
    """A note or checkpoint is malformed, or its signature does not verify."""


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_name(name: str) -> str:
    """Key names and origins: non-empty, no whitespace, no '+', printable."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not name.isprintable():
        raise NoteError(f"{name!r} is not a valid note key name or origin (no spaces, no '+')")
    return name


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID of an Ed25519 note key (c2sp.org/signed-note)."""
    material = name.encode("utf-8") + b"\n" + ED25519_TYPE + raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key text `<name>+<hex key ID>+<base64(0x01 || public key)>`, as Go's
    note package and witnesses take it."""
    encoded = base64.b64encode(ED25519_TYPE + raw_public_key(public_key)).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: its origin, how many leaves (records), and their RFC 9162 root."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The tlog-checkpoint note text (no extension lines)."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"

    @property
    def root_hex(self) -> str:
        return self.root.hex()


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with its signed-note text, exactly as published (what an auditor holds)."""

    checkpoint: Checkpoint
    text: str
    signatures: tuple[NoteSignature, ...]

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    def signed_by(self, name: str, public_key: Ed25519PublicKey) -> bool | None:
        """True when a signature line by this key verifies, False when one by this key (name
        and key ID) fails, None when the key did not sign (c2sp.org/signed-note semantics)."""
        wanted = key_id(name, public_key)
        for sig in self.signatures:
            if sig.name == name and sig.key_id == wanted:
                try:
                    public_key.verify(sig.signature, self.checkpoint.body().encode("utf-8"))
                except InvalidSignature:
                    return False
                return True
        return None


def sign_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> SignedCheckpoint:
    """Sign a checkpoint as a note whose key name is the origin."""
    check_name(checkpoint.origin)
    body = checkpoint.body()
    signature = key.sign(body.encode("utf-8"))
    kid = key_id(checkpoint.origin, key.public_key())
    line = base64.b64encode(kid + signature).decode("ascii")
    text = f"{body}\n{SIG_PREFIX}{checkpoint.origin} {line}\n"
    return SignedCheckpoint(
        checkpoint=checkpoint,
        text=text,
        signatures=(NoteSignature(checkpoint.origin, kid, signature),),
    )


def parse_signed_checkpoint(data: bytes | str) -> SignedCheckpoint:
    """Parse a signed note holding a tlog-checkpoint, strictly; signatures are parsed, not
    verified (see SignedCheckpoint.signed_by). Raises NoteError naming what is wrong."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteError(f"a checkpoint note is at most {MAX_NOTE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError(f"a note is UTF-8 text ({exc})") from None
    else:
        text = data
        if len(text.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
            raise NoteError(f"a checkpoint note is at most {MAX_NOTE_BYTES} bytes")
    if any(c < " " and c != "\n" for c in text) or "\x7f" in text:
        raise NoteError("a note holds no control characters other than newline")
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteError("no blank line between the note text and its signatures")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block.endswith("\n"):
        raise NoteError("the last signature line does not end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signature lines")
    signatures = tuple(_parse_signature_line(line) for line in lines)
    return SignedCheckpoint(
        checkpoint=parse_checkpoint_body(body), text=text, signatures=signatures
    )


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIG_PREFIX):
        raise NoteError("a signature line starts with an em dash (U+2014) and a space")
    parts = line[len(SIG_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise NoteError("a signature line is '\u2014 <name> <base64 signature>'")
    name, encoded = parts
    check_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("a note signature is not standard base64") from None
    if len(raw) < 5:
        raise NoteError("a note signature is shorter than its key ID")
    return NoteSignature(name=name, key_id=raw[:4], signature=raw[4:])


def parse_checkpoint_body(body: str) -> Checkpoint:
    """The origin, size and root of a tlog-checkpoint note text (extension lines allowed and
    ignored, as c2sp.org/tlog-checkpoint says)."""
    if not body.endswith("\n"):
        raise NoteError("the checkpoint text does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a tree size and a root hash line")
    origin, size_text, root_text = lines[:3]
    check_name(origin)
    if not _DECIMAL_RE.fullmatch(size_text) or int(size_text) > _MAX_SIZE:
        raise NoteError(f"tree size {size_text[:30]!r} is not a decimal without leading zeros")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("the root hash is not standard base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_text:
        raise NoteError("the root hash is not the base64 of 32 bytes")
    if any(not line for line in lines[3:]):
        raise NoteError("an empty extension line")
    return Checkpoint(origin=origin, size=int(size_text), root=root)
