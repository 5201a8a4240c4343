"""SQLite storage that keeps every version of every resource (R4 http.html#versioning, #vread, #ccreate)."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE resource_version (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- write order, for a stable result order
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    last_updated  TEXT    NOT NULL,                   -- FHIR instant, UTC
    body          TEXT,                               -- NULL: this version is a deletion
    UNIQUE (resource_type, resource_id, version_id)
);
"""
_SELECT_LATEST: Final = """
SELECT resource_type, resource_id, version_id, last_updated, body FROM resource_version
WHERE resource_type = ? AND resource_id = ? ORDER BY version_id DESC LIMIT 1
"""
_SELECT_VERSION: Final = """
SELECT resource_type, resource_id, version_id, last_updated, body FROM resource_version
WHERE resource_type = ? AND resource_id = ? AND version_id = ?
"""
_SELECT_CURRENT: Final = """
SELECT resource_type, resource_id, version_id, last_updated, body FROM resource_version AS v
WHERE v.resource_type = ? AND v.body IS NOT NULL AND v.version_id = (
    SELECT MAX(n.version_id) FROM resource_version AS n
    WHERE n.resource_type = v.resource_type AND n.resource_id = v.resource_id
) ORDER BY v.seq
"""
_INSERT: Final = """
INSERT INTO resource_version (resource_type, resource_id, version_id, last_updated, body)
VALUES (?, ?, ?, ?, ?)
"""

Matcher = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of one resource; `resource` is None when the version records a delete."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    resource: dict[str, Any] | None

    @property
    def deleted(self) -> bool:
        return self.resource is None


@dataclass(frozen=True, slots=True)
class Written:
    """What a create or update stored (or, for a matched conditional create, found)."""

    version: StoredVersion
    created: bool


class VersionConflict(Exception):
    """If-Match named another version than the current one (or the resource does not exist)."""

    def __init__(self, current_version: int | None) -> None:
        super().__init__(f"current version is {current_version}")
        self.current_version = current_version


class MultipleMatches(Exception):
    """A conditional create's criteria matched more than one resource."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} resources match")
        self.count = count


def fhir_instant(moment: datetime) -> str:
    """An R4 `instant` (datatypes.html#instant): milliseconds, UTC written as Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Storage:
    """Versioned resources in one SQLite file (WAL), safe to share between threads.

    One connection behind one lock: this is a development store, so simple and obviously correct
    beats concurrent reads. Writes also run in BEGIN IMMEDIATE transactions, so a search-then-insert
    (conditional create) is atomic even against another process on the same file.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only an OS crash may lose the last commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction() as db:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found not in (0, _SCHEMA_VERSION):
                raise RuntimeError(f"{path}: unknown schema version {found}")
            if found == 0:
                db.execute(_SCHEMA)  # one statement: executescript() would COMMIT early
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def latest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The newest version (possibly a deletion), or None if the resource never existed."""
        with self._lock:
            return _latest(self._db, resource_type, resource_id)

    def version(
        self, resource_type: str, resource_id: str, version_id: int
    ) -> StoredVersion | None:
        with self._lock:
            row = self._db.execute(
                _SELECT_VERSION, (resource_type, resource_id, version_id)
            ).fetchone()
        return _version(row) if row else None

    def current(self, resource_type: str) -> list[StoredVersion]:
        """Every live (not deleted) resource of a type, at its newest version, in write order."""
        with self._lock:
            return _current(self._db, resource_type)

    def create(
        self,
        resource_type: str,
        resource: Mapping[str, Any],
        *,
        if_none_match: Matcher | None = None,
    ) -> Written:
        """Store version 1 under a new server-assigned id.

        With `if_none_match` (conditional create), first look for live resources it matches, in the
        same transaction: one match is returned with created=False, several raise MultipleMatches.
        """
        with self.transaction() as writes:
            return writes.create(resource_type, resource, if_none_match=if_none_match)

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: Mapping[str, Any],
        *,
        if_match: int | Literal["*"] | None = None,
    ) -> Written:
        """Store the next version; created=True when no live version existed (update-as-create)."""
        with self.transaction() as writes:
            return writes.update(resource_type, resource_id, resource, if_match=if_match)

    @contextmanager
    def transaction(self) -> Iterator[WriteTransaction]:
        """Several reads and writes on one BEGIN IMMEDIATE transaction (http.html#trules): all
        of them commit when the block ends, none if it raises."""
        with self._transaction() as db:
            yield WriteTransaction(db)

    def delete(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """Record a deletion version; None when there was no live resource to delete."""
        with self._transaction() as db:
            latest = _latest(db, resource_type, resource_id)
            if latest is None or latest.deleted:
                return None
            return _insert(db, resource_type, resource_id, latest.version_id + 1, None)


class WriteTransaction:
    """The reads and writes of one open SQLite transaction; only Storage.transaction makes one."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def latest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return _latest(self._db, resource_type, resource_id)

    def matching(self, resource_type: str, matcher: Matcher) -> list[StoredVersion]:
        """The live resources of a type that `matcher` selects, in write order."""
        return [v for v in _current(self._db, resource_type) if matcher(v.resource or {})]

    def create(
        self,
        resource_type: str,
        resource: Mapping[str, Any],
        *,
        if_none_match: Matcher | None = None,
        resource_id: str | None = None,
    ) -> Written:
        """Storage.create's write; `resource_id` is one the caller drew (uuid4) before writing,
        so that references to the new resource could be resolved first."""
        if if_none_match is not None:
            found = self.matching(resource_type, if_none_match)
            if len(found) > 1:
                raise MultipleMatches(len(found))
            if found:
                return Written(found[0], created=False)
        new_id = resource_id or str(uuid.uuid4())
        return Written(_insert(self._db, resource_type, new_id, 1, resource), created=True)

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: Mapping[str, Any],
        *,
        if_match: int | Literal["*"] | None = None,
    ) -> Written:
        """Storage.update's write."""
        next_version, creates = self.next_version(resource_type, resource_id, if_match=if_match)
        stored = _insert(self._db, resource_type, resource_id, next_version, resource)
        return Written(stored, created=creates)

    def next_version(
        self,
        resource_type: str,
        resource_id: str,
        *,
        if_match: int | Literal["*"] | None = None,
    ) -> tuple[int, bool]:
        """The version an update would write now and whether it would create the resource (no
        live version); VersionConflict as update raises it. A transaction needs the version
        before it writes, to resolve version-specific references to it."""
        latest = _latest(self._db, resource_type, resource_id)
        live = latest is not None and not latest.deleted
        if if_match is not None:
            current = latest.version_id if latest is not None and live else None
            if current is None or (if_match != "*" and if_match != current):
                raise VersionConflict(current)
        return (latest.version_id + 1 if latest is not None else 1), not live


def _latest(db: sqlite3.Connection, resource_type: str, resource_id: str) -> StoredVersion | None:
    row = db.execute(_SELECT_LATEST, (resource_type, resource_id)).fetchone()
    return _version(row) if row else None


def _current(db: sqlite3.Connection, resource_type: str) -> list[StoredVersion]:
    rows = db.execute(_SELECT_CURRENT, (resource_type,)).fetchall()
    return [_version(row) for row in rows]


def _insert(
    db: sqlite3.Connection,
    resource_type: str,
    resource_id: str,
    version_id: int,
    resource: Mapping[str, Any] | None,
) -> StoredVersion:
    """Append a version, stamping the server-owned id, meta.versionId and meta.lastUpdated."""
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what an instant keeps
    stamped: dict[str, Any] | None = None
    if resource is not None:
        meta = dict(resource.get("meta") or {})
        meta.update(versionId=str(version_id), lastUpdated=fhir_instant(now))
        # resourceType, id and meta first, as the spec's examples order them.
        stamped = {"resourceType": resource_type, "id": resource_id, "meta": meta, **resource}
        stamped.update(id=resource_id, meta=meta)
    db.execute(
        _INSERT,
        (
            resource_type,
            resource_id,
            version_id,
            fhir_instant(now),
            None if stamped is None else json.dumps(stamped, ensure_ascii=False),
        ),
    )
    return StoredVersion(resource_type, resource_id, version_id, now, stamped)


def _version(row: tuple[str, str, int, str, str | None]) -> StoredVersion:
    resource_type, resource_id, version_id, last_updated, body = row
    return StoredVersion(
        resource_type,
        resource_id,
        version_id,
        datetime.fromisoformat(last_updated),
        None if body is None else json.loads(body),
    )
