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


def test_reopen_with_a_rotated_key_continues_the_chain(
    tmp_path: Path, signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, 2)
    with AuditLog(path, other_key) as log:
        assert log.append("proposal.received", sample_body(7)).seq == 2
    both = tmp_path / "both.jwks.json"
    keys.write_jwks(both, [signing_key, other_key])
    result = verify_log(path, keys.load_public_keys(both))
    assert result.ok, result.problem
    assert result.kids == (signing_key.kid, other_key.kid)


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


def test_torn_last_line_refuses_to_open_and_truncation_recovers(
    tmp_path: Path, signing_key: keys.SigningKey, jwks_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 3)
    good_size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(lines[1][:40])  # a record cut off mid-write, no newline
    with pytest.raises(AuditLogCorrupt, match=f"truncate -s {good_size} "):
        AuditLog(path, signing_key)
    # The documented recovery: truncate to the end of the last complete line.
    with path.open("r+b") as handle:
        handle.truncate(good_size)
    with AuditLog(path, signing_key) as log:
        assert log.append("write.outcome", sample_body(3)).seq == 3
    assert verify_log(path, keys.load_public_keys(jwks_path)).ok


def test_torn_single_line_file_refuses_to_open(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"body":{"proposal_id":"p"')
    with pytest.raises(AuditLogCorrupt, match="truncate -s 0 "):
        AuditLog(path, signing_key)


def test_malformed_last_line_refuses_to_open(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 2)
    path.write_bytes(lines[0] + b"\n" + b"not json\n")
    with pytest.raises(AuditLogCorrupt, match="not a valid audit record"):
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
        # Written (visible to readers of the file) before it is durable.
        assert path.read_bytes() == first.line + b"\n"
        log.append("policy.decision", sample_body(1))
        assert log.fsync_count == 1  # one fsync covered both records
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
