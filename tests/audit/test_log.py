"""AuditLog: record format, chaining, reopen, refusing bad bodies and torn tails, group commit."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from chartgate import keys
from chartgate.canonical import sha256_hex
from sidecar.audit.files import LogFiles
from sidecar.audit.keyring import Keyring
from sidecar.audit.log import AuditLog, AuditLogCorrupt, AuditLogUnavailable
from sidecar.audit.records import GENESIS_PREV, b64url_decode, parse_line
from sidecar.audit.verify import verify_log
from tests.audit.helpers import sample_body, write_log


def test_records_are_canonical_chained_and_signed(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        records = [log.append("proposal.received", sample_body(n)) for n in range(3)]

    lines = path.read_bytes().splitlines()
    assert [r.line for r in records] == lines
    assert [r.seq for r in records] == [0, 1, 2]
    assert records[0].prev == GENESIS_PREV
    assert records[1].prev == sha256_hex(lines[0])
    assert records[2].prev == sha256_hex(lines[1])
    public = keys.load_public_keys(jwks_path)[signing_key.kid]
    for record, line in zip(records, lines, strict=True):
        value = json.loads(line)
        assert set(value) == {"v", "seq", "ts", "kind", "prev", "kid", "body", "sig"}
        assert value["v"] == 1
        assert value["kid"] == signing_key.kid
        assert value["body"] == record.body
        # The line is exactly what the RFC 8785 library makes of it, and the signature covers the
        # canonical form without `sig`, computed here independently of sidecar.audit.records.
        assert rfc8785.dumps(value) == line
        unsigned = rfc8785.dumps({k: v for k, v in value.items() if k != "sig"})
        public.verify(b64url_decode(value["sig"]), unsigned)
        assert value["ts"].endswith("Z")
        assert len(value["ts"]) == len("2025-01-31T09:30:00.123456Z")


def test_awkward_json_values_are_still_canonical(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    body: dict[str, Any] = {
        'quote"back\\slash': "tab\tnewline\ncontrol\u0001",
        "unicode": "Zoë 患者 \U0001f600",
        "floats": [0.1, 1.0, -0.0, 1e21, 1e-7, 123456789.125],
        "ints": [0, -1, 2**53 - 1],
        "nested": {"b": [None, True, False], "a": {}},
        "\u00e9": 1,
        "e": 2,
    }
    with AuditLog(tmp_path / "audit.jsonl", signing_key) as log:
        record = log.append("write.outcome", body)
    value = json.loads(record.line)
    assert rfc8785.dumps(value) == record.line
    assert parse_line(record.line).body == value["body"]


def test_reopen_continues_seq_and_chain(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 3)
    with AuditLog(path, signing_key) as log:
        record = log.append("token.minted", {"proposal_id": "prop-9", "jti": "j-1"})
    assert record.seq == 3
    assert record.prev == sha256_hex(lines[-1])
    result = verify_log(path, keys.load_public_keys(jwks_path))
    assert result.ok, result.problem
    assert result.records == 4


def test_reopen_with_a_rotated_key_records_the_switch_and_continues_the_chain(
    tmp_path: Path, signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, 2)
    with AuditLog(path, other_key) as log:
        assert log.append("proposal.received", sample_body(7)).seq == 3
    rotation = json.loads(path.read_bytes().splitlines()[2])
    assert rotation["kind"] == "audit.key_rotated"
    assert rotation["kid"] == other_key.kid
    assert rotation["body"]["from_kid"] == signing_key.kid
    assert rotation["body"]["to_kid"] == other_key.kid
    # The log's keyring retired the old key at the switch and holds both.
    ring = Keyring.load(LogFiles(path).keyring)
    assert ring.keys[signing_key.kid].retired_at == rotation["ts"]
    assert ring.keys[other_key.kid].not_before is not None
    result = verify_log(path, ring)
    assert result.ok, result.problem
    assert result.kids == (signing_key.kid, other_key.kid)
    # A plain JWKS of both keys (no windows) verifies it too.
    both = tmp_path / "both.jwks.json"
    keys.write_jwks(both, [signing_key, other_key])
    assert verify_log(path, keys.load_public_keys(both)).ok


def test_new_log_file_is_private_and_its_directory_is_created(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "deep" / "audit" / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        log.append("proposal.received", sample_body(0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class _Opaque:
    pass


@pytest.mark.parametrize(
    "body",
    [
        {"note": b"raw bytes"},
        {"ids": ("a", "b")},
        {"ids": {"a", "b"}},
        {"obj": _Opaque()},
        {"nested": {"deeper": [1, b"x"]}},
        {"nested": {1: "int key"}},
        {"score": float("nan")},
        {"score": float("inf")},
        {"text": "x" * 5000},
    ],
)
def test_append_refuses_non_json_and_long_text(
    tmp_path: Path, signing_key: keys.SigningKey, body: dict[str, Any]
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        with pytest.raises(ValueError, match="body"):
            log.append("proposal.received", body)
        # Nothing was written and the chain is untouched: the next record is still seq 0.
        assert path.read_bytes() == b""
        assert log.append("proposal.received", sample_body(0)).seq == 0


def test_append_refuses_a_body_that_is_not_a_mapping(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    with (
        AuditLog(tmp_path / "audit.jsonl", signing_key) as log,
        pytest.raises(ValueError, match="mapping"),
    ):
        log.append("proposal.received", ["not", "a", "dict"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["", "Policy.Decision", "policy decision", "x" * 65, ".a"])
def test_append_refuses_bad_kinds(tmp_path: Path, signing_key: keys.SigningKey, kind: str) -> None:
    with (
        AuditLog(tmp_path / "audit.jsonl", signing_key) as log,
        pytest.raises(ValueError, match="kind"),
    ):
        log.append(kind, {"proposal_id": "p"})


def test_torn_last_line_is_cut_kept_and_recorded(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 3)
    good_size = path.stat().st_size
    torn = lines[1][:40]
    with path.open("ab") as handle:
        handle.write(torn)  # a record cut off mid-write, no newline
    with AuditLog(path, signing_key) as log:
        assert log.append("write.outcome", sample_body(3)).seq == 4
    after = path.read_bytes().splitlines()
    assert after[:3] == lines
    recovered = json.loads(after[3])
    assert recovered["kind"] == "audit.recovered"
    assert recovered["seq"] == 3
    assert recovered["body"]["truncated_at"] == good_size
    assert recovered["body"]["bytes"] == len(torn)
    assert recovered["body"]["sha256"] == sha256_hex(torn)
    # The cut bytes are kept beside the log: they are evidence.
    assert LogFiles(path).torn_copy(good_size).read_bytes() == torn
    assert verify_log(path, keys.load_public_keys(jwks_path)).ok


def test_torn_single_line_file_is_cut(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"body":{"proposal_id":"p"')
    with AuditLog(path, signing_key) as log:
        assert log.append("proposal.received", sample_body(0)).seq == 1
    assert json.loads(path.read_bytes().splitlines()[0])["kind"] == "audit.recovered"


def test_power_loss_zeros_after_the_last_record_are_cut(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, 3)
    with path.open("ab") as handle:
        handle.write(b"\x00" * 700 + b"\n" + b"\x00" * 300)
    with AuditLog(path, signing_key) as log:
        record = log.append("proposal.received", sample_body(9))
    assert record.seq == 4
    assert verify_log(path, keys.load_public_keys(jwks_path)).ok


def test_malformed_last_line_is_damage_not_a_torn_write(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, 1)
    older = LogFiles(path).checkpoint.read_bytes()
    lines = write_log(path, signing_key, 1)
    # The last line after the last checkpoint (as after a crash before publishing one).
    LogFiles(path).checkpoint.write_bytes(older)
    path.write_bytes(lines[0] + b"\n" + b"not json\n")
    with pytest.raises(AuditLogCorrupt, match="damage or tampering"):
        AuditLog(path, signing_key)


def test_a_tail_with_a_bad_signature_is_not_chained_onto(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    # The writer verifies the record it will chain onto (signature and link), not only that
    # it parses: a well-formed record with a bad signature stops it.
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, 2)
    older = LogFiles(path).checkpoint.read_bytes()
    lines = write_log(path, signing_key, 1)
    LogFiles(path).checkpoint.write_bytes(older)  # the third record came after it
    value = json.loads(lines[2])
    value["body"]["proposal_id"] = "forged"
    lines[2] = rfc8785.dumps(value)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    with pytest.raises(AuditLogCorrupt, match="bad signature"):
        AuditLog(path, signing_key)


def test_a_cut_tail_below_the_published_checkpoint_never_reuses_a_seq(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    # Whole records cut off the end (no torn bytes): the log alone looks fine, but its own
    # published checkpoint covers more. Reusing those seqs would sign other content under them.
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 5)
    path.write_bytes(b"".join(line + b"\n" for line in lines[:3]))
    with pytest.raises(AuditLogCorrupt, match="will not reuse their sequence numbers"):
        AuditLog(path, signing_key)
    assert len(path.read_bytes().splitlines()) == 3  # nothing appended


def test_a_log_edited_under_its_checkpoint_is_refused(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 4)
    other = write_log(tmp_path / "other.jsonl", signing_key, 4)
    path.write_bytes(b"".join(line + b"\n" for line in [lines[0], other[1], *lines[2:]]))
    with pytest.raises(AuditLogCorrupt, match="not the log its published checkpoint describes"):
        AuditLog(path, signing_key)


def test_long_log_tail_is_found_across_read_chunks(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    # Lines near the 1 KiB string cap, enough of them to span several 64 KiB tail reads.
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        for n in range(200):
            log.append("write.outcome", {"refs": ["r" * 1000, str(n)]})
    with AuditLog(path, signing_key) as log:
        assert log.append("write.outcome", {"n": 200}).seq == 200


def test_only_one_writer_at_a_time(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, signing_key)
    with pytest.raises(AuditLogUnavailable, match="already open"):
        AuditLog(path, signing_key)
    first.close()
    AuditLog(path, signing_key).close()


def test_append_after_close_is_refused_and_close_is_idempotent(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", signing_key)
    log.append("proposal.received", sample_body(0))
    log.close()
    log.close()
    with pytest.raises(AuditLogUnavailable, match="closed"):
        log.append("proposal.received", sample_body(1))


def test_group_commit_under_threads(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    threads_n, per_thread = 8, 200
    path = tmp_path / "audit.jsonl"
    seqs: list[list[int]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    with AuditLog(path, signing_key) as log:

        def worker(index: int) -> None:
            try:
                start.wait()
                for n in range(per_thread):
                    body = {"thread": index, "n": n, "proposal_id": f"p-{index}-{n}"}
                    seqs[index].append(log.append("policy.decision", body).seq)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        fsyncs = log.fsync_count

    assert not errors
    total = threads_n * per_thread
    assert sorted(s for chunk in seqs for s in chunk) == list(range(total))
    for chunk in seqs:
        assert chunk == sorted(chunk)  # each thread's own records are in its order
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(total))
    result = verify_log(path, keys.load_public_keys(jwks_path))
    assert result.ok, result.problem
    assert result.records == total
    # Group commit: concurrent appenders shared fsyncs.
    assert fsyncs < total, fsyncs


def test_non_durable_appends_share_the_next_fsync(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        first = log.append("proposal.received", sample_body(0), durable=False)
        assert log.fsync_count == 0
        # Signed and queued: it reaches the file with the next flush, in one write.
        assert path.read_bytes() == b""
        second = log.append("policy.decision", sample_body(1))
        assert log.fsync_count == 1  # one fsync covered both records
        assert path.read_bytes() == first.line + b"\n" + second.line + b"\n"
        log.append("token.minted", sample_body(2), durable=False)
        log.sync()
        assert log.fsync_count == 2
        log.sync()  # nothing new written: no fsync
        assert log.fsync_count == 2
    assert verify_log(path, keys.load_public_keys(jwks_path)).records == 3


def test_close_makes_non_durable_appends_durable(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", signing_key)
    log.append("proposal.received", sample_body(0), durable=False)
    log.close()
    assert log.fsync_count == 1


def test_append_refuses_an_oversized_record(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    with (
        AuditLog(tmp_path / "audit.jsonl", signing_key) as log,
        pytest.raises(ValueError, match="too large"),
    ):
        log.append("write.outcome", {"refs": ["r" * 1000] * 20})
