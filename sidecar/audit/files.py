"""The files of one audit log (records, checkpoint, keyring, index) and a bounded reader of its lines (RFC 8259)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sidecar.audit.records import MAX_LINE_BYTES

_SKIP_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogFiles:
    """Where the files beside a log live: for `audit/audit.jsonl`, `audit/audit.checkpoint`
    (the latest signed checkpoint), `audit/audit.keyring.json` (every key that signed it) and
    `audit/audit.index.sqlite3` (the search index, rebuilt from the log)."""

    log: Path

    @property
    def checkpoint(self) -> Path:
        return self.log.with_suffix(".checkpoint")

    @property
    def keyring(self) -> Path:
        return self.log.with_suffix(".keyring.json")

    @property
    def index(self) -> Path:
        return self.log.with_suffix(".index.sqlite3")

    def torn_copy(self, offset: int) -> Path:
        """Where recovery keeps the bytes it cut off at `offset` (they are evidence)."""
        return self.log.with_suffix(f".torn-at-{offset}")


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line of a log as read, bounded: `data` is the line without its newline, or, for a line
    longer than the limit, its first `limit` bytes (`length` is the whole line's). `terminated`
    is False for bytes at the end with no newline (a torn write). `leaf` and `digest` are set for
    an oversized line only (hashed while it streamed past), since its bytes were not kept."""

    index: int
    offset: int
    data: bytes
    length: int
    terminated: bool
    leaf: bytes | None = None
    digest: str | None = None

    @property
    def oversized(self) -> bool:
        return self.length > len(self.data)

    @property
    def end(self) -> int:
        """The offset after this line and its newline."""
        return self.offset + self.length + (1 if self.terminated else 0)


def read_lines(
    handle: BinaryIO, *, start_index: int = 0, start_offset: int = 0, limit: int = MAX_LINE_BYTES
) -> Iterator[RawLine]:
    """Yield the lines of an open log from `start_offset`, holding at most `limit` bytes of any
    one line: a longer line is hashed as it streams past and yielded cut to `limit` bytes, so a
    32 MiB line costs 1 MiB of memory, not 32."""
    handle.seek(start_offset)
    index, offset = start_index, start_offset
    readline = handle.readline
    while True:
        raw = readline(limit + 2)
        if not raw:
            return
        if raw[-1:] == b"\n" and len(raw) <= limit + 1:
            yield RawLine(index, offset, raw[:-1], len(raw) - 1, True)
            offset += len(raw)
        elif len(raw) <= limit + 1:
            yield RawLine(index, offset, raw, len(raw), False)  # the torn end of the file
            return
        else:
            line = _stream_rest(handle, raw, index, offset, limit)
            yield line
            offset = line.end
            if not line.terminated:
                return
        index += 1


def _stream_rest(handle: BinaryIO, head: bytes, index: int, offset: int, limit: int) -> RawLine:
    leaf = hashlib.sha256(b"\x00")
    digest = hashlib.sha256()
    length = 0
    terminated = False
    chunk = head
    while chunk:
        if chunk[-1:] == b"\n":
            chunk = chunk[:-1]
            terminated = True
        leaf.update(chunk)
        digest.update(chunk)
        length += len(chunk)
        if terminated:
            break
        chunk = handle.readline(_SKIP_CHUNK)
    return RawLine(
        index, offset, head[:limit], length, terminated, leaf.digest(), digest.hexdigest()
    )


def default_origin(first_line: bytes | None = None) -> str:
    """A log's origin (C2SP tlog-checkpoint) when none is configured: derived from its first
    record for a log written before origins existed (so writer and verifier derive the same),
    else random."""
    tag = hashlib.sha256(first_line).hexdigest()[:16] if first_line else secrets.token_hex(8)
    return f"chartgate.local/audit/{tag}"
