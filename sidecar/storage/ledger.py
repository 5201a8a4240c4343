"""The proposal ledger in SQLite: idempotency by (tenant, agent, key), state changes by compare-and-set."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import State, check_transition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id     TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload_sha256  TEXT NOT NULL,
    payload         BLOB NOT NULL,
    tool            TEXT NOT NULL,
    resource_type   TEXT NOT NULL,
    target          TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    encounter_id    TEXT NOT NULL,
    trace_id        TEXT NOT NULL,
    state           TEXT NOT NULL,
    tier            TEXT NOT NULL DEFAULT '',
    reasons         TEXT NOT NULL DEFAULT '[]',
    policy_revision TEXT NOT NULL DEFAULT '',
    fhir_id         TEXT NOT NULL DEFAULT '',
    fhir_version    TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (tenant_id, agent_id, idempotency_key)
);
"""


def utc_now() -> str:
    """RFC 3339 UTC timestamp with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One proposal as the ledger holds it. `payload` is the canonical resource JSON (PHI: it stays
    in the ledger and goes only to the adapter, never to logs or audit records)."""

    proposal_id: str
    tenant_id: str
    agent_id: str
    idempotency_key: str
    payload_sha256: str
    payload: bytes
    tool: str
    resource_type: str
    target: str
    patient_id: str
    encounter_id: str
    trace_id: str
    state: State
    tier: str = ""
    reasons: tuple[Mapping[str, str], ...] = field(default_factory=tuple)
    policy_revision: str = ""
    fhir_id: str = ""
    fhir_version: str = ""
    created_at: str = ""
    updated_at: str = ""


_COLUMNS = tuple(ProposalRecord.__dataclass_fields__)


class Ledger:
    """Thread-safe proposal ledger over one SQLite database (WAL, synchronous=NORMAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection behind a lock: SQLite serializes writers anyway, and this keeps
        # compare-and-set and insert-or-get atomic without BEGIN IMMEDIATE retries.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; a power loss may drop the newest rows.
            # That is acceptable because the durable record is the fsynced audit log, and a lost
            # row cannot cause a second write: proposal ids are derived from the idempotency key
            # and the adapter's conditional create finds the first write by that id.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert_or_get(self, record: ProposalRecord) -> tuple[ProposalRecord, bool]:
        """Insert a new proposal; if its (tenant, agent, key) exists, return that one instead.

        Returns (record, created). The caller compares payload hashes to tell a retry from a
        conflicting reuse of the key.
        """
        now = utc_now()
        record = replace(record, created_at=now, updated_at=now)
        row = self._to_row(record)
        placeholders = ",".join("?" for _ in _COLUMNS)
        with self._lock:
            cursor = self._conn.execute(
                f"INSERT INTO proposals ({','.join(_COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608
                "ON CONFLICT (tenant_id, agent_id, idempotency_key) DO NOTHING",
                row,
            )
            if cursor.rowcount == 1:
                return record, True
            existing = self._select(
                "tenant_id = ? AND agent_id = ? AND idempotency_key = ?",
                (record.tenant_id, record.agent_id, record.idempotency_key),
            )
        if existing is None:  # pragma: no cover - the conflict row cannot vanish under the lock
            raise RuntimeError("idempotency conflict row disappeared")
        return existing, False

    def get(self, proposal_id: str) -> ProposalRecord | None:
        with self._lock:
            return self._select("proposal_id = ?", (proposal_id,))

    def transition(
        self, proposal_id: str, expected: State, target: State, **updates: Any
    ) -> ProposalRecord:
        """Move a proposal from `expected` to `target` (compare-and-set), setting other columns."""
        check_transition(expected, target)
        values: dict[str, Any] = {"state": target.value, "updated_at": utc_now()}
        for key, value in updates.items():
            if key not in _COLUMNS or key in {"proposal_id", "state", "payload"}:
                raise ValueError(f"cannot update column {key}")
            values[key] = json.dumps(list(value)) if key == "reasons" else value
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE proposals SET {assignments} WHERE proposal_id = ? AND state = ?",  # noqa: S608
                (*values.values(), proposal_id, expected.value),
            )
            if cursor.rowcount != 1:
                current = self._select("proposal_id = ?", (proposal_id,))
                state = current.state if current else "absent"
                raise IllegalTransition(
                    f"proposal {proposal_id} is {state}, not {expected}; cannot move to {target}"
                )
            updated = self._select("proposal_id = ?", (proposal_id,))
        assert updated is not None
        return updated

    def _select(self, where: str, params: tuple[Any, ...]) -> ProposalRecord | None:
        row = self._conn.execute(
            f"SELECT {','.join(_COLUMNS)} FROM proposals WHERE {where}",  # noqa: S608
            params,
        ).fetchone()
        return None if row is None else self._from_row(row)

    @staticmethod
    def _to_row(record: ProposalRecord) -> tuple[Any, ...]:
        values = []
        for name in _COLUMNS:
            value = getattr(record, name)
            if name == "reasons":
                value = json.dumps([dict(r) for r in value])
            elif name == "state":
                value = value.value
            values.append(value)
        return tuple(values)

    @staticmethod
    def _from_row(row: tuple[Any, ...]) -> ProposalRecord:
        data = dict(zip(_COLUMNS, row, strict=True))
        data["state"] = State(data["state"])
        data["reasons"] = tuple(json.loads(data["reasons"]))
        return ProposalRecord(**data)
