"""Offline audit log verifier: RFC 8785 form, SHA-256 chain, RFC 8032 signatures, RFC 9162 roots vs C2SP checkpoints.

Every line is checked (it does not stop at the first fault; faults are listed up to a limit),
memory stays flat in the log's length (lines are streamed and bounded), and the signature work is
split across processes for long logs. Given a checkpoint the auditor already holds, the records
it covers are checked by recomputing its root (one hash each) instead of one signature each: the
auditor verified them when they took it. `--full` checks every signature anyway.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sidecar.audit.files import LogFiles, RawLine, default_origin, read_lines
from sidecar.audit.keyring import AUDIT_ROLE, KeyEntry, Keyring, KeyringError, entry_from_public_key
from sidecar.audit.merkle import CompactTree
from sidecar.audit.note import NoteError, SignedCheckpoint, parse_signed_checkpoint
from sidecar.audit.records import (
    GENESIS_PREV,
    MAX_LINE_BYTES,
    RecordFormatError,
    parse_line,
    signature_valid,
)

ROTATED_KIND = "audit.key_rotated"
# Lines per parallel job (and per offset the hash pass keeps: memory n / 2048 integers). Small
# enough that a few thousand new records (an incremental check) still split across processes.
CHUNK_LINES = 1 << 11
DEFAULT_FAULT_LIMIT = 100
_PROGRESS_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Fault:
    """One thing wrong, named: `kind` is a stable code (docs/audit.md lists them), `line` the
    1-based line (None for a fault of the whole log), `seq` the record's own seq when readable,
    else the seq the chain expected there."""

    kind: str
    message: str
    line: int | None = None
    seq: int | None = None
    seq_known: bool = True
    log: str = ""

    def where(self) -> str:
        if self.line is None:
            return self.log or "log"
        if self.seq is None:
            return f"line {self.line}"
        named = f"seq {self.seq}" if self.seq_known else f"expected seq {self.seq}"
        return f"line {self.line} ({named})"

    def describe(self) -> str:
        return f"{self.where()}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of verifying one log file.

    ok: no fault at all. records: how many records verified on their own (signature, form, key,
    seq and link), plus those a held checkpoint covered when verification was incremental.
    lines: lines read. faults: up to the limit, in file order; fault_count: all of them.
    first_bad_line / first_bad_seq / problem: the first fault (problem is its description).
    kids: the key ids that signed verified records, in order of first use. head_seq,
    head_sha256: the last line's seq and SHA-256 when it verified. origin, root: the log's name
    and its RFC 9162 root over every line. trusted: the keys records verified under.
    notes: what was checked against which checkpoint, for the report."""

    ok: bool
    records: int
    first_bad_seq: int | None
    first_bad_line: int | None
    problem: str | None
    kids: tuple[str, ...] = ()
    head_seq: int | None = None
    head_sha256: str | None = None
    faults: tuple[Fault, ...] = ()
    fault_count: int = 0
    lines: int = 0
    origin: str = ""
    root: bytes = b""
    path: str = ""
    trusted: tuple[KeyEntry, ...] = ()
    notes: tuple[str, ...] = ()
    incremental_from: int = 0


class VerifyInputError(ValueError):
    """An input the auditor gave cannot be used (keyring, held checkpoint): exit 2, not a fault
    of the log."""


ProgressFn = Callable[[str], None]


# --- checking lines (runs in worker processes too) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Edge:
    """What a neighbouring chunk needs of a chunk's first or last line."""

    index: int
    seq: int | None
    prev: str | None
    digest: str
    bad: bool


@dataclass(frozen=True, slots=True)
class _SignerAt:
    """The key that signed the record at an index, and where a rotation record points."""

    kid: str | None
    rotated_to: str | None


@dataclass
class _ChunkJob:
    path: str
    start_index: int
    start_offset: int
    count: int
    keyring: dict[str, Any]
    origin: str
    known_start: bool
    watch: tuple[int, ...]
    limit: int


@dataclass
class _ChunkResult:
    start_index: int
    lines: int = 0
    verified: int = 0
    faults: list[Fault] = field(default_factory=list)
    fault_count: int = 0
    first: _Edge | None = None
    last: _Edge | None = None
    runs: list[tuple[str, int, int]] = field(default_factory=list)
    rotations: list[tuple[int, str, str]] = field(default_factory=list)
    signers: dict[int, _SignerAt] = field(default_factory=dict)
    kids: list[str] = field(default_factory=list)
    torn: bool = False


_KEYRING_CACHE: dict[str, Keyring] = {}


def _keyring_from_json(data: dict[str, Any]) -> Keyring:
    text = json.dumps(data, sort_keys=True)
    ring = _KEYRING_CACHE.get(text)
    if ring is None:
        ring = Keyring.parse(text.encode("utf-8"), "keyring", legacy=False)
        _KEYRING_CACHE.clear()
        _KEYRING_CACHE[text] = ring
    return ring


@dataclass(frozen=True, slots=True)
class _Line:
    """One line checked on its own. `status`: "ok", "bad" (a record that failed a check of its
    own, so its seq and prev are not trusted), or "junk" (not a record at all)."""

    status: str
    digest: str
    seq: int | None = None
    prev: str | None = None
    kid: str | None = None
    rotated_to: str | None = None
    rotated_from: str | None = None


def _check_chunk(job: _ChunkJob, progress: Callable[[int], None] | None = None) -> _ChunkResult:
    """Check `count` lines from a known offset: each line on its own (form, key, window,
    signature) and against the lines before it in this chunk (seq, chain). The first line's seq
    and link are left to whoever knows the line before the chunk, unless `known_start`."""
    ring = _keyring_from_json(job.keyring)
    result = _ChunkResult(start_index=job.start_index)
    expected: int | None = job.start_index if job.known_start else None
    prev_digest: str | None = GENESIS_PREV if job.known_start and job.start_index == 0 else None
    prev_ok = True
    missing: list[tuple[int, int, int]] = []  # (first seq, last seq, line) of each gap
    watch = set(job.watch)
    kid_seen: set[str] = set()

    def fault(kind: str, message: str, index: int, seq: int | None, known: bool = True) -> None:
        result.fault_count += 1
        if len(result.faults) < job.limit:
            result.faults.append(Fault(kind, message, index + 1, seq, known))

    with open(job.path, "rb", buffering=256 * 1024) as handle:
        for raw in read_lines(handle, start_index=job.start_index, start_offset=job.start_offset):
            if result.lines >= job.count:
                break
            result.lines += 1
            index = raw.index
            if progress is not None and result.lines % 1024 == 0:
                progress(result.lines)
            line = _check_one(raw, ring, job.origin, expected, fault)
            ok = line.status == "ok"
            if ok and expected is not None and line.seq is not None:
                ok = _check_seq(line.seq, expected, line.digest, prev_digest, missing, index, fault)
            # After a bad line the link cannot be judged: its prev names the bytes that line
            # had before it was edited (unknown), or the last good line if it was inserted.
            if ok and prev_digest is not None and prev_ok and line.prev != prev_digest:
                fault(
                    "broken-link",
                    "the first record's prev must be 64 zeros"
                    if index == 0
                    else f"prev {str(line.prev)[:16]}... is not the hash of line {index}: a "
                    "record before this one was edited, deleted or reordered, or this one "
                    "was inserted",
                    index,
                    line.seq,
                )
                ok = False
            edge = _Edge(index, line.seq, line.prev, line.digest, not ok)
            if result.first is None:
                result.first = edge
            result.last = edge
            if ok:
                result.verified += 1
                if line.kid is not None and line.kid not in kid_seen:
                    kid_seen.add(line.kid)
                    result.kids.append(line.kid)
            if line.kid is not None:
                runs = result.runs
                if runs and runs[-1][0] == line.kid:
                    runs[-1] = (line.kid, runs[-1][1], index)
                else:
                    runs.append((line.kid, index, index))
                if line.rotated_to is not None:
                    result.rotations.append((index, line.rotated_from or line.kid, line.rotated_to))
            if index + 1 in watch:
                result.signers[index + 1] = _SignerAt(line.kid if ok else None, line.rotated_to)
            if not raw.terminated:
                result.torn = True
            # A trusted seq moves the expectation (never backwards: after a reordered record
            # the ones after it are judged against the highest seq seen); an untrusted one
            # stands in for the record that belonged here.
            if line.status == "ok" and line.seq is not None:
                expected = line.seq + 1 if expected is None else max(expected, line.seq + 1)
            elif expected is not None:
                expected += 1
            prev_digest = line.digest
            prev_ok = ok
    return result


def _check_seq(
    seq: int,
    expected: int,
    digest: str,
    prev_digest: str | None,
    missing: list[tuple[int, int, int]],
    index: int,
    fault: Callable[..., None],
) -> bool:
    if seq > expected:
        gap = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
        fault(
            "seq-gap",
            f"expected seq {expected}, found {seq}: {gap} missing here (deleted, or moved: see "
            "any later out-of-order fault)",
            index,
            seq,
        )
        missing.append((expected, seq - 1, index + 1))
        return False
    if seq < expected:
        if digest == prev_digest:
            fault("duplicate", f"a copy of line {index} (seq {seq})", index, seq)
        else:
            where = next((at for lo, hi, at in missing if lo <= seq <= hi), None)
            if where is not None:
                fault(
                    "out-of-order",
                    f"seq {seq} belongs before line {where}: records were reordered",
                    index,
                    seq,
                )
            else:
                fault(
                    "seq-back",
                    f"seq {seq} after seq {expected - 1}: a record was inserted here, or its "
                    "seq repeats one already used",
                    index,
                    seq,
                )
        return False
    return True


def _check_one(
    raw: RawLine,
    ring: Keyring,
    origin: str,
    expected: int | None,
    fault: Callable[..., None],
) -> _Line:
    """One line on its own: bounded form, key (known, role, log, window), signature."""
    index = raw.index
    if raw.oversized:
        fault(
            "oversized",
            f"a line of {raw.length} bytes; records are at most {len(raw.data)} (read no further)",
            index,
            expected,
            False,
        )
        return _Line("junk", raw.digest or "")
    if not raw.terminated:
        fault(
            "torn",
            f"torn last line: {raw.length} bytes with no closing newline (a write cut off, "
            "e.g. by a crash; the writer cuts it off and records that on its next start)",
            index,
            expected,
            False,
        )
        return _Line("junk", hashlib.sha256(raw.data).hexdigest())
    try:
        record = parse_line(raw.data)
    except RecordFormatError as exc:
        seq = exc.seq
        fault(exc.code, str(exc), index, seq if seq is not None else expected, seq is not None)
        return _Line("junk", hashlib.sha256(raw.data).hexdigest())
    digest = record.digest
    entry = ring.get(record.kid)
    if entry is None:
        known = ", ".join(sorted(ring.keys))[:300] or "none"
        fault(
            "unknown-key",
            f"signed by key id {record.kid!r}, which the keyring does not hold (known: {known})",
            index,
            record.seq,
        )
        return _Line("bad", digest, record.seq, record.prev)
    if not signature_valid(record, entry.public_key):
        fault(
            "bad-signature",
            f"the record is not what key {record.kid!r} signed (edited record or signature)",
            index,
            record.seq,
        )
        return _Line("bad", digest, record.seq, record.prev)
    status = "ok"
    if entry.role != AUDIT_ROLE:
        fault(
            "wrong-role", f"key {record.kid} has role {entry.role!r}, not audit", index, record.seq
        )
        status = "bad"
    if entry.origin is not None and entry.origin != origin:
        fault(
            "wrong-log",
            f"key {record.kid} signs the log {entry.origin}, not this one ({origin})",
            index,
            record.seq,
        )
        status = "bad"
    if not entry.covers(record.ts):
        fault(
            "key-outside-window",
            f"dated {record.ts}, outside the window of key {record.kid} ({entry.window()})",
            index,
            record.seq,
        )
        status = "bad"
    rotated_to = rotated_from = None
    if record.kind == ROTATED_KIND:
        to_kid, from_kid = record.body.get("to_kid"), record.body.get("from_kid")
        rotated_to = to_kid if isinstance(to_kid, str) else None
        rotated_from = from_kid if isinstance(from_kid, str) else None
    return _Line(status, digest, record.seq, record.prev, record.kid, rotated_to, rotated_from)


# --- the whole log ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TreeScan:
    lines: int
    root: bytes
    roots: dict[int, bytes]
    offsets: list[int]
    first_line: bytes | None


def _hash_pass(
    path: Path, watch: Iterable[int], progress: Callable[[int], None] | None
) -> _TreeScan:
    """Every line's leaf hash into a compact tree: the root at every watched size and at the
    end, and the offset of every CHUNK_LINES-th line (where parallel workers start).

    Reads 1 MiB blocks and splits them (a line-at-a-time reader costs twice as much here); a
    line longer than a record can be is hashed as it streams past instead of being kept, so
    memory stays bounded whatever the file holds."""
    tree = CompactTree()
    wanted = set(watch)
    roots: dict[int, bytes] = {0: tree.root()} if 0 in wanted else {}
    offsets: list[int] = []
    first: bytes | None = None
    sha256 = hashlib.sha256
    index = offset = 0
    carry = b""  # the start of a line the last block did not finish
    long_line: Any = None  # the hash of an over-long line streaming past, from its 0x00 prefix
    long_length = 0

    def add(leaf: bytes, length: int) -> None:
        nonlocal index, offset
        if index % CHUNK_LINES == 0:
            offsets.append(offset)
            if progress is not None and index:
                progress(index)
        tree.append(leaf)
        index += 1
        offset += length + 1
        if tree.size in wanted:
            roots[tree.size] = tree.root()

    with path.open("rb", buffering=0) as handle:
        while block := handle.read(1 << 20):
            if long_line is not None:
                cut = block.find(b"\n")
                if cut < 0:
                    long_line.update(block)
                    long_length += len(block)
                    continue
                long_line.update(block[:cut])
                add(long_line.digest(), long_length + cut)
                long_line = None
                block = block[cut + 1 :]
            lines = (carry + block).split(b"\n") if carry else block.split(b"\n")
            carry = lines.pop()
            for line in lines:
                if first is None:
                    first = line
                add(sha256(b"\x00" + line).digest(), len(line))
            if len(carry) > MAX_LINE_BYTES:
                long_line = sha256(b"\x00" + carry)
                long_length = len(carry)
                carry = b""
    if long_line is not None:
        add(long_line.digest(), long_length)
    elif carry:
        if first is None:
            first = carry
        add(sha256(b"\x00" + carry).digest(), len(carry))
    return _TreeScan(tree.size, tree.root(), roots, offsets, first)


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without newline counts), read in blocks: no parsing."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def log_origin(path: Path, keyring: Keyring) -> tuple[str, SignedCheckpoint | None, str | None]:
    """The log's origin: from its published checkpoint, else from the keyring entry of the key
    that signed its first record, else derived from that record (as the writer derives it).
    Returns (origin, published checkpoint, problem with the checkpoint file)."""
    files = LogFiles(path)
    published: SignedCheckpoint | None = None
    problem: str | None = None
    if files.checkpoint.exists():
        try:
            with files.checkpoint.open("rb") as handle:
                published = parse_signed_checkpoint(handle.read(64 * 1024))
        except (OSError, NoteError) as exc:
            problem = f"{files.checkpoint} is not a signed checkpoint: {exc}"
    if published is not None:
        return published.origin, published, problem
    first: bytes | None = None
    with path.open("rb") as handle:
        for raw in read_lines(handle):
            first = raw.data
            break
    if first:
        try:
            kid = parse_line(first).kid
        except RecordFormatError:
            kid = None
        entry = keyring.get(kid) if kid else None
        if entry is not None and entry.origin:
            return entry.origin, None, problem
        return default_origin(first), None, problem
    origins = keyring.origins()
    return (next(iter(origins)) if len(origins) == 1 else "(empty log)"), None, problem


def checkpoint_signer(signed: SignedCheckpoint, keyring: Keyring) -> KeyEntry | None:
    """The keyring key whose signature on the checkpoint verifies, None if none does. Raises
    VerifyInputError when a known key's signature fails (a forged or altered checkpoint)."""
    for entry in keyring.for_origin(signed.origin):
        verdict = signed.signed_by(signed.origin, entry.public_key)
        if verdict is True:
            return entry
        if verdict is False:
            raise VerifyInputError(
                f"the checkpoint's signature by key {entry.kid} does not verify (altered)"
            )
    return None


@dataclass
class VerifyOptions:
    held: Sequence[SignedCheckpoint] = ()
    full: bool = False
    jobs: int = 1
    limit: int = DEFAULT_FAULT_LIMIT
    progress: ProgressFn | None = None
    extra_watch: Sequence[int] = ()


def verify_log(
    path: Path,
    keys: Keyring | Mapping[str, Ed25519PublicKey],
    options: VerifyOptions | None = None,
) -> VerifyResult:
    """Verify one log file. Raises OSError if it cannot be read and VerifyInputError if a held
    checkpoint is unusable. `keys` is a keyring, or kid -> public key (every key valid at any
    time, for the audit role)."""
    opts = options or VerifyOptions()
    keyring = keys if isinstance(keys, Keyring) else _legacy_keyring(keys)
    origin, published, published_problem = log_origin(path, keyring)
    held = [h for h in opts.held if h.origin == origin]
    for signed in held:
        if checkpoint_signer(signed, keyring) is None:
            raise VerifyInputError(
                f"the held checkpoint for {signed.origin} is signed by no key of the keyring"
            )
    watch = {h.size for h in held} | set(opts.extra_watch)
    if published is not None:
        watch.add(published.size)
    name = str(path)
    started = time.monotonic()
    last_report = [started]

    def report(message: str) -> None:
        now = time.monotonic()
        if opts.progress is not None and now - last_report[0] >= _PROGRESS_SECONDS:
            last_report[0] = now
            opts.progress(f"{name}: {message} ({now - started:.0f} s)")

    scan = _hash_pass(path, watch, lambda n: report(f"hashed {n:,} lines"))
    faults: list[Fault] = []
    fault_count = 0
    notes: list[str] = []

    def log_fault(kind: str, message: str) -> None:
        nonlocal fault_count
        fault_count += 1
        faults.append(Fault(kind, message, None, None, True, name))

    # Incremental: the longest held checkpoint the log extends vouches for its records.
    verify_from = 0
    for signed in sorted(held, key=lambda h: h.size, reverse=True):
        if signed.size <= scan.lines and scan.roots.get(signed.size) == signed.root:
            if not opts.full:
                verify_from = signed.size
            break
    result = _verify_lines(path, keyring, origin, scan, verify_from, watch, opts, report)
    fault_count += result.fault_count
    line_faults = result.faults

    for signed in held:
        _compare_held(signed, scan, published, log_fault, notes, keyring, result.signers)
    if published_problem:
        log_fault("bad-checkpoint", published_problem)
    if published is not None:
        _check_published(published, scan, keyring, log_fault, notes, result.signers)
    elif scan.lines:
        notes.append("no published checkpoint beside the log")

    all_faults = sorted([*line_faults, *faults], key=lambda f: (f.line is None, f.line or 0))[
        : opts.limit
    ]
    first = next(
        (f for f in all_faults if f.line is not None), all_faults[0] if all_faults else None
    )
    head_ok = result.last is not None and not result.last.bad and fault_count == 0
    trusted = tuple(keyring.keys[k] for k in result.kids if k in keyring.keys)
    return VerifyResult(
        ok=fault_count == 0,
        records=result.verified + verify_from,
        first_bad_seq=first.seq if first else None,
        first_bad_line=first.line if first else None,
        problem=first.describe() if first else None,
        kids=tuple(result.kids),
        head_seq=result.last.seq if result.last is not None and head_ok else None,
        head_sha256=result.last.digest if result.last is not None and head_ok else None,
        faults=tuple(all_faults),
        fault_count=fault_count,
        lines=scan.lines,
        origin=origin,
        root=scan.root,
        path=name,
        trusted=trusted,
        notes=tuple(notes),
        incremental_from=verify_from,
    )


def _legacy_keyring(keys: Mapping[str, Ed25519PublicKey]) -> Keyring:
    try:
        return Keyring.of(entry_from_public_key(key, kid) for kid, key in keys.items())
    except KeyringError as exc:
        raise VerifyInputError(str(exc)) from None


@dataclass
class _Merged:
    verified: int = 0
    faults: list[Fault] = field(default_factory=list)
    fault_count: int = 0
    kids: list[str] = field(default_factory=list)
    last: _Edge | None = None
    signers: dict[int, _SignerAt] = field(default_factory=dict)


def _verify_lines(
    path: Path,
    keyring: Keyring,
    origin: str,
    scan: _TreeScan,
    verify_from: int,
    watch: set[int],
    opts: VerifyOptions,
    report: Callable[[str], None],
) -> _Merged:
    """Check lines [verify_from, end) in chunks (in parallel when there are several), then
    join the chunks: seq and link across each boundary, and key runs across the whole log."""
    total = scan.lines - verify_from
    merged = _Merged()
    if total <= 0:
        return merged
    ring_json = keyring.to_json()
    jobs: list[_ChunkJob] = []
    start = verify_from
    while start < scan.lines:
        block = start // CHUNK_LINES
        end = min(scan.lines, (block + 1) * CHUNK_LINES)
        offset = scan.offsets[block] if start == block * CHUNK_LINES else -1
        jobs.append(
            _ChunkJob(
                path=str(path),
                start_index=start,
                start_offset=offset,
                count=end - start,
                keyring=ring_json,
                origin=origin,
                known_start=start == 0,
                watch=tuple(sorted(watch)),
                limit=opts.limit,
            )
        )
        start = end
    if jobs[0].start_offset < 0:
        jobs[0].start_offset = _offset_of(path, scan, verify_from)
    parallel = opts.jobs > 1 and len(jobs) > 1
    results: list[_ChunkResult] = []
    if parallel:
        with ProcessPoolExecutor(max_workers=opts.jobs, mp_context=_mp_context()) as pool:
            futures: list[Future[_ChunkResult]] = [pool.submit(_check_chunk, job) for job in jobs]
            done = 0
            for future in futures:
                results.append(future.result())
                done += results[-1].lines
                report(f"verified {done:,} of {total:,} records")
    else:
        done_before = 0

        def tick(n: int) -> None:
            report(f"verified {done_before + n:,} of {total:,} records")

        for job in jobs:
            results.append(_check_chunk(job, tick))
            done_before += results[-1].lines

    previous: _ChunkResult | None = None
    if verify_from > 0:
        previous = _prefix_edge(path, scan, verify_from)
    runs: list[tuple[str, int, int]] = []
    rotations: list[tuple[int, str, str]] = []
    for chunk in results:
        merged.verified += chunk.verified
        merged.fault_count += chunk.fault_count
        merged.faults.extend(chunk.faults)
        merged.signers.update(chunk.signers)
        for kid in chunk.kids:
            if kid not in merged.kids:
                merged.kids.append(kid)
        if previous is not None and previous.last is not None and chunk.first is not None:
            _join(previous, chunk, merged, opts.limit)
        for run in chunk.runs:
            if runs and runs[-1][0] == run[0]:
                runs[-1] = (run[0], runs[-1][1], run[2])
            else:
                runs.append(run)
        rotations.extend(chunk.rotations)
        previous = chunk
    merged.last = results[-1].last
    _check_runs(runs, rotations, keyring, merged, opts.limit)
    merged.faults.sort(key=lambda f: f.line or 0)
    return merged


def _offset_of(path: Path, scan: _TreeScan, index: int) -> int:
    block = index // CHUNK_LINES
    with path.open("rb", buffering=1024 * 1024) as handle:
        for raw in read_lines(
            handle, start_index=block * CHUNK_LINES, start_offset=scan.offsets[block]
        ):
            if raw.index == index:
                return raw.offset
    raise ValueError(f"line {index + 1} not found")


def _prefix_edge(path: Path, scan: _TreeScan, verify_from: int) -> _ChunkResult:
    """The last line a held checkpoint covers, as the edge the first checked chunk joins."""
    offset = _offset_of(path, scan, verify_from - 1)
    with path.open("rb") as handle:
        raw = next(read_lines(handle, start_index=verify_from - 1, start_offset=offset))
    seq: int | None
    try:
        seq = parse_line(raw.data).seq
    except RecordFormatError:
        seq = None
    digest = hashlib.sha256(raw.data).hexdigest()
    edge = _Edge(raw.index, seq, None, digest, False)
    return _ChunkResult(start_index=raw.index, lines=1, first=edge, last=edge)


def _join(before: _ChunkResult, after: _ChunkResult, merged: _Merged, limit: int) -> None:
    """The checks the first line of a chunk could not make alone: its seq and its link to the
    last line of the chunk before."""
    last, first = before.last, after.first
    if last is None or first is None or first.seq is None or last.seq is None:
        return
    index = first.index

    def fault(kind: str, message: str) -> None:
        merged.fault_count += 1
        if len(merged.faults) < limit * 2:
            merged.faults.append(Fault(kind, message, index + 1, first.seq))
        if not first.bad:
            merged.verified -= 1

    expected = last.seq + 1
    if first.seq > expected:
        fault("seq-gap", f"expected seq {expected}, found {first.seq}: records missing here")
    elif first.seq < expected:
        if first.digest == last.digest:
            fault("duplicate", f"a copy of line {index} (seq {first.seq})")
        else:
            fault("seq-back", f"seq {first.seq} after seq {last.seq}: inserted or repeated")
    elif not last.bad and first.prev != last.digest:
        fault("broken-link", f"prev is not the hash of line {index}")


def _check_runs(
    runs: list[tuple[str, int, int]],
    rotations: list[tuple[int, str, str]],
    keyring: Keyring,
    merged: _Merged,
    limit: int,
) -> None:
    """A key the log moved away from may not sign again: after a record by another key, a
    retired key's records are faults, and so are a key's records after the log rotated away
    from it (`audit.key_rotated`)."""
    stepped_down: dict[str, int] = {}
    for index, from_kid, _ in rotations:
        stepped_down.setdefault(from_kid, index)
    seen_other_after: dict[str, bool] = {}
    previous_kids: list[str] = []
    for kid, first, last in runs:
        entry = keyring.get(kid)
        rotated_at = stepped_down.get(kid)
        if rotated_at is not None and last > rotated_at:
            at = max(first, rotated_at + 1)
            merged.fault_count += 1
            if len(merged.faults) < limit * 2:
                merged.faults.append(
                    Fault(
                        "retired-key",
                        f"signed by key {kid} after the log rotated away from it at line "
                        f"{rotated_at + 1}",
                        at + 1,
                        None,
                        False,
                    )
                )
        elif (
            entry is not None
            and entry.retired_at is not None
            and kid in previous_kids
            and seen_other_after.get(kid)
        ):
            merged.fault_count += 1
            if len(merged.faults) < limit * 2:
                merged.faults.append(
                    Fault(
                        "retired-key",
                        f"signed by key {kid} (retired at {entry.retired_at}) after the log had "
                        "moved on to another key",
                        first + 1,
                        None,
                        False,
                    )
                )
        for other in previous_kids:
            if other != kid:
                seen_other_after[other] = True
        previous_kids.append(kid)


def _signer_ok(signed: SignedCheckpoint, signer: KeyEntry, at: _SignerAt | None) -> bool:
    """A checkpoint of size N is signed by the key that signed record N-1, or by the key that
    record handed over to (`audit.key_rotated`)."""
    if at is None or at.kid is None:
        return True  # the record was not checked (covered by a held checkpoint) or is bad
    return signer.kid in (at.kid, at.rotated_to)


def _compare_held(
    signed: SignedCheckpoint,
    scan: _TreeScan,
    published: SignedCheckpoint | None,
    fault: Callable[[str, str], None],
    notes: list[str],
    keyring: Keyring,
    signers: Mapping[int, _SignerAt],
) -> None:
    size = signed.size
    if size == 0:
        notes.append("held checkpoint: size 0 (nothing to compare)")
        return
    if scan.lines == 0:
        fault("empty", f"the log is empty, but the held checkpoint covers {size} records")
        return
    if scan.lines < size:
        if published is not None and published.size > scan.lines:
            fault(
                "truncated",
                f"cut-off tail: the log holds {scan.lines} records, the held checkpoint covers "
                f"{size} and the log's own checkpoint {published.size}: records were cut from "
                "its end",
            )
        elif published is not None and scan.roots.get(published.size) == published.root:
            fault(
                "rollback",
                f"an older copy: the log and its own checkpoint (size {published.size}) end "
                f"before the held checkpoint's {size} records: rolled back",
            )
        else:
            fault(
                "truncated",
                f"cut-off tail: the log ends at {scan.lines} records, before the held "
                f"checkpoint's {size}",
            )
        return
    if scan.roots.get(size) != signed.root:
        fault(
            "fork",
            f"the log's first {size} records are not those the held checkpoint commits to "
            f"(root {scan.roots.get(size, b'').hex()[:16]}... vs {signed.root.hex()[:16]}...): "
            "a forked or rewritten log",
        )
        return
    signer = checkpoint_signer(signed, keyring)
    if signer is not None and not _signer_ok(signed, signer, signers.get(size)):
        fault(
            "checkpoint-signer",
            f"the held checkpoint of size {size} is signed by {signer.kid}, "
            "not by the key that signed its last record",
        )
        return
    notes.append(
        f"held checkpoint: size {size}, consistent: the log extends it by {scan.lines - size} "
        "records"
    )


def _check_published(
    published: SignedCheckpoint,
    scan: _TreeScan,
    keyring: Keyring,
    fault: Callable[[str, str], None],
    notes: list[str],
    signers: Mapping[int, _SignerAt],
) -> None:
    try:
        signer = checkpoint_signer(published, keyring)
    except VerifyInputError as exc:
        fault("bad-checkpoint", f"the log's published checkpoint: {exc}")
        return
    if signer is None:
        fault("bad-checkpoint", "the log's published checkpoint is signed by no key of the keyring")
        return
    if published.size > scan.lines:
        fault(
            "truncated",
            f"cut-off tail: the log's own checkpoint covers {published.size} records but the "
            f"file holds {scan.lines}",
        )
        return
    if scan.roots.get(published.size) != published.root:
        fault(
            "checkpoint-mismatch",
            f"the log's first {published.size} records are not those its published checkpoint "
            "commits to: edited after publication, or the checkpoint is from a fork",
        )
        return
    if not _signer_ok(published, signer, signers.get(published.size)):
        fault(
            "checkpoint-signer",
            f"the published checkpoint is signed by {signer.kid}, not by the key of record "
            f"{published.size - 1}",
        )
        return
    notes.append(f"published checkpoint: size {published.size}, consistent, signed by {signer.kid}")


def _mp_context() -> Any:
    # fork is cheap and safe while this process runs no other thread; otherwise spawn.
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    return multiprocessing.get_context(method)


# --- sets of logs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetResult:
    """Every log of a set, and the faults between them (forks, keys shared between logs,
    held checkpoints for a log not in the set)."""

    logs: tuple[VerifyResult, ...]
    faults: tuple[Fault, ...]

    @property
    def ok(self) -> bool:
        return not self.faults and all(r.ok for r in self.logs)


def verify_set(
    paths: Sequence[Path], keyring: Keyring, options: VerifyOptions | None = None
) -> SetResult:
    """Verify several logs (each writer's) with one keyring: each log on its own, then across
    them: logs of one origin must be copies or prefixes of each other (else a fork), no key
    signs two logs, and every held checkpoint names a log of the set."""
    opts = options or VerifyOptions()
    counts = {path: count_lines(path) for path in paths}
    origins = {path: log_origin(path, keyring)[0] for path in paths}
    results: list[VerifyResult] = []
    for path in paths:
        same = [counts[p] for p in paths if p != path and origins[p] == origins[path]]
        per = VerifyOptions(
            held=opts.held,
            full=opts.full,
            jobs=opts.jobs,
            limit=opts.limit,
            progress=opts.progress,
            extra_watch=tuple(same),
        )
        results.append(verify_log(path, keyring, per))
    faults: list[Fault] = []
    by_origin: dict[str, list[tuple[Path, VerifyResult]]] = {}
    for path, result in zip(paths, results, strict=True):
        by_origin.setdefault(result.origin, []).append((path, result))
    for origin, members in by_origin.items():
        for i, (path_a, a) in enumerate(members):
            for path_b, b in members[i + 1 :]:
                shorter, longer = (path_a, path_b) if a.lines <= b.lines else (path_b, path_a)
                small = counts[shorter]
                long_root = _root_at(longer, small)
                short_root = _root_at(shorter, small)
                if long_root != short_root:
                    faults.append(
                        Fault(
                            "fork",
                            f"{shorter} and {longer} are both {origin} but differ within their "
                            f"first {small} records: two histories of one log",
                        )
                    )
    signers: dict[str, str] = {}
    for result in results:
        for kid in result.kids:
            other = signers.setdefault(kid, result.origin)
            if other != result.origin:
                faults.append(
                    Fault("shared-key", f"key {kid} signs two logs, {other} and {result.origin}")
                )
    names = {r.origin for r in results}
    for signed in opts.held:
        if signed.origin not in names:
            faults.append(
                Fault(
                    "missing-log",
                    f"a checkpoint is held for {signed.origin} (size {signed.size}), but no log "
                    f"of that origin was handed over (logs: {', '.join(sorted(names))})",
                )
            )
    return SetResult(tuple(results), tuple(faults))


def _root_at(path: Path, size: int) -> bytes:
    return _hash_pass(path, [size], None).roots.get(size, b"")


# --- the command --------------------------------------------------------------------------------


def find_logs(paths: Iterable[Path]) -> list[Path]:
    """Log files among the paths: a file as given, a directory searched for `*.jsonl`."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.jsonl") if p.is_file()))
        else:
            found.append(path)
    return found


def load_held(paths: Iterable[Path]) -> list[SignedCheckpoint]:
    held = []
    for path in paths:
        try:
            with path.open("rb") as handle:
                held.append(parse_signed_checkpoint(handle.read(64 * 1024)))
        except OSError as exc:
            raise VerifyInputError(f"cannot read held checkpoint {path}: {exc.strerror}") from None
        except NoteError as exc:
            raise VerifyInputError(f"held checkpoint {path}: {exc}") from None
    return held


def format_result(result: VerifyResult, *, show_path: bool) -> list[str]:
    """The report lines of one log: `OK: ...` or one `FAILED at ...` line per fault shown."""
    where = f" ({result.path})" if show_path else ""
    lines: list[str] = []
    if result.ok:
        kids = ", ".join(result.kids) if result.kids else "(none: empty log)"
        head = (
            f"; head seq {result.head_seq} sha256 {result.head_sha256}"
            if result.head_seq is not None
            else ""
        )
        lines.append(
            f"OK: {result.records} records verified, chain intact, signatures by kid(s) "
            f"{kids}{head}{where}"
        )
    else:
        for fault in result.faults:
            if fault.line is None:
                lines.append(f"FAILED [{fault.kind}]{where}: {fault.message}")
            else:
                lines.append(f"FAILED at {fault.where()} [{fault.kind}]{where}: {fault.message}")
        hidden = result.fault_count - len(result.faults)
        more = f" ({hidden} more not shown: raise --max-faults)" if hidden > 0 else ""
        lines.append(
            f"FAILED: {result.fault_count} fault(s) in {result.lines} line(s){more}; "
            f"{result.records} record(s) verified{where}"
        )
    incremental = (
        f"; records 0..{result.incremental_from - 1} checked by the held checkpoint's root"
        if result.incremental_from
        else ""
    )
    lines.append(
        f"  log {result.path}: origin {result.origin}, {result.lines} line(s), RFC 9162 root "
        f"{result.root.hex()}{incremental}"
    )
    lines.extend(f"  {note}" for note in result.notes)
    return lines


def verify_command(
    log_path: Path | Sequence[Path],
    key_path: Path,
    *,
    held_paths: Sequence[Path] = (),
    full: bool = False,
    jobs: int | None = None,
    limit: int = DEFAULT_FAULT_LIMIT,
    quiet_progress: bool = False,
) -> int:
    """`chartgate audit verify LOG... --keyring FILE [--checkpoint HELD]`: print a report;
    return 0 if every log verifies, 1 if any fault was found, 2 if an input cannot be used."""
    import sys

    try:
        keyring = Keyring.load(key_path)
    except KeyringError as exc:
        print(
            f"error: cannot load public key(s) from {key_path}: {exc} "
            "(expected an audit keyring, or an Ed25519 JWK or JWKS with kids)",
            file=sys.stderr,
        )
        return 2
    paths = find_logs([log_path] if isinstance(log_path, Path) else log_path)
    if not paths:
        print("error: no audit log found", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        if not quiet_progress:
            print(f"progress: {message}", file=sys.stderr, flush=True)

    try:
        held = load_held(held_paths)
        options = VerifyOptions(
            held=held,
            full=full,
            jobs=jobs if jobs is not None else (os.cpu_count() or 1),
            limit=max(1, limit),
            progress=progress,
        )
        outcome = verify_set(paths, keyring, options)
    except VerifyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read audit log: {exc}", file=sys.stderr)
        return 2
    several = len(outcome.logs) > 1
    for result in outcome.logs:
        for line in format_result(result, show_path=several):
            print(line)
    for fault in outcome.faults:
        print(f"FAILED [{fault.kind}]: {fault.message}")
    used = {k.kid: k for r in outcome.logs for k in r.trusted}
    source = keyring.source or str(key_path)
    if used:
        print(f"  trusted keys (from {source}):")
        for entry in used.values():
            print(f"    {entry.describe()}")
    return 0 if outcome.ok else 1
