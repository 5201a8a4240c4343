"""C2SP signed-note / tlog-checkpoint: the exact text, the key ID, strict parsing, signature semantics."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sidecar.audit.note import (
    Checkpoint,
    NoteError,
    key_id,
    parse_signed_checkpoint,
    sign_checkpoint,
    verifier_key,
)

ORIGIN = "chartgate.example/audit/sidecar-0"
ROOT = hashlib.sha256(b"root").digest()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_signed_checkpoint_text_is_the_c2sp_format() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign_checkpoint(Checkpoint(ORIGIN, 20852163, ROOT), key)
    body = f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert signed.text.startswith(body + "\n\u2014 " + ORIGIN + " ")
    assert signed.text.endswith("\n")
    sig_line = signed.text[len(body) + 1 :].rstrip("\n")
    blob = base64.b64decode(sig_line.split(" ")[2])
    # The key ID is SHA-256(name || 0x0A || 0x01 || public key)[:4], computed here by hand.
    assert blob[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw(key)).digest()[:4]
    assert blob[:4] == key_id(ORIGIN, key.public_key())
    # The signature covers the note text including its final newline.
    key.public_key().verify(blob[4:], body.encode())
    parsed = parse_signed_checkpoint(signed.text.encode())
    assert parsed.checkpoint == Checkpoint(ORIGIN, 20852163, ROOT)
    assert parsed.signed_by(ORIGIN, key.public_key()) is True


def test_signature_semantics_known_unknown_and_bad() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), key)
    assert signed.signed_by(ORIGIN, other.public_key()) is None  # not a signer: ignored
    # Same text, another root: the known key's signature fails.
    forged = signed.text.replace(
        base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode()
    )
    assert parse_signed_checkpoint(forged).signed_by(ORIGIN, key.public_key()) is False


def test_verifier_key_text() -> None:
    key = Ed25519PrivateKey.generate()
    name, hex_id, encoded = verifier_key(ORIGIN, key.public_key()).split("+", 2)
    assert name == ORIGIN
    assert bytes.fromhex(hex_id) == key_id(ORIGIN, key.public_key())
    assert base64.b64decode(encoded) == b"\x01" + raw(key)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n", "no blank line"),
        (f"{ORIGIN}\n01\nAAAA\n\n\u2014 {ORIGIN} AAAAAAAA\n", "leading zeros"),
        (f"{ORIGIN}\n-1\nAAAA\n\n\u2014 {ORIGIN} AAAAAAAA\n", "decimal"),
        (f"{ORIGIN}\n1\nAAAA\n\n\u2014 {ORIGIN} AAAAAAAA\n", "32 bytes"),
        (f"{ORIGIN}\n1\n!!\n\n\u2014 {ORIGIN} AAAAAAAA\n", "base64"),
        (f"{ORIGIN}\n1\n\n\u2014 {ORIGIN} AAAAAAAA\n", "origin, a tree size and a root"),
        (f"bad origin\n1\nAAAA\n\n\u2014 {ORIGIN} AAAAAAAA\n", "origin"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n\n-- {ORIGIN} AAAAAAAA\n", "em dash"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {ORIGIN} AAAA\n", "key ID"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {ORIGIN} AAAAAAAA", "newline"),
        (f"{ORIGIN}\x00\n1\nAAAA\n\n\u2014 {ORIGIN} AAAAAAAA\n", "control"),
        ("x" * 20000, "at most"),
    ],
)
def test_malformed_notes_are_refused_by_name(text: str, says: str) -> None:
    with pytest.raises(NoteError, match=says):
        parse_signed_checkpoint(text.encode())


def test_non_utf8_note_is_refused() -> None:
    with pytest.raises(NoteError, match="UTF-8"):
        parse_signed_checkpoint(b"\xff\xfe\n\n")
