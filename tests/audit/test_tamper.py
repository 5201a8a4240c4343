"""The tamper suite: a real log (the writer, typed events, a key rotation, published checkpoints) changed the
ways an adversary or an accident would, each change detected and named, with no traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785

from chartgate import keys
from chartgate.canonical import sha256_hex
from sidecar.audit.events import (
    PolicyDecision,
    ProposalReceived,
    Reason,
    TokenMinted,
    WriteOutcome,
)
from sidecar.audit.files import LogFiles
from sidecar.audit.keyring import Keyring, entry_from_public_key
from sidecar.audit.log import AuditLog
from sidecar.audit.records import encode_head, seal
from sidecar.audit.verify import VerifyOptions, verify_command, verify_set

REPO = Path(__file__).resolve().parents[2]
PROPOSALS_BEFORE, PROPOSALS_AFTER = 12, 6  # 4 records each
MIDDLE = 4 * PROPOSALS_BEFORE


def lifecycle(log: AuditLog, n: int) -> None:
    pid = f"pr-{n:04d}"
    log.append_event(
        ProposalReceived(
            proposal_id=pid,
            agent="scribe-agent",
            tenant="st-mary",
            idempotency_key=f"key-{n}",
            tool="fhir.create",
            resource_type="Observation",
            target="",
            patient=f"patient-{n % 3}",
            purpose_of_use="TREAT",
            trace_id=f"{n:032x}",
            payload_sha256=sha256_hex(f"payload {n}".encode()),
        ),
        durable=False,
    )
    log.append_event(
        PolicyDecision(
            proposal_id=pid, allow=True, tier="autonomous", reasons=(Reason("ok", "tier"),)
        )
    )
    log.append_event(TokenMinted(proposal_id=pid, jti=f"jti-{n}", policy_revision="sha256:ab"))
    log.append_event(
        WriteOutcome(proposal_id=pid, state="accepted", fhir_id=f"obs-{n}", fhir_version="1")
    )


@dataclass(frozen=True)
class RealLog:
    """A log written by the writer, what an auditor holds of it, and copies to tamper with."""

    source: Path  # directory holding audit.jsonl and its checkpoint and keyring
    older: Path  # a copy of that directory taken at MIDDLE records (for rollback and forks)
    held_middle: Path  # the checkpoint published at MIDDLE records
    held_end: Path  # the last checkpoint
    fork: Path  # the older copy continued differently by the same writer and key
    other: Path  # another log key A signed (a source of genuine records to insert)
    key_a: keys.SigningKey
    key_b: keys.SigningKey

    def copy(self, into: Path, *, older: bool = False) -> Path:
        target = into / ("older" if older else "log")
        shutil.copytree(self.older if older else self.source, target)
        return target / "audit.jsonl"

    @property
    def keyring(self) -> Path:
        return LogFiles(self.source / "audit.jsonl").keyring


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealLog:
    root = tmp_path_factory.mktemp("real")
    key_a = keys.load_or_create(root / "keys" / "a.jwk", "audit")
    key_b = keys.load_or_create(root / "keys" / "b.jwk", "audit")
    path = root / "log" / "audit.jsonl"
    with AuditLog(path, key_a, origin="chartgate.example/audit/sidecar-0") as log:
        for n in range(PROPOSALS_BEFORE):
            lifecycle(log, n)
        log.checkpoint()
    shutil.copytree(root / "log", root / "older")
    shutil.copytree(root / "log", root / "fork")
    held_middle = root / "held-middle.checkpoint"
    shutil.copy(LogFiles(path).checkpoint, held_middle)
    # Two histories from one point, both signed by the genuine key (before it retires).
    with AuditLog(root / "fork" / "audit.jsonl", key_a) as log:
        for n in range(900, 900 + PROPOSALS_AFTER + 2):
            lifecycle(log, n)
    with AuditLog(root / "other" / "audit.jsonl", key_a) as log:
        for n in range(500, 502):
            lifecycle(log, n)
    with AuditLog(path, key_a) as log:
        log.rotate(key_b)  # in-process, without stopping
        for n in range(PROPOSALS_BEFORE, PROPOSALS_BEFORE + PROPOSALS_AFTER):
            lifecycle(log, n)
    held_end = root / "held-end.checkpoint"
    shutil.copy(LogFiles(path).checkpoint, held_end)
    return RealLog(
        root / "log",
        root / "older",
        held_middle,
        held_end,
        root / "fork" / "audit.jsonl",
        root / "other" / "audit.jsonl",
        key_a,
        key_b,
    )


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def kinds(self) -> list[str]:
        return re.findall(r"^FAILED.*?\[([a-z-]+)\]", self.out, re.MULTILINE)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> object:
    def verify(
        logs: Path | list[Path], keyring: Path, held: tuple[Path, ...] = (), **kw: object
    ) -> Outcome:
        capsys.readouterr()
        code = verify_command(logs, keyring, held_paths=held, quiet_progress=True, **kw)  # type: ignore[arg-type]
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        return Outcome(code, captured.out, captured.err)

    return verify


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


# --- the untouched log -------------------------------------------------------------------------


def test_the_real_log_verifies_with_and_without_held_checkpoints(
    real: RealLog, run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    total = 4 * (PROPOSALS_BEFORE + PROPOSALS_AFTER) + 1  # + the rotation record
    plain = run(log, real.keyring)
    assert plain.code == 0, plain.out
    assert plain.out.startswith(f"OK: {total} records verified, chain intact")
    assert real.key_a.kid in plain.out
    assert real.key_b.kid in plain.out
    # It names the keys it trusted, with their thumbprints and windows.
    assert "trusted keys" in plain.out
    assert "RFC 7638 thumbprint" in plain.out
    assert "published checkpoint: size" in plain.out
    held = run(log, real.keyring, (real.held_middle, real.held_end))
    assert held.code == 0, held.out
    assert f"held checkpoint: size {MIDDLE}, consistent" in held.out
    # Incremental: what the longest held checkpoint covers is checked by its root.
    assert f"records 0..{total - 1} checked by the held checkpoint's root" in held.out
    full = run(log, real.keyring, (real.held_middle,), full=True)
    assert full.code == 0
    assert "checked by the held checkpoint" not in full.out


# --- records changed ---------------------------------------------------------------------------


def test_edit(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    lines[8] = lines[8].replace(b"patient-", b"patienT-", 1)
    write(log, lines)
    outcome = run(log, real.keyring, (real.held_middle,))
    assert outcome.code == 1
    assert outcome.kinds[0] == "bad-signature"
    assert "FAILED at line 9 (seq 8) [bad-signature]" in outcome.out
    # The log's own checkpoint and the held one no longer match either.
    assert {"checkpoint-mismatch", "fork"} <= set(outcome.kinds)


def test_delete(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    del lines[20]
    write(log, lines)
    outcome = run(log, real.keyring)
    assert outcome.code == 1
    assert outcome.kinds[0] == "seq-gap"
    assert "FAILED at line 21 (seq 21) [seq-gap]" in outcome.out


def test_insert(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A genuine record, signed by the real key, from another log of the same writer.
    stranger = lines_of(real.other)[5]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    write(log, [*lines[:5], stranger, *lines[5:]])
    outcome = run(log, real.keyring)
    assert outcome.code == 1
    assert outcome.kinds[0] in ("broken-link", "seq-back")
    assert "FAILED at line 6 (seq 5)" in outcome.out


def test_reorder(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    lines[7], lines[8] = lines[8], lines[7]
    write(log, lines)
    outcome = run(log, real.keyring)
    assert outcome.code == 1
    assert outcome.kinds[:2] == ["seq-gap", "out-of-order"]
    assert "seq 7 belongs before line 8: records were reordered" in outcome.out


def test_duplicate(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    write(log, [*lines[:13], lines[12], *lines[13:]])
    outcome = run(log, real.keyring)
    assert outcome.code == 1
    assert outcome.kinds[0] == "duplicate"
    assert "FAILED at line 14 (seq 12) [duplicate]" in outcome.out


def test_every_fault_is_reported_up_to_the_limit(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    for index in (4, 8, 16, 32, 40):  # proposal.received records
        lines[index] = lines[index].replace(b"scribe-agent", b"scribe-agenT")
    write(log, lines)
    LogFiles(log).checkpoint.unlink()
    everything = run(log, real.keyring)
    assert everything.kinds == ["bad-signature"] * 5
    assert [int(n) for n in re.findall(r"FAILED at line (\d+)", everything.out)] == [
        5,
        9,
        17,
        33,
        41,
    ]
    limited = run(log, real.keyring, limit=2)
    assert limited.kinds == ["bad-signature"] * 2
    assert "5 fault(s)" in limited.out
    assert "3 more not shown" in limited.out


# --- the end of the log: cut, rolled back, emptied, forked -------------------------------------


def test_truncated_tail_against_a_held_checkpoint(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    write(log, lines_of(log)[:-5])  # whole records: the shorter log is well formed
    alone = run(log, real.keyring)
    # Even without a held checkpoint, the log's own published checkpoint gives it away...
    assert alone.kinds == ["truncated"]
    LogFiles(log).checkpoint.unlink()
    # ... and with that removed too, the checkpoint the auditor holds does.
    held = run(log, real.keyring, (real.held_end,))
    assert held.code == 1
    assert held.kinds == ["truncated"]
    assert "cut-off tail" in held.out


def test_rollback_to_an_older_copy(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    older = real.copy(tmp_path, older=True)  # the log and its checkpoint as they were earlier
    assert run(older, real.keyring).code == 0  # self-consistent on its own
    outcome = run(older, real.keyring, (real.held_end,))
    assert outcome.code == 1
    assert outcome.kinds == ["rollback"]


def test_empty_file(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    log.write_bytes(b"")
    LogFiles(log).checkpoint.unlink()
    outcome = run(log, real.keyring, (real.held_middle,))
    assert outcome.code == 1
    assert outcome.kinds == ["empty"]


def test_fork_signed_with_the_real_key(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The writer, given the older copy, continues it differently: two histories, both signed
    # by the genuine key, each verifying on its own.
    fork = real.fork
    assert run(fork, real.keyring).code == 0
    outcome = run(fork, real.keyring, (real.held_end,))
    assert outcome.code == 1
    assert outcome.kinds == ["fork"]
    # Handed both logs, the auditor sees the fork without holding anything.
    both = Keyring.load(real.keyring)
    result = verify_set([real.source / "audit.jsonl", fork], both, VerifyOptions())
    assert [f.kind for f in result.faults] == ["fork"]


# --- keys --------------------------------------------------------------------------------------


def test_a_record_outside_its_keys_window(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ring = json.loads(real.keyring.read_text())
    for entry in ring["keys"]:
        if entry["kid"] == real.key_a.kid:
            entry["not_before"] = "2999-01-01T00:00:00Z"
            entry["retired_at"] = "2999-02-01T00:00:00Z"
    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps(ring))
    outcome = run(real.copy(tmp_path), pinned)
    assert outcome.code == 1
    assert set(outcome.kinds) == {"key-outside-window"}
    assert len(outcome.kinds) == MIDDLE + 1  # every record key A signed, the rotation included


def test_a_retired_key_cannot_sign_after_the_rotation(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Key A leaked after it retired: a record signed by it, chained correctly, appended.
    log = real.copy(tmp_path)
    lines = lines_of(log)
    last = json.loads(lines[-1])
    body, head = encode_head({"proposal_id": "pr-forged"}, real.key_a.kid, "policy.decision")
    forged = seal(
        head,
        body=body,
        kind="policy.decision",
        kid=real.key_a.kid,
        prev=sha256_hex(lines[-1][:-1]),
        seq=last["seq"] + 1,
        ts=last["ts"],
        key=real.key_a.private_key,
    )
    write(log, [*lines, forged.line + b"\n"])
    outcome = run(log, real.keyring)
    assert outcome.code == 1
    assert "retired-key" in outcome.kinds
    assert "key-outside-window" in outcome.kinds  # dated after its retirement, too


def test_a_substituted_key_file(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    attacker = keys.load_or_create(tmp_path / "attacker.jwk", "audit")
    # 1. The genuine kid paired with the attacker's key: refused, exit 2.
    ring = json.loads(real.keyring.read_text())
    ring["keys"][0]["x"] = attacker.public_jwk()["x"]
    substituted = tmp_path / "substituted.json"
    substituted.write_text(json.dumps(ring))
    outcome = run(real.copy(tmp_path), substituted)
    assert outcome.code == 2
    assert "not derived from this key" in outcome.err
    # 2. A whole log forged with the attacker's own key (kid correctly derived) passes only
    # against the attacker's key file; against the auditor's pinned keyring it is named.
    forged = tmp_path / "forged" / "audit.jsonl"
    with AuditLog(forged, attacker, origin="chartgate.example/audit/sidecar-0") as log:
        lifecycle(log, 1)
    assert run(forged, LogFiles(forged).keyring).code == 0
    pinned = run(forged, real.keyring)
    assert pinned.code == 1
    assert pinned.kinds[0] == "unknown-key"
    assert "bad-checkpoint" in pinned.kinds


def test_duplicate_kids_in_a_key_file(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ring = json.loads(real.keyring.read_text())
    ring["keys"].append(dict(ring["keys"][0]))
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(ring))
    outcome = run(real.copy(tmp_path), dup)
    assert outcome.code == 2
    assert "duplicate kid" in outcome.err


# --- hostile input -----------------------------------------------------------------------------


def test_a_line_nested_a_thousand_levels(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    deep = b'{"body":' + b"[" * 1000 + b"]" * 1000 + b"}\n"
    write(log, [*lines[:3], deep, *lines[4:]])
    outcome = run(log, real.keyring)
    assert outcome.code == 1
    assert outcome.kinds[0] == "too-deep"
    assert "FAILED at line 4 (expected seq 3) [too-deep]" in outcome.out


def test_a_key_file_nested_a_thousand_levels(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'{"keys":' + b"[" * 1000 + b"]" * 1000 + b"}")
    outcome = run(real.copy(tmp_path), deep)
    assert outcome.code == 2
    assert "nested deeper" in outcome.err


def test_a_32_mib_line_costs_little_memory(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    with log.open("wb") as handle:
        handle.writelines(lines[:2])
        handle.write(b'{"body":"' + b"A" * (32 * 1024 * 1024) + b'"}\n')
        handle.writelines(lines[3:])
    tracemalloc.start()
    try:
        outcome = run(log, real.keyring)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.code == 1
    assert outcome.kinds[0] == "oversized"
    assert "FAILED at line 3 (expected seq 2) [oversized]" in outcome.out
    assert peak < 8 * 1024 * 1024, peak  # the line streamed past, never held


def test_bytes_that_are_not_utf8(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    lines = lines_of(log)
    lines[4] = lines[4].replace(b"scribe", b"scr\xffbe", 1)
    write(log, lines)
    outcome = run(log, real.keyring)
    assert outcome.kinds[0] == "encoding"


def test_a_torn_last_line(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = real.copy(tmp_path)
    with log.open("ab") as handle:
        handle.write(lines_of(log)[0][:60])
    outcome = run(log, real.keyring)
    assert outcome.kinds == ["torn"]


def test_the_command_line_never_shows_a_traceback(real: RealLog, tmp_path: Path) -> None:
    log = real.copy(tmp_path)
    with log.open("ab") as handle:
        handle.write(b"[" * 100_000 + b"\n" + b"\xff" * 10 + b"\n")
    deep_key = tmp_path / "deep.json"
    deep_key.write_bytes(b"[" * 100_000)
    code = (
        "import argparse, sys\n"
        "from sidecar.audit.commands import add_audit_parser, audit_command\n"
        "p = argparse.ArgumentParser(); add_audit_parser(p.add_subparsers(dest='command'))\n"
        "sys.exit(audit_command(p.parse_args(sys.argv[1:])))\n"
    )
    for keyring, expected in ((real.keyring, 1), (deep_key, 2)):
        done = subprocess.run(
            [sys.executable, "-c", code, "audit", "verify", str(log), "--keyring", str(keyring)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert done.returncode == expected, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
    assert "[too-deep]" in done.stdout or expected == 2


def test_edited_line_in_canonical_form_still_names_the_record(
    real: RealLog, run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # Re-encoded so it stays canonical JSON: only the signature can tell.
    log = real.copy(tmp_path)
    lines = lines_of(log)
    value = json.loads(lines[30])
    value["body"]["fhir_id"] = "obs-someone-else"
    lines[30] = rfc8785.dumps(value) + b"\n"
    write(log, lines)
    outcome = run(log, real.keyring)
    assert outcome.kinds[0] == "bad-signature"
    assert "FAILED at line 31 (seq 30)" in outcome.out


def test_keys_bound_to_another_log_are_refused(real: RealLog, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ring = json.loads(real.keyring.read_text())
    for entry in ring["keys"]:
        entry["origin"] = "chartgate.example/audit/replica"
    other = tmp_path / "other-log.json"
    other.write_text(json.dumps(ring))
    outcome = run(real.copy(tmp_path), other)
    assert outcome.code == 1
    assert "wrong-log" in outcome.kinds


def test_pinned_keyring_entries_need_not_be_the_writers(real: RealLog, tmp_path: Path) -> None:
    # An auditor's keyring built from the public keys alone (no windows) is enough.
    pinned = Keyring.of(
        entry_from_public_key(k.public_key, k.kid) for k in (real.key_a, real.key_b)
    )
    pinned.save(tmp_path / "pinned.json")
    assert (
        verify_command(real.source / "audit.jsonl", tmp_path / "pinned.json", quiet_progress=True)
        == 0
    )
