"""Append-only audit log writer: RFC 8785 records, RFC 8032 signatures, group commit, RFC 9162 / C2SP checkpoints.

One writer per file (an exclusive flock). On open it checks the tail it will chain onto against
its own published checkpoint and keyring, cuts off a torn tail (keeping the bytes) and records
that it did, and refuses to reuse a sequence number a checkpoint it published already covers.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chartgate.keys import SigningKey
from sidecar.audit.events import AuditEvent
from sidecar.audit.files import LogFiles, RawLine, default_origin, read_lines
from sidecar.audit.keyring import (
    AUDIT_ROLE,
    KeyEntry,
    Keyring,
    KeyringError,
    entry_from_public_key,
    sync_directory,
)
from sidecar.audit.merkle import CompactTree, leaf_hash, root_from_nodes
from sidecar.audit.note import (
    Checkpoint,
    NoteError,
    SignedCheckpoint,
    check_name,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from sidecar.audit.records import (
    GENESIS_PREV,
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    AuditRecord,
    RecordFormatError,
    check_kind,
    encode_head,
    parse_line,
    seal,
    signature_valid,
    utc_timestamp,
)

log = logging.getLogger("chartgate.audit")

# fdatasync is enough for an append: it flushes the data and the file size needed to read it
# back, and skips the mtime update fsync would also force. Where the OS lacks it, use fsync.
_sync_file = getattr(os, "fdatasync", os.fsync)

# Records not asked to be durable wait in memory for the next flush; past this many bytes the
# appender flushes itself, so a run of them (e.g. refused proposals) cannot grow memory.
_FLUSH_BYTES = 256 * 1024


class _Request:
    """One durable append on its way: the canonical head, then the record once a leader seals
    it (and `seq`, which a flush must cover). A request with no kind is a sync() marker: its
    `seq` is the last record sealed when a flush took it."""

    __slots__ = ("body", "head", "kid", "kind", "record", "seq")

    def __init__(self, head: bytes, body: Mapping[str, Any], kind: str, kid: str) -> None:
        self.head = head
        self.body = body
        self.kind = kind
        self.kid = kid
        self.record: AuditRecord | None = None
        self.seq: int | None = None


def _covered(what: _Request | int, durable_seq: int) -> bool:
    seq = what if isinstance(what, int) else what.seq
    return seq is not None and seq <= durable_seq


_GATHER_YIELDS = 8

_gates = threading.local()


def _gate() -> threading.Lock:
    """This thread's gate: a lock held by default, which a flush leader releases to wake it."""
    gate: threading.Lock | None = getattr(_gates, "lock", None)
    if gate is None:
        gate = threading.Lock()
        gate.acquire()
        _gates.lock = gate
    return gate


ROTATED_KIND = "audit.key_rotated"
RECOVERED_KIND = "audit.recovered"


class AuditLogCorrupt(Exception):
    """The log cannot be continued safely: its tail does not verify, records a published
    checkpoint covers are missing or differ, or the keys needed to check it are unknown."""


class AuditLogUnavailable(RuntimeError):
    """The log cannot take records: it is closed, another writer holds it, or a write or fsync
    failed (after which nothing more is appended, since what reached the disk is unknown)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a caller can hand on as proof-to-be that a record is in the log: the record's leaf
    index (its seq) and leaf hash, and a signed checkpoint whose tree contains it. An auditor
    turns it into a proof with `chartgate audit prove inclusion`."""

    origin: str
    index: int
    leaf_hash: str
    checkpoint: str

    @property
    def size(self) -> int:
        return parse_signed_checkpoint(self.checkpoint).size


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The tree as of a flush: what a checkpoint of that flush signs, and with which key."""

    size: int
    nodes: tuple[bytes, ...]
    key: Ed25519PrivateKey


@dataclass
class _Opened:
    next_seq: int
    prev: str
    tree: CompactTree
    keyring: Keyring
    keyring_existed: bool
    origin: str
    published: SignedCheckpoint | None
    first_ts: str | None
    last_kid: str | None
    last_ts: str | None
    torn: dict[str, Any] | None


class AuditLog:
    """One writer's handle on an audit log file.

    `append` returns only once the record is on disk. Concurrent appenders share fsyncs (group
    commit): each signs its record under a lock and queues its line; the first waiter to find
    no flush running becomes the leader, takes every queued line, writes them with one write()
    and one fdatasync, and acknowledges every record it covered. Signing continues while the
    leader waits on the disk, so under load one fsync acknowledges many records.

    After each flush the leader publishes a signed checkpoint (size and RFC 9162 root) to
    `<log>.checkpoint`, at most every `checkpoint_every` seconds (0: every flush). Every key
    that signs the log is kept in `<log>.keyring.json` with its validity window.

    Only one AuditLog may hold a file at a time (an exclusive flock, across processes too): two
    writers would fork the chain."""

    def __init__(
        self,
        path: Path,
        key: SigningKey,
        *,
        origin: str | None = None,
        trusted: Iterable[KeyEntry] = (),
        checkpoint_every: float = 0.0,
    ) -> None:
        self._path = path
        self._files = LogFiles(path)
        self._checkpoint_every = checkpoint_every
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise AuditLogUnavailable(
                    f"audit log {path} is already open for writing by another AuditLog or process"
                ) from exc
            own = entry_from_public_key(key.public_key, key.kid)
            opened = _open_state(fd, self._files, origin, list(trusted), own)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._origin = opened.origin
        self._next_seq = opened.next_seq
        self._prev = opened.prev
        self._tree = opened.tree
        self._last_ts = opened.last_ts or ""
        self._keyring = opened.keyring
        self._key = key
        self._kid = key.kid
        # Resolved once: SigningKey.private_key goes through the JWK object on every access.
        self._private_key = key.private_key

        # _write_lock orders seq, prev, the tree and the queued lines. _sync_lock guards the
        # durability bookkeeping and the waiters. A thread never holds one while taking the
        # other, so they cannot deadlock.
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._waiters: list[tuple[_Request | int, threading.Lock]] = []
        self._queue: list[_Request] = []
        self._last_batch = 0
        self._checkpoint_lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._sealed_seq = self._next_seq - 1
        self._durable_seq = self._next_seq - 1
        self._syncing = False
        self._failure: BaseException | None = None
        self._closed = False
        self._fsyncs = 0
        self._published = opened.published
        self._last_publish = 0.0
        self._checkpoint_fd: int | None = None
        self._durable_snapshot = _Snapshot(self._tree.size, self._tree.nodes, self._private_key)

        try:
            self._adopt_key(opened)
            if opened.torn is not None:
                self.append(RECOVERED_KIND, opened.torn)
            if self._published is None or self._published.size < self._tree.size:
                self._publish(self._durable_snapshot, force=True)
        except BaseException:
            os.close(fd)
            if self._checkpoint_fd is not None:
                os.close(self._checkpoint_fd)
            self._closed = True
            raise

    # --- properties -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def files(self) -> LogFiles:
        return self._files

    @property
    def origin(self) -> str:
        """The log's name in its checkpoints (C2SP tlog-checkpoint origin)."""
        return self._origin

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @property
    def fsync_count(self) -> int:
        """How many fsyncs this handle has made (fewer than appends when group commit works)."""
        return self._fsyncs

    @property
    def size(self) -> int:
        """Records in the log, durable or queued."""
        with self._write_lock:
            return self._next_seq

    # --- appending --------------------------------------------------------------------------

    def append(self, kind: str, body: Mapping[str, Any], *, durable: bool = True) -> AuditRecord:
        """Sign and append one record and return it once it is durable.

        `body` holds identifiers and hashes only, never clinical text: ids of the proposal,
        patient, encounter, agent, reviewer and tenant, payload hashes, codes and decisions
        (`sidecar.audit.events` has a typed event per kind). Raises ValueError for a bad kind or
        a body value that is not plain JSON (or too long, or too deep), and AuditLogUnavailable
        if the log is closed or has failed.

        `durable=False` returns once the record is signed and queued; the next durable append,
        sync() or close() writes and syncs it too (one fsync covers every earlier line). A caller
        that writes several records before anything leaves the process (e.g. `proposal.received`
        then `policy.decision`) so pays for one fsync instead of several. Never use it for a
        record that must be on disk before an external effect."""
        check_kind(kind)
        kid = self._kid
        # Canonicalizing needs nothing from the chain: do it outside the lock so it overlaps
        # other writers' signing and the leader's fsync.
        clean, head = encode_head(body, kid, kind)
        if len(head) > MAX_HEAD_BYTES:
            raise ValueError(
                f"audit record of {len(head)} bytes is too large (limit {MAX_LINE_BYTES}); "
                "record identifiers and hashes, not content"
            )
        if durable:
            request = _Request(head, clean, kind, kid)
            with self._write_lock:
                self._check_usable()
                self._queue.append(request)
            # The flush leader seals it with the rest of the queue. (Sealing it here when no one
            # else is, to overlap a running fsync, measured slower: more GIL hand-offs.)
            self._wait_durable(request)
            assert request.record is not None  # a flush that covered it sealed it
            return request.record
        with self._write_lock:
            self._check_usable()
            record = self._seal_request_locked(_Request(head, clean, kind, kid))
            flush = self._pending_bytes >= _FLUSH_BYTES
        if flush:
            self.sync()
        return record

    def append_event(self, event: AuditEvent, *, durable: bool = True) -> AuditRecord:
        """Append a typed event (sidecar.audit.events): `append(event.kind, event.body())`."""
        return self.append(event.kind, event.body(), durable=durable)

    def _seal_queue_locked(self) -> None:
        queue, self._queue = self._queue, []
        for request in queue:
            if request.kind:
                self._seal_request_locked(request)
            else:
                request.seq = self._sealed_seq  # a sync() marker: done with the next flush

    def _seal_request_locked(self, request: _Request) -> AuditRecord:
        if request.kid != self._kid:  # the key was rotated since the head was encoded
            request.body, request.head = encode_head(request.body, self._kid, request.kind)
        record = self._seal_locked(request.head, request.body, request.kind)
        request.record, request.seq = record, record.seq
        return record

    def _seal_locked(
        self, head: bytes, body: Mapping[str, Any], kind: str, ts: str | None = None
    ) -> AuditRecord:
        seq = self._next_seq
        record = seal(
            head,
            body=body,
            kind=kind,
            kid=self._kid,
            prev=self._prev,
            seq=seq,
            ts=ts or self._timestamp_locked(),
            key=self._private_key,
        )
        line = record.line
        self._pending.append(line + b"\n")
        self._pending_bytes += len(line) + 1
        self._tree.append(leaf_hash(line))
        self._next_seq = seq + 1
        self._prev = record.digest
        self._sealed_seq = seq
        return record

    def _timestamp_locked(self) -> str:
        # Never backwards along seq, even if the wall clock steps back: key windows and
        # auditors' time ranges rely on ts ordering.
        now = utc_timestamp()
        if now < self._last_ts:
            now = self._last_ts
        self._last_ts = now
        return now

    def sync(self) -> None:
        """Wait until every record appended so far is durable (group-committed like append)."""
        what: _Request | int
        with self._write_lock:
            if self._queue:
                # Requests are queued: the flush that takes this marker seals and writes them.
                what = _Request(b"", {}, "", "")
                self._queue.append(what)
            else:
                what = self._sealed_seq
        self._wait_durable(what)

    def _check_usable(self) -> None:
        if self._closed:
            raise AuditLogUnavailable(f"audit log {self._path} is closed")
        if self._failure is not None:
            raise AuditLogUnavailable(
                f"audit log {self._path} failed earlier and takes no more records: {self._failure}"
            ) from self._failure

    def _wait_durable(self, what: _Request | int) -> None:
        """Return once a record (a queued request, or a seq already sealed) is on disk.

        One thread at a time leads a flush: it seals every queued request (the only signer, so
        appenders never contend for the chain), writes them with one write and one fdatasync.
        The others each sleep on a gate of their own (a lock the leader releases), so a flush
        wakes exactly the threads it covered plus one to lead the next: no herd contending for
        one condition. Measured here, a thread hand-off costs ~20 us of CPU, more than half a
        signature: each appender is woken once."""
        while True:
            with self._sync_lock:
                if _covered(what, self._durable_seq):
                    return
                if self._failure is not None:
                    raise AuditLogUnavailable(
                        f"audit record may not be durable: {self._failure}"
                    ) from self._failure
                if not self._syncing:
                    self._syncing = True
                    break
                gate = _gate()
                self._waiters.append((what, gate))
            gate.acquire()  # released when a flush covered it, or to lead the next one
        error: BaseException | None = None
        snapshot: _Snapshot | None = None
        try:
            target, snapshot = self._flush()
        except BaseException as exc:
            error = exc
        with self._sync_lock:
            self._syncing = False
            if error is not None:
                # After a failed write or fsync what is on disk is unknown (the kernel may have
                # dropped the dirty pages): fail closed for this and every later record.
                self._failure = error
                woken, self._waiters = self._waiters, []
            else:
                self._fsyncs += 1
                self._durable_seq = max(self._durable_seq, target)
                self._durable_snapshot = snapshot  # type: ignore[assignment]
                woken = [w for w in self._waiters if _covered(w[0], target)]
                rest = [w for w in self._waiters if not _covered(w[0], target)]
                # The first uncovered waiter leads the next flush (it re-checks and finds none
                # running); the rest sleep on until a flush covers them.
                woken += rest[:1]
                self._waiters = rest[1:]
        for _, gate in woken:
            gate.release()
        if error is not None:
            raise AuditLogUnavailable(f"audit record may not be durable: {error}") from error
        if snapshot is not None:
            # After the waiters are released: publishing costs a signature, not their latency.
            self._publish(snapshot)

    def _flush(self) -> tuple[int, _Snapshot]:
        # The appenders the last flush woke are about to queue their next records: yield the GIL
        # a few times so this flush carries them (fewer, fuller fsyncs) rather than the next.
        for _ in range(_GATHER_YIELDS if self._last_batch > 1 else 0):
            if len(self._queue) + len(self._pending) >= self._last_batch:
                break
            time.sleep(0)
        with self._write_lock:
            self._seal_queue_locked()
            self._last_batch = len(self._pending)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            target = self._sealed_seq
            snapshot = _Snapshot(self._tree.size, self._tree.nodes, self._private_key)
        view = memoryview(data)
        done = 0
        while done < len(data):
            done += os.write(self._fd, view[done:])
        _sync_file(self._fd)
        return target, snapshot

    # --- checkpoints and receipts -----------------------------------------------------------

    def _publish(self, snapshot: _Snapshot, *, force: bool = False) -> SignedCheckpoint | None:
        """Sign a checkpoint of a durable snapshot and replace `<log>.checkpoint` with it
        (atomically: a temporary file renamed over it). Failing to publish is logged, not
        raised: the records are durable either way."""
        if snapshot.size == 0:
            return None
        with self._checkpoint_lock:
            current = self._published
            if current is not None and current.size >= snapshot.size:
                return current
            now = time.monotonic()
            if not force and now - self._last_publish < self._checkpoint_every:
                return current
            signed = sign_checkpoint(
                Checkpoint(self._origin, snapshot.size, root_from_nodes(snapshot.nodes)),
                snapshot.key,
            )
            try:
                self._write_checkpoint(signed.text.encode("utf-8"))
            except OSError as exc:
                log.warning("audit checkpoint not published: %s", exc)
                return current
            self._published = signed
            self._last_publish = now
            return signed

    def _write_checkpoint(self, data: bytes) -> None:
        """Overwrite `<log>.checkpoint` in place with one pwrite. A log's notes never get
        shorter (same origin and signature line; the size only gains digits), so every byte of
        the old note is overwritten by the one syscall, which a killed process cannot tear.
        Not fsynced: it follows records that are, and after a power loss an older checkpoint
        is still true of the log. (A rename over the old file would be atomic too, but ext4
        flushes the new file's data on such a rename, costing an fsync per flush.)"""
        if self._checkpoint_fd is None:
            self._checkpoint_fd = os.open(
                self._files.checkpoint, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        fd = self._checkpoint_fd
        os.pwrite(fd, data, 0)
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))

    def checkpoint(self) -> SignedCheckpoint | None:
        """The latest signed checkpoint covering every durable record (published now if the
        last one is older); None for an empty log."""
        self.sync()
        with self._sync_lock:
            snapshot = self._durable_snapshot
        return self._publish(snapshot, force=True)

    def receipt(self, record: AuditRecord | int) -> Receipt:
        """A receipt for a record (or a seq): its leaf index and a signed checkpoint that
        contains it, published now if none yet does. Waits for the record to be durable."""
        seq = record if isinstance(record, int) else record.seq
        if not 0 <= seq < self.size:
            raise ValueError(f"no record with seq {seq} in this log")
        self.sync()
        with self._sync_lock:
            snapshot = self._durable_snapshot
        signed = self._published
        if signed is None or signed.size <= seq:
            signed = self._publish(snapshot, force=True)
        if signed is None or signed.size <= seq:
            raise AuditLogUnavailable("no checkpoint covering the record could be published")
        leaf = "" if isinstance(record, int) else leaf_hash(record.line).hex()
        return Receipt(origin=self._origin, index=seq, leaf_hash=leaf, checkpoint=signed.text)

    # --- keys -------------------------------------------------------------------------------

    def _adopt_key(self, opened: _Opened) -> None:
        """Put this writer's key in the keyring, and record a switch from the key that signed
        the last record (a rotation by restart) in the log itself."""
        entry = self._keyring.get(self._kid)
        if entry is not None and entry.retired_at is not None:
            raise AuditLogCorrupt(
                f"key {self._kid} was retired at {entry.retired_at} (keyring "
                f"{self._files.keyring}); open the log with the current key"
            )
        if entry is None:
            if opened.last_kid == self._kid and not opened.keyring_existed:
                # A log from before keyrings, continued by the key that wrote it.
                since = opened.first_ts
            else:
                since = self._timestamp_locked()
            entry = entry_from_public_key(
                self._key.public_key,
                self._kid,
                role=AUDIT_ROLE,
                origin=self._origin,
                not_before=since,
            )
            self._save_keyring(self._keyring.with_entry(entry))
        elif not opened.keyring_existed:
            self._save_keyring(self._keyring)
        if opened.last_kid is not None and opened.last_kid != self._kid:
            self._rotate_record(opened.last_kid, self._key, "writer opened with a new key")

    def rotate(self, new_key: SigningKey, *, reason: str = "key rotation") -> AuditRecord:
        """Switch to `new_key` without stopping: append `audit.key_rotated` signed by the old key
        (naming the new kid and thumbprint), retire the old key at that record's time and start
        the new one's window there, and sign every later record and checkpoint with the new key.
        Records before still verify under the old key."""
        if new_key.kid == self._kid:
            raise ValueError("the log already signs with this key")
        return self._rotate_record(self._kid, new_key, reason)

    def _rotate_record(self, from_kid: str, new_key: SigningKey, reason: str) -> AuditRecord:
        new_entry = entry_from_public_key(
            new_key.public_key, new_key.kid, role=AUDIT_ROLE, origin=self._origin
        )
        body = {
            "from_kid": from_kid,
            "to_kid": new_key.kid,
            "to_thumbprint": new_entry.thumbprint,
            "reason": reason[:200],
        }
        with self._write_lock:
            self._check_usable()
            ts = self._timestamp_locked()
            # The keyring is written before the record that relies on it, so a crash between
            # them leaves a key that is allowed but unused, never a record no key allows.
            ring = (
                self._keyring.retire(from_kid, ts)
                if from_kid in self._keyring.keys
                else self._keyring
            )
            current = ring.get(new_key.kid)
            ring = ring.with_entry(
                replace(current, retired_at=None)
                if current is not None
                else replace(new_entry, not_before=ts)
            )
            self._save_keyring(ring)
            if from_kid == self._kid:
                # In-process rotation: the old key signs the handover, then steps down.
                clean, head = encode_head(body, self._kid, ROTATED_KIND)
                record = self._seal_locked(head, clean, ROTATED_KIND, ts)
                self._switch_key_locked(new_key)
            else:
                # Rotation by restart: the old key is not here; the new one records the switch.
                self._switch_key_locked(new_key)
                clean, head = encode_head(body, self._kid, ROTATED_KIND)
                record = self._seal_locked(head, clean, ROTATED_KIND, ts)
        self._wait_durable(record.seq)
        return record

    def _switch_key_locked(self, key: SigningKey) -> None:
        self._key = key
        self._kid = key.kid
        self._private_key = key.private_key

    def _save_keyring(self, ring: Keyring) -> None:
        ring.save(self._files.keyring)
        self._keyring = ring

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Make everything appended durable, publish a final checkpoint, release the file.
        Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True  # no new records from here on
        error: BaseException | None = None
        try:
            if self._failure is None:
                self.sync()
                with self._sync_lock:
                    snapshot = self._durable_snapshot
                self._publish(snapshot, force=True)
        except BaseException as exc:
            error = exc
        finally:
            # A flush another thread leads (for a record of its own) must end before the file.
            while True:
                with self._sync_lock:
                    if not self._syncing:
                        os.close(self._fd)
                        if self._checkpoint_fd is not None:
                            os.close(self._checkpoint_fd)
                        break
                time.sleep(0.001)
        if error is not None:
            raise error

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- opening: what is there, and whether it can be continued ------------------------------------


def _open_state(
    fd: int, files: LogFiles, origin: str | None, trusted: list[KeyEntry], own: KeyEntry
) -> _Opened:
    keyring_existed = files.keyring.exists()
    try:
        ring = Keyring.load(files.keyring, legacy=False) if keyring_existed else Keyring.of([])
        for entry in trusted:
            if entry.kid not in ring.keys:
                ring = ring.with_entry(entry)
    except KeyringError as exc:
        raise AuditLogCorrupt(f"audit keyring {files.keyring}: {exc}") from None

    published: SignedCheckpoint | None = None
    if files.checkpoint.exists():
        try:
            published = parse_signed_checkpoint(files.checkpoint.read_bytes())
        except (OSError, NoteError) as exc:
            raise AuditLogCorrupt(f"published checkpoint {files.checkpoint}: {exc}") from None
        if not any(published.signed_by(published.origin, k.public_key) for k in ring.audit_keys()):
            raise AuditLogCorrupt(
                f"published checkpoint {files.checkpoint} is not signed by a key of "
                f"{files.keyring}: it was replaced, or the keyring was"
            )

    # The writer's own key may check the tail too (a log from before keyrings was written by it).
    checking = ring if own.kid in ring.keys else ring.with_entry(own)
    scan = _scan(fd, files, published, checking)
    ring_origins = ring.origins()
    chosen = origin or (published.origin if published else None)
    if chosen is None and len(ring_origins) == 1:
        chosen = next(iter(ring_origins))
    chosen = chosen or default_origin(scan.first_line)
    check_name(chosen)
    if published is not None and published.origin != chosen:
        raise AuditLogCorrupt(
            f"audit log {files.log} is {published.origin!r} (its published checkpoint), "
            f"not {chosen!r}; a new origin is a new log"
        )
    if ring_origins - {chosen}:
        raise AuditLogCorrupt(
            f"keyring {files.keyring} binds keys to {sorted(ring_origins)}, not {chosen!r}"
        )
    return _Opened(
        next_seq=scan.tree.size,
        prev=scan.prev,
        tree=scan.tree,
        keyring=ring,
        keyring_existed=keyring_existed,
        origin=chosen,
        published=published,
        first_ts=scan.first_ts,
        last_kid=scan.last_kid,
        last_ts=scan.last_ts,
        torn=scan.torn,
    )


@dataclass
class _Scan:
    tree: CompactTree
    prev: str
    first_line: bytes | None
    first_ts: str | None
    last_kid: str | None
    last_ts: str | None
    torn: dict[str, Any] | None


def _scan(fd: int, files: LogFiles, published: SignedCheckpoint | None, ring: Keyring) -> _Scan:
    """Hash every line into the tree (one SHA-256 a record: opening costs about a second per
    million records), compare the tree with the published checkpoint at its size, verify every
    record after it (signature, seq, chain) and cut off a torn tail."""
    size = os.fstat(fd).st_size
    tree = CompactTree()
    checked_from = published.size if published else None
    previous: RawLine | None = None
    last: RawLine | None = None
    prev_digest = GENESIS_PREV
    first_line: bytes | None = None
    bad: tuple[RawLine, str] | None = None
    junk: list[RawLine] = []
    with open(files.log, "rb", buffering=1024 * 1024) as handle:
        for raw in read_lines(handle):
            if bad is not None:
                junk.append(raw)
                if raw.terminated and _is_record(raw):
                    # A well-formed record after the damage: not a torn write.
                    raise AuditLogCorrupt(_damage(files, bad))
                continue
            if not raw.terminated:
                bad = (raw, "torn: no newline at the end of the file")
                junk.append(raw)
                continue
            if raw.oversized:
                bad = (raw, "a line longer than any record")
                junk.append(raw)
                continue
            if first_line is None:
                first_line = raw.data
            if checked_from is not None and raw.index >= checked_from:
                problem = _tail_problem(raw, prev_digest, ring)
                if problem is not None:
                    bad = (raw, problem)
                    junk.append(raw)
                    continue
            tree.append(leaf_hash(raw.data))
            if (
                published is not None
                and tree.size == published.size
                and tree.root() != published.root
            ):
                raise AuditLogCorrupt(
                    f"audit log {files.log} is not the log its published checkpoint "
                    f"describes: the root of its first {published.size} records differs "
                    "(a record was edited, deleted or inserted, or the file was replaced); "
                    "keep the file and run `chartgate audit verify` on it"
                )
            previous, last = last, raw
            prev_digest = hashlib.sha256(raw.data).hexdigest()

    good = tree.size
    if published is not None and good < published.size:
        raise AuditLogCorrupt(
            f"audit log {files.log} holds {good} good records but its published checkpoint "
            f"covers {published.size}: records were cut off or damaged. The writer will not "
            "reuse their sequence numbers; restore the file from a copy (or move it aside to "
            "start a new log) and keep this one as evidence"
        )
    if checked_from is None and last is not None:
        # No checkpoint (a log from before them): check at least the record chained onto, and
        # its link to the one before.
        before = hashlib.sha256(previous.data).hexdigest() if previous else GENESIS_PREV
        problem = _tail_problem(last, before, ring)
        if problem is not None:
            raise AuditLogCorrupt(_damage(files, (last, problem)))
    torn = None
    if junk:
        if not all(_torn_like(raw) for raw in junk):
            raise AuditLogCorrupt(_damage(files, bad or (junk[0], "damaged")))
        torn = _cut(fd, files, junk[0].offset, size, len(junk))
    try:
        last_record = parse_line(last.data) if last is not None else None
    except RecordFormatError as exc:
        raise AuditLogCorrupt(_damage(files, (last, str(exc)))) from None  # type: ignore[arg-type]
    return _Scan(
        tree=tree,
        prev=prev_digest if last is not None else GENESIS_PREV,
        first_line=first_line,
        first_ts=_ts_of(first_line),
        last_kid=last_record.kid if last_record else None,
        last_ts=last_record.ts if last_record else None,
        torn=torn,
    )


def _ts_of(line: bytes | None) -> str | None:
    if line is None:
        return None
    try:
        return parse_line(line).ts
    except RecordFormatError:
        return None


def _tail_problem(raw: RawLine, prev_digest: str, ring: Keyring) -> str | None:
    try:
        record = parse_line(raw.data)
    except RecordFormatError as exc:
        return f"not a record ({exc})"
    entry = ring.get(record.kid)
    if entry is None:
        return (
            f"signed by key {record.kid!r}, which is not in the keyring: pass its public key "
            "(AuditLog(trusted=...)) to continue this log"
        )
    if not signature_valid(record, entry.public_key):
        return f"bad signature under key {record.kid!r}"
    if record.seq != raw.index:
        return f"seq {record.seq} at line {raw.index + 1}"
    if record.prev != prev_digest:
        return "its prev is not the hash of the line before it"
    return None


def _is_record(raw: RawLine) -> bool:
    try:
        parse_line(raw.data)
    except RecordFormatError:
        return False
    return True


def _torn_like(raw: RawLine) -> bool:
    """What a crash can leave after the last acknowledged record: bytes with no newline (a
    write cut off), or lines holding NUL bytes (blocks a power loss left unwritten)."""
    return not raw.terminated or (b"\x00" in raw.data and not _is_record(raw))


def _damage(files: LogFiles, bad: tuple[RawLine, str]) -> str:
    raw, problem = bad
    return (
        f"audit log {files.log}: line {raw.index + 1} (at offset {raw.offset}) cannot be "
        f"chained onto: {problem}. That is damage or tampering, not a torn write, so nothing "
        "was cut; keep the file and run `chartgate audit verify` on it"
    )


def _cut(fd: int, files: LogFiles, offset: int, size: int, pieces: int) -> dict[str, Any]:
    """Keep the torn bytes beside the log, then truncate the log to the last good record."""
    data = os.pread(fd, size - offset, offset)
    copy = files.torn_copy(offset)
    copy_fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(copy_fd, data)
        os.fsync(copy_fd)
    finally:
        os.close(copy_fd)
    os.ftruncate(fd, offset)
    os.fsync(fd)
    sync_directory(files.log.parent)
    log.warning(
        "audit log %s: cut %d torn bytes at offset %d (kept in %s)",
        files.log,
        len(data),
        offset,
        copy,
    )
    return {
        "truncated_at": offset,
        "bytes": len(data),
        "pieces": pieces,
        "sha256": hashlib.sha256(data).hexdigest(),
        "kept_in": copy.name,
    }
