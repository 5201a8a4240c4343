"""Search index beside an audit log (SQLite), rebuilt from it: patient, encounter, agent, reviewer, tenant, time.

The index is derived data: it holds each record's line offset and the identifiers found in its
body, and it is brought up to date from the log before every search (new lines appended; rebuilt
from scratch when the lines it indexed are no longer the log's). Results are the log's own lines,
read at their offsets, so an altered index can hide a record but never invent or change one;
`chartgate audit verify` is what says the log is genuine.

A record is found by patient, encounter, agent or tenant either through its own body or through
its proposal: `policy.decision`, `token.minted`, `write.outcome` name only the proposal, and the
proposal's `proposal.received` names the patient.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.audit.files import LogFiles, read_lines
from sidecar.audit.keyring import normalize_time

_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    line INTEGER PRIMARY KEY, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    ts TEXT, kind TEXT, proposal TEXT, patient TEXT, encounter TEXT, agent TEXT,
    tenant TEXT, reviewer TEXT, reviewer_iss TEXT
);
CREATE TABLE IF NOT EXISTS proposals (
    proposal TEXT PRIMARY KEY, patient TEXT, encounter TEXT, agent TEXT, tenant TEXT
);
CREATE INDEX IF NOT EXISTS records_proposal ON records (proposal);
CREATE INDEX IF NOT EXISTS records_patient ON records (patient);
CREATE INDEX IF NOT EXISTS records_encounter ON records (encounter);
CREATE INDEX IF NOT EXISTS records_agent ON records (agent);
CREATE INDEX IF NOT EXISTS records_tenant ON records (tenant);
CREATE INDEX IF NOT EXISTS records_reviewer ON records (reviewer);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS proposals_patient ON proposals (patient);
CREATE INDEX IF NOT EXISTS proposals_encounter ON proposals (encounter);
CREATE INDEX IF NOT EXISTS proposals_agent ON proposals (agent);
CREATE INDEX IF NOT EXISTS proposals_tenant ON proposals (tenant);
"""


@dataclass(frozen=True, slots=True)
class Query:
    """What to find; every given criterion must hold. Times are RFC 3339 (inclusive)."""

    patient: str | None = None
    encounter: str | None = None
    agent: str | None = None
    reviewer: str | None = None
    tenant: str | None = None
    proposal: str | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Hit:
    """A record found: the log, its line number (1-based), seq and the exact line."""

    log: Path
    line: int
    ts: str
    kind: str
    text: bytes


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _fields(body: dict[str, Any]) -> dict[str, str | None]:
    reviewer = body.get("reviewer")
    reviewer = reviewer if isinstance(reviewer, dict) else {}
    return {
        "proposal": _text(body.get("proposal_id")),
        "patient": _text(body.get("patient")),
        "encounter": _text(body.get("encounter")),
        "agent": _text(body.get("agent")),
        "tenant": _text(body.get("tenant")),
        "reviewer": _text(reviewer.get("sub")),
        "reviewer_iss": _text(reviewer.get("iss")),
    }


class SearchIndex:
    """The index of one log. `update()` brings it up to date; `search()` updates, then queries."""

    def __init__(self, log: Path, index_path: Path | None = None) -> None:
        self._log = log
        path = index_path or LogFiles(log).index
        try:
            self._db = sqlite3.connect(path)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error:
            # A read-only copy of a log (an auditor's): index in memory for this run.
            self._db = sqlite3.connect(":memory:")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _still_valid(self) -> tuple[int, int]:
        """(lines indexed, offset after them) when the index describes a prefix of the log as
        it is now; (0, 0) when it must be rebuilt."""
        if self._meta("version") != _SCHEMA_VERSION:
            return 0, 0
        lines = int(self._meta("lines") or 0)
        end = int(self._meta("end") or 0)
        head = self._meta("head") or ""
        if lines == 0:
            return 0, 0
        row = self._db.execute(
            "SELECT offset, length FROM records WHERE line = ?", (lines - 1,)
        ).fetchone()
        if row is None:
            return 0, 0
        try:
            with self._log.open("rb") as handle:
                handle.seek(row[0])
                data = handle.read(row[1] + 1)
        except OSError:
            return 0, 0
        if data[-1:] != b"\n" or hashlib.sha256(data[:-1]).hexdigest() != head:
            return 0, 0
        return lines, end

    def update(self, *, rebuild: bool = False) -> int:
        """Index the lines added since the last update (everything, if the log changed under
        the index or `rebuild`). Returns how many lines were indexed now."""
        lines, end = (0, 0) if rebuild else self._still_valid()
        db = self._db
        with db:
            if lines == 0:
                db.execute("DELETE FROM records")
                db.execute("DELETE FROM proposals")
                db.execute("DELETE FROM meta")
            added = 0
            head = self._meta("head") or ""
            with self._log.open("rb", buffering=1024 * 1024) as handle:
                for raw in read_lines(handle, start_index=lines, start_offset=end):
                    if not raw.terminated:
                        break  # a torn last line is not a record (yet)
                    values = self._row(raw.data)
                    db.execute(
                        "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (raw.index, raw.offset, raw.length, *values),
                    )
                    if values[1] == "proposal.received" and values[2]:
                        db.execute(
                            "INSERT OR REPLACE INTO proposals VALUES (?,?,?,?,?)",
                            (values[2], values[3], values[4], values[5], values[6]),
                        )
                    added += 1
                    lines = raw.index + 1
                    end = raw.end
                    head = raw.digest or hashlib.sha256(raw.data).hexdigest()
            for key, value in (
                ("version", _SCHEMA_VERSION),
                ("lines", str(lines)),
                ("end", str(end)),
                ("head", head),
            ):
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        return added

    @staticmethod
    def _row(data: bytes) -> tuple[str | None, ...]:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return (None,) * 9
        if not isinstance(value, dict):
            return (None,) * 9
        body = value.get("body")
        found = _fields(body if isinstance(body, dict) else {})
        return (
            _text(value.get("ts")),
            _text(value.get("kind")),
            found["proposal"],
            found["patient"],
            found["encounter"],
            found["agent"],
            found["tenant"],
            found["reviewer"],
            found["reviewer_iss"],
        )

    def search(self, query: Query) -> list[Hit]:
        self.update()
        clauses: list[str] = []
        params: list[Any] = []
        for name in ("patient", "encounter", "agent", "tenant"):
            value = getattr(query, name)
            if value:
                # `name` is one of four fixed column names; the values are parameters.
                clauses.append(
                    f"(r.{name} = ? OR r.proposal IN "  # noqa: S608
                    f"(SELECT proposal FROM proposals WHERE {name} = ?))"
                )
                params += [value, value]
        if query.reviewer:
            clauses.append("(r.reviewer = ? OR (r.reviewer_iss || ' ' || r.reviewer) = ?)")
            params += [query.reviewer, query.reviewer]
        if query.proposal:
            clauses.append("r.proposal = ?")
            params.append(query.proposal)
        if query.kind:
            clauses.append("r.kind = ?")
            params.append(query.kind)
        if query.since:
            clauses.append("r.ts >= ?")
            params.append(normalize_time(query.since, "--since"))
        if query.until:
            clauses.append("r.ts <= ?")
            params.append(normalize_time(query.until, "--until"))
        where = " AND ".join(clauses) or "1"
        rows = self._db.execute(
            f"SELECT r.line, r.offset, r.length, r.ts, r.kind FROM records r WHERE {where} "  # noqa: S608 - clauses are fixed text; values are parameters
            "ORDER BY r.line LIMIT ?",
            (*params, query.limit),
        ).fetchall()
        hits: list[Hit] = []
        with self._log.open("rb") as handle:
            for line, offset, length, ts, kind in rows:
                handle.seek(offset)
                hits.append(Hit(self._log, line + 1, ts or "", kind or "", handle.read(length)))
        return hits


def search_logs(logs: Sequence[Path], query: Query, *, rebuild: bool = False) -> list[Hit]:
    """Search several logs (each with its own index) and merge the hits in time order."""
    hits: list[Hit] = []
    for log in logs:
        with SearchIndex(log) as index:
            if rebuild:
                index.update(rebuild=True)
            hits.extend(index.search(query))
    hits.sort(key=lambda h: (h.ts, str(h.log), h.line))
    return hits[: query.limit]


def iter_hits_json(hits: Sequence[Hit], *, with_source: bool) -> Iterator[str]:
    for hit in hits:
        if with_source:
            with contextlib.suppress(ValueError, RecursionError):
                record = json.loads(hit.text)
                yield json.dumps({"log": str(hit.log), "line": hit.line, "record": record})
                continue
        yield hit.text.decode("utf-8", "replace")
