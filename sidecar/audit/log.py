"""Append-only audit log file: RFC 8785 canonical, SHA-256 chained, RFC 8032 Ed25519 signed, group-committed."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from chartgate.keys import SigningKey
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
    utc_timestamp,
)

# fdatasync is enough for an append: it flushes the data and the file size needed to read it
# back, and skips the mtime update fsync would also force. Where the OS lacks it, use fsync.
_sync_file = getattr(os, "fdatasync", os.fsync)

_TAIL_CHUNK = 64 * 1024


class AuditLogCorrupt(Exception):
    """The log file's tail is not a complete, well-formed record, so the chain cannot be continued."""


class AuditLogUnavailable(RuntimeError):
    """The log cannot take records: it is closed, another writer holds it, or a write or fsync
    failed (after which nothing more is appended, since what reached the disk is unknown)."""


class AuditLog:
    """One writer's handle on an audit log file.

    `append` returns only once the record is on disk. Concurrent appenders share fsyncs (group
    commit): each writes its line under a lock, then waits until some fsync that started after its
    write has finished; the first waiter to find no fsync running starts one that covers every
    line written so far. Under load one fsync acknowledges many records.

    Only one AuditLog may hold a file at a time (an exclusive flock, across processes too): two
    writers would fork the chain."""

    def __init__(self, path: Path, key: SigningKey) -> None:
        self._path = path
        self._kid = key.kid
        # Resolved once: SigningKey.private_key goes through the JWK object on every access.
        self._private_key = key.private_key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise AuditLogUnavailable(
                    f"audit log {path} is already open for writing by another AuditLog or process"
                ) from exc
            last = _read_last_record(fd, path)
            if last is None:
                # A new (or empty) file: make its directory entry durable too, once, so the
                # first acknowledged record cannot vanish with the file name after a crash.
                _sync_directory(path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._next_seq = 0 if last is None else last.seq + 1
        self._prev = GENESIS_PREV if last is None else last.digest

        # _write_lock orders seq, prev and the bytes in the file. _sync_cond guards the
        # durability bookkeeping. A thread never holds _write_lock while waiting on _sync_cond
        # except in close(), and nothing takes them the other way round, so they cannot deadlock.
        self._write_lock = threading.Lock()
        self._sync_cond = threading.Condition(threading.Lock())
        self._written_seq = self._next_seq - 1
        self._durable_seq = self._next_seq - 1
        self._syncing = False
        self._failure: BaseException | None = None
        self._closed = False
        self._fsyncs = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fsync_count(self) -> int:
        """How many fsyncs this handle has made (fewer than appends when group commit works)."""
        return self._fsyncs

    def append(self, kind: str, body: Mapping[str, Any], *, durable: bool = True) -> AuditRecord:
        """Sign and append one record and return it once it is durable.

        `body` holds identifiers and hashes only, never clinical text: ids of the proposal,
        patient, encounter, agent, reviewer and tenant, payload hashes, codes and decisions.
        Raises ValueError for a bad kind or a body value that is not plain JSON (or too long), and
        AuditLogUnavailable if the log is closed or has failed.

        `durable=False` returns as soon as the line is written (in the OS page cache, which
        survives a crash of this process but not of the machine); the next durable append, or
        sync(), makes it durable too, since an fsync covers every earlier line. A caller that
        writes several records before anything leaves the process (e.g. `proposal.received`
        then `policy.decision`, before the reply) can so pay for one fsync instead of several.
        Never use it for a record that must be on disk before an external effect."""
        check_kind(kind)
        # Canonicalizing needs nothing from the chain: do it outside the lock so it overlaps
        # other writers' signing and fsyncs.
        clean, head = encode_head(body, self._kid, kind)
        if len(head) > MAX_HEAD_BYTES:
            raise ValueError(
                f"audit record of {len(head)} bytes is too large (limit {MAX_LINE_BYTES}); "
                "record identifiers and hashes, not content"
            )
        with self._write_lock:
            self._check_usable()
            seq = self._next_seq
            # Timestamp taken under the lock so ts never goes backwards along seq (clock steps
            # aside).
            record = seal(
                head,
                body=clean,
                kind=kind,
                kid=self._kid,
                prev=self._prev,
                seq=seq,
                ts=utc_timestamp(),
                key=self._private_key,
            )
            self._write_line(record.line + b"\n")
            self._next_seq = seq + 1
            self._prev = record.digest
            self._written_seq = seq
        if durable:
            self._wait_durable(seq)
        return record

    def sync(self) -> None:
        """Wait until every record appended so far is durable (group-committed like append)."""
        self._wait_durable(self._written_seq)

    def _check_usable(self) -> None:
        if self._closed:
            raise AuditLogUnavailable(f"audit log {self._path} is closed")
        if self._failure is not None:
            raise AuditLogUnavailable(
                f"audit log {self._path} failed earlier and takes no more records: {self._failure}"
            ) from self._failure

    def _write_line(self, data: bytes) -> None:
        """One write for the whole line; loop only if the OS writes part of it."""
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(self._fd, view[done:])
            except OSError as exc:
                if done:
                    # Part of a line is in the file: appending more would chain onto a torn
                    # record, so stop taking records (restart after recovery, see docs/audit.md).
                    self._failure = exc
                raise

    def _wait_durable(self, seq: int) -> None:
        cond = self._sync_cond
        with cond:
            while self._durable_seq < seq:
                if self._failure is not None:
                    raise AuditLogUnavailable(
                        f"audit record seq {seq} may not be durable: {self._failure}"
                    ) from self._failure
                if self._syncing:
                    cond.wait()
                    continue
                # Become the syncer: every line written before this read is covered by the fsync
                # below, whichever thread wrote it.
                self._syncing = True
                target = self._written_seq
                error: OSError | None = None
                cond.release()
                try:
                    _sync_file(self._fd)
                except OSError as exc:
                    error = exc
                finally:
                    cond.acquire()
                self._syncing = False
                if error is not None:
                    # After a failed fsync the kernel may have dropped the dirty pages: what is on
                    # disk is unknown, so fail closed for this and every later record.
                    self._failure = error
                else:
                    self._fsyncs += 1
                    self._durable_seq = max(self._durable_seq, target)
                cond.notify_all()

    def close(self) -> None:
        """Make everything written durable, then release the file. Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            error: OSError | None = None
            with self._sync_cond:
                while self._syncing:
                    self._sync_cond.wait()
                if self._failure is None and self._durable_seq < self._written_seq:
                    try:
                        _sync_file(self._fd)
                        self._fsyncs += 1
                        self._durable_seq = self._written_seq
                    except OSError as exc:
                        error = exc
                        self._failure = exc
                self._sync_cond.notify_all()
            os.close(self._fd)
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


def _read_last_record(fd: int, path: Path) -> AuditRecord | None:
    """The last record in the file, or None if the file is empty. Reads backwards from the end, so
    opening costs the same for any log size. Refuses a torn or malformed last line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    # Find the start of the last line: the byte after the last newline before the final byte.
    end = size
    data = b""
    while True:
        start = max(0, end - _TAIL_CHUNK)
        data = os.pread(fd, end - start, start) + data
        end = start
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0 or start == 0:
            break
    line_start = size - len(data) + cut + 1  # cut is -1 when the file is one line
    last = data[cut + 1 :]
    if not last.endswith(b"\n"):
        raise AuditLogCorrupt(
            f"audit log {path} ends with a torn record: {len(last)} bytes after offset "
            f"{line_start} have no closing newline (a write cut off, e.g. by a crash; append "
            "acknowledges a record only after fsync, so this record was never acknowledged). "
            f"To recover: keep a copy of the file, truncate it to {line_start} bytes "
            f"(`truncate -s {line_start} {path}`), run `chartgate audit verify` on it, then "
            "restart."
        )
    try:
        return parse_line(last[:-1])
    except RecordFormatError as exc:
        raise AuditLogCorrupt(
            f"audit log {path}: the last line (at offset {line_start}) is not a valid audit "
            f"record ({exc}); run `chartgate audit verify` on a copy to find the damage"
        ) from exc


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
