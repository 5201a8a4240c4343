"""The offline verifier: each kind of tampering is caught and the bad record is named, through
verify_log and through verify_command (what `chartgate audit verify` runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chartgate import keys
from chartgate.canonical import sha256_hex
from sidecar.audit.files import LogFiles
from sidecar.audit.log import AuditLog
from sidecar.audit.records import encode_head, seal, utc_timestamp
from sidecar.audit.verify import VerifyResult, verify_command, verify_log
from tests.audit.helpers import sample_body, write_lines, write_log

COUNT = 6


@pytest.fixture
def log_path(tmp_path: Path, signing_key: keys.SigningKey) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, COUNT)
    # These tests are about the records; the log's own checkpoint (which would add a fault of
    # the whole log for each change) is tested in test_tamper.py.
    LogFiles(path).checkpoint.unlink()
    return path


def check_fails(
    log_path: Path,
    jwks_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    line: int,
    seq: int,
    kind: str,
    faults: int = 1,
) -> VerifyResult:
    """Assert both entry points reject the log, naming `kind` first at `line` (seq `seq`), with
    `faults` faults in all (the verifier reads on past a fault), and return the result."""
    result = verify_log(log_path, keys.load_public_keys(jwks_path))
    assert not result.ok
    assert result.first_bad_line == line, result.problem
    assert result.first_bad_seq == seq, result.problem
    assert result.faults[0].kind == kind, result.faults
    assert result.fault_count == faults, result.faults
    assert result.problem is not None
    assert result.problem.startswith(f"line {line} (")
    # Everything after the fault was still read and checked.
    assert result.lines == len(log_path.read_bytes().splitlines())

    capsys.readouterr()
    assert verify_command(log_path, jwks_path, quiet_progress=True) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAILED at line {line} (")
    assert f"seq {seq}) [{kind}]" in out.splitlines()[0]
    assert f"FAILED: {faults} fault(s) in {result.lines} line(s)" in out
    return result


def test_clean_log_passes(
    log_path: Path,
    jwks_path: Path,
    signing_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = verify_log(log_path, keys.load_public_keys(jwks_path))
    assert result.ok
    assert result.records == COUNT
    assert result.first_bad_line is None
    assert result.first_bad_seq is None
    assert result.problem is None
    assert result.kids == (signing_key.kid,)
    assert result.head_seq == COUNT - 1

    assert verify_command(log_path, jwks_path) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"OK: {COUNT} records verified, chain intact, signatures by kid(s) {signing_key.kid}"
    )
    assert f"head seq {COUNT - 1} sha256 {result.head_sha256}" in out


def test_empty_log_passes(
    tmp_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = verify_log(path, keys.load_public_keys(jwks_path))
    assert result.ok
    assert result.records == 0
    assert verify_command(path, jwks_path) == 0
    assert capsys.readouterr().out.startswith("OK: 0 records verified")


def test_byte_changed_in_body(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    value = json.loads(lines[2])
    digest = value["body"]["payload_sha256"]
    changed = digest[:10] + ("0" if digest[10] != "0" else "1") + digest[11:]
    lines[2] = lines[2].replace(digest.encode(), changed.encode())
    write_lines(log_path, lines)
    check_fails(log_path, jwks_path, capsys, line=3, seq=2, kind="bad-signature")


def test_byte_changed_in_sig(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    sig = json.loads(lines[3])["sig"]
    changed = ("B" if sig[20] != "B" else "C").join([sig[:20], sig[21:]])
    lines[3] = lines[3].replace(sig.encode(), changed.encode())
    write_lines(log_path, lines)
    check_fails(log_path, jwks_path, capsys, line=4, seq=3, kind="bad-signature")


def test_sig_with_altered_unused_low_bits_is_caught(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The last of 86 base64url characters carries 2 data bits and 4 unused ones. Changing only
    # the unused bits decodes to the same signature; the verifier must still name this record
    # (otherwise only the next record's chain link would notice, naming the wrong record).
    lines = log_path.read_bytes().splitlines()
    sig = json.loads(lines[1])["sig"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    changed = sig[:-1] + alphabet[last ^ 0b0001]
    lines[1] = lines[1].replace(sig.encode(), changed.encode())
    write_lines(log_path, lines)
    check_fails(log_path, jwks_path, capsys, line=2, seq=1, kind="bad-field")


def test_every_single_byte_change_names_the_edited_record(log_path: Path, jwks_path: Path) -> None:
    lines = log_path.read_bytes().splitlines()
    public = keys.load_public_keys(jwks_path)
    target = 2
    original = lines[target]
    for position in range(len(original)):
        edited = bytearray(original)
        edited[position] ^= 0x01
        write_lines(log_path, [*lines[:target], bytes(edited), *lines[target + 1 :]])
        result = verify_log(log_path, public)
        assert not result.ok, position
        assert result.first_bad_line == target + 1, (position, result.problem)


def test_record_deleted(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    del lines[2]
    write_lines(log_path, lines)
    # Names the record after the gap: it now sits at line 3 and carries seq 3.
    check_fails(log_path, jwks_path, capsys, line=3, seq=3, kind="seq-gap")


def test_first_record_deleted(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    write_lines(log_path, lines[1:])
    check_fails(log_path, jwks_path, capsys, line=1, seq=1, kind="seq-gap")


def test_records_swapped(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(log_path, lines)
    check_fails(log_path, jwks_path, capsys, line=3, seq=3, kind="seq-gap", faults=2)


def test_record_inserted_from_another_log(
    tmp_path: Path,
    log_path: Path,
    jwks_path: Path,
    signing_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A genuine record, signed by the right key, with the seq that fits at line 3, but from
    # another chain: only the chain link gives it away.
    stranger = write_log(tmp_path / "other.jsonl", signing_key, 3)[2]
    lines = log_path.read_bytes().splitlines()
    write_lines(log_path, [*lines[:2], stranger, *lines[3:]])
    check_fails(log_path, jwks_path, capsys, line=3, seq=2, kind="broken-link")


def test_record_inserted_with_extra_seq(
    tmp_path: Path,
    log_path: Path,
    jwks_path: Path,
    signing_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Inserted between two records, so its seq repeats one already used.
    stranger = write_log(tmp_path / "other.jsonl", signing_key, 2)[1]
    lines = log_path.read_bytes().splitlines()
    write_lines(log_path, [*lines[:4], stranger, *lines[4:]])
    check_fails(log_path, jwks_path, capsys, line=5, seq=1, kind="seq-back")


def test_record_forged_in_chain_with_the_key_breaks_the_next_link(
    log_path: Path,
    jwks_path: Path,
    signing_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Someone holding the private key forges a record that links correctly to line 2 and carries
    # the next seq. It verifies itself; the original record after it no longer does.
    lines = log_path.read_bytes().splitlines()
    previous = json.loads(lines[1])
    body, head = encode_head({"proposal_id": "forged"}, signing_key.kid, "policy.decision")
    forged = seal(
        head,
        body=body,
        kind="policy.decision",
        kid=signing_key.kid,
        prev=sha256_hex(lines[1]),
        seq=previous["seq"] + 1,
        ts=utc_timestamp(),
        key=signing_key.private_key,
    )
    write_lines(log_path, [*lines[:2], forged.line, *lines[2:]])
    check_fails(log_path, jwks_path, capsys, line=4, seq=2, kind="seq-back")


def test_record_signed_by_unknown_key(
    tmp_path: Path,
    log_path: Path,
    jwks_path: Path,
    other_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The log continues under a key the auditor was not given: the writer's record of the
    # switch (audit.key_rotated) and the record after it are both signed by it.
    with AuditLog(log_path, other_key) as log:
        log.append("policy.decision", sample_body(COUNT))
    LogFiles(log_path).checkpoint.unlink()
    result = check_fails(
        log_path, jwks_path, capsys, line=COUNT + 1, seq=COUNT, kind="unknown-key", faults=2
    )
    assert other_key.kid in (result.problem or "")
    assert [f.kind for f in result.faults] == ["unknown-key", "unknown-key"]


def test_torn_last_line(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    with log_path.open("ab") as handle:
        handle.write(lines[0][:50])
    # The torn record cannot be read, so it is named by the seq the chain expected there.
    result = check_fails(log_path, jwks_path, capsys, line=COUNT + 1, seq=COUNT, kind="torn")
    assert "expected seq" in (result.problem or "")


def test_not_canonical(log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = log_path.read_bytes().splitlines()
    lines[4] = json.dumps(json.loads(lines[4])).encode()  # same values, spaces after separators
    write_lines(log_path, lines)
    check_fails(log_path, jwks_path, capsys, line=5, seq=4, kind="not-canonical")


def test_unparseable_line(
    log_path: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines()
    lines[1] = b"{garbage"
    write_lines(log_path, lines)
    check_fails(log_path, jwks_path, capsys, line=2, seq=1, kind="unparseable")


def test_cut_tail_is_not_detectable_without_a_kept_head(log_path: Path, jwks_path: Path) -> None:
    # Whole records removed from the end leave a valid, shorter log. What tells an auditor is
    # the head from an earlier check (and, later, signed checkpoints).
    public = keys.load_public_keys(jwks_path)
    before = verify_log(log_path, public)
    lines = log_path.read_bytes().splitlines()
    write_lines(log_path, lines[:-2])
    after = verify_log(log_path, public)
    assert after.ok
    assert after.head_seq == COUNT - 3
    assert (after.head_seq, after.head_sha256) != (before.head_seq, before.head_sha256)


def test_cli_unreadable_key_file(
    tmp_path: Path, log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify_command(log_path, tmp_path / "missing.jwks.json") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot load public key(s)" in captured.err

    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "!!"}]}')
    assert verify_command(log_path, garbage) == 2
    assert "cannot load public key(s)" in capsys.readouterr().err


def test_cli_single_jwk_file_and_missing_log(
    tmp_path: Path,
    log_path: Path,
    signing_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    single = tmp_path / "audit.pub.jwk"
    single.write_text(json.dumps(signing_key.public_jwk()))
    assert verify_command(log_path, single) == 0
    assert capsys.readouterr().out.startswith(f"OK: {COUNT} records verified")

    assert verify_command(tmp_path / "nope.jsonl", single) == 2
    assert "cannot read audit log" in capsys.readouterr().err


def test_parallel_verification_finds_what_sequential_does(
    tmp_path: Path, signing_key: keys.SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.audit import verify as verify_module
    from sidecar.audit.keyring import Keyring
    from sidecar.audit.verify import CHUNK_LINES, VerifyOptions

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        for n in range(2 * CHUNK_LINES + 500):
            log.append("policy.decision", sample_body(n), durable=False)
    ring = Keyring.load(LogFiles(path).keyring)
    lines = path.read_bytes().splitlines()
    lines[100] = lines[100].replace(b"prop-", b"prox-")  # an edit
    del lines[CHUNK_LINES]  # a deletion right at a chunk boundary
    lines.insert(CHUNK_LINES + 300, lines[CHUNK_LINES + 299])  # a duplicate
    write_lines(path, lines)
    LogFiles(path).checkpoint.unlink()
    messages: list[str] = []
    monkeypatch.setattr(verify_module, "_PROGRESS_SECONDS", 0.0)
    sequential = verify_log(path, ring, VerifyOptions(jobs=1, progress=messages.append))
    parallel = verify_log(path, ring, VerifyOptions(jobs=2))
    expected = [
        (101, "bad-signature"),
        (CHUNK_LINES + 1, "seq-gap"),
        (CHUNK_LINES + 301, "duplicate"),
    ]
    assert [(f.line, f.kind) for f in sequential.faults] == expected
    assert [(f.line, f.kind) for f in parallel.faults] == expected
    assert parallel.records == sequential.records == len(lines) - 3
    assert parallel.root == sequential.root
    assert any("verified" in m for m in messages)  # progress on a long log
