"""The ProposalStore on SQLite: one file, shared by the processes of one machine (WAL, busy timeout).

Several processes may open the same file: SQLite serializes writers with its file lock, so
compare-and-set and insert-or-get stay atomic across processes (each statement is one implicit
transaction), and `busy_timeout` makes a writer wait for another instead of failing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import State, check_transition
from sidecar.storage.columns import (
    APPROVAL_COLUMNS,
    COLUMNS,
    approval_from_row,
    approval_row,
    record_from_row,
    record_row,
    update_values,
)
from sidecar.storage.records import ApprovalRecord, ProposalQuery, ProposalRecord, utc_now

SCHEMA_VERSION: Final = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id        TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    agent_id           TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL,
    payload_sha256     TEXT NOT NULL,
    payload            BLOB NOT NULL,
    tool               TEXT NOT NULL,
    operation          TEXT NOT NULL,
    resource_type      TEXT NOT NULL,
    target             TEXT NOT NULL,
    patient_id         TEXT NOT NULL,
    encounter_id       TEXT NOT NULL,
    trace_id           TEXT NOT NULL,
    state              TEXT NOT NULL,
    context            TEXT NOT NULL,
    fields             TEXT NOT NULL DEFAULT '[]',
    summary            TEXT NOT NULL DEFAULT '{}',
    tier               TEXT NOT NULL DEFAULT '',
    reasons            TEXT NOT NULL DEFAULT '[]',
    policy_revision    TEXT NOT NULL DEFAULT '',
    obligations        TEXT NOT NULL DEFAULT '{}',
    approvals_required INTEGER NOT NULL DEFAULT 0,
    approver_roles     TEXT NOT NULL DEFAULT '[]',
    expires_at         TEXT NOT NULL DEFAULT '',
    escalate_at        TEXT NOT NULL DEFAULT '',
    escalated_at       TEXT NOT NULL DEFAULT '',
    supersedes         TEXT NOT NULL DEFAULT '',
    superseded_by      TEXT NOT NULL DEFAULT '',
    rejection          TEXT NOT NULL DEFAULT '{}',
    delivery           TEXT NOT NULL DEFAULT '{}',
    receipt            TEXT NOT NULL DEFAULT '{}',
    reconciliation     TEXT NOT NULL DEFAULT '{}',
    fhir_id            TEXT NOT NULL DEFAULT '',
    fhir_version       TEXT NOT NULL DEFAULT '',
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (tenant_id, agent_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS proposals_by_state ON proposals (state, tenant_id, created_at);
CREATE TABLE IF NOT EXISTS approvals (
    approval_id    TEXT PRIMARY KEY,
    proposal_id    TEXT NOT NULL REFERENCES proposals (proposal_id),
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    roles          TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    fhir_user      TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL,
    UNIQUE (proposal_id, issuer, subject)
);
"""


class SqliteStore:
    """ProposalStore over one SQLite database file (WAL, synchronous=NORMAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection behind a lock per process: SQLite serializes writers anyway, and this
        # keeps compare-and-set and insert-or-get atomic without BEGIN IMMEDIATE retries.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout=5000")
            # The schema's REFERENCES hold only with this on (SQLite's default is off).
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; a power loss may drop the newest rows.
            # That is acceptable because the durable record is the fsynced audit log, and a lost
            # row cannot cause a second write: proposal ids are derived from the idempotency key
            # and the adapter's conditional create finds the first write by that id.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            existing = self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'proposals'"
            ).fetchone()[0]
            if existing and version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{path} holds a ledger of schema {version}, not {SCHEMA_VERSION}; move it "
                    "aside (it is not migrated) and start again"
                )
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert_or_get(self, record: ProposalRecord) -> tuple[ProposalRecord, bool]:
        now = utc_now()
        record = replace(record, created_at=now, updated_at=now)
        row = record_row(record)
        placeholders = ",".join("?" for _ in COLUMNS)
        with self._lock:
            cursor = self._conn.execute(
                f"INSERT INTO proposals ({','.join(COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608
                "ON CONFLICT (tenant_id, agent_id, idempotency_key) DO NOTHING",
                row,
            )
            if cursor.rowcount == 1:
                return record, True
            existing = self._select(
                "tenant_id = ? AND agent_id = ? AND idempotency_key = ?",
                (record.tenant_id, record.agent_id, record.idempotency_key),
            )
        if existing is None:  # pragma: no cover - the conflicting row cannot vanish
            raise sqlite3.DatabaseError("idempotency conflict row disappeared")
        return existing, False

    def get(self, proposal_id: str) -> ProposalRecord | None:
        with self._lock:
            return self._select("proposal_id = ?", (proposal_id,))

    def transition(
        self, proposal_id: str, expected: State, target: State, /, **updates: Any
    ) -> ProposalRecord:
        check_transition(expected, target)
        return self._set(proposal_id, expected, {"state": target.value}, updates, target)

    def update(self, proposal_id: str, expected: State, /, **updates: Any) -> ProposalRecord:
        return self._set(proposal_id, expected, {}, updates, None)

    def _set(
        self,
        proposal_id: str,
        expected: State,
        values: dict[str, Any],
        updates: Mapping[str, Any],
        target: State | None,
    ) -> ProposalRecord:
        values = update_values(values, updates)
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE proposals SET {assignments} WHERE proposal_id = ? AND state = ?",  # noqa: S608
                (*values.values(), proposal_id, expected.value),
            )
            if cursor.rowcount != 1:
                current = self._select("proposal_id = ?", (proposal_id,))
                state = current.state if current else "absent"
                goal = f"cannot move to {target}" if target else "cannot be changed"
                raise IllegalTransition(
                    f"proposal {proposal_id} is {state}, not {expected}; {goal}"
                )
            updated = self._select("proposal_id = ?", (proposal_id,))
        assert updated is not None
        return updated

    def find(self, query: ProposalQuery) -> list[ProposalRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.states:
            clauses.append(f"state IN ({','.join('?' for _ in query.states)})")
            params.extend(s.value for s in query.states)
        for column, value in (
            ("tenant_id", query.tenant_id),
            ("tier", query.tier),
            ("patient_id", query.patient_id),
            ("resource_type", query.resource_type),
            ("agent_id", query.agent_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.created_before is not None:
            clauses.append("created_at < ?")
            params.append(query.created_before)
        if query.expires_before is not None:
            clauses.append("expires_at != '' AND expires_at < ?")
            params.append(query.expires_before)
        if query.escalation_due_before is not None:
            clauses.append("escalate_at != '' AND escalated_at = '' AND escalate_at < ?")
            params.append(query.escalation_due_before)
        where = " AND ".join(clauses) or "1 = 1"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {','.join(COLUMNS)} FROM proposals WHERE {where} "  # noqa: S608
                "ORDER BY created_at, proposal_id LIMIT ?",
                (*params, max(0, min(query.limit, 1000))),
            ).fetchall()
        return [record_from_row(row) for row in rows]

    def add_approval(self, approval: ApprovalRecord) -> tuple[ApprovalRecord, bool]:
        approval = replace(approval, created_at=approval.created_at or utc_now())
        row = approval_row(approval)
        with self._lock:
            # Only while the proposal waits for approval, in one statement (so also against
            # another process on the same file): the approvals a decision counted are all
            # there will be.
            cursor = self._conn.execute(
                f"INSERT INTO approvals ({','.join(APPROVAL_COLUMNS)}) "  # noqa: S608
                f"SELECT {','.join('?' for _ in APPROVAL_COLUMNS)} WHERE EXISTS ("
                "SELECT 1 FROM proposals WHERE proposal_id = ? AND state = ?) "
                "ON CONFLICT (proposal_id, issuer, subject) DO NOTHING",
                (*row, approval.proposal_id, State.PENDING_APPROVAL.value),
            )
            if cursor.rowcount == 1:
                return approval, True
            existing = self._approvals(
                "proposal_id = ? AND issuer = ? AND subject = ?",
                (approval.proposal_id, approval.issuer, approval.subject),
            )
        if not existing:
            raise IllegalTransition(
                f"proposal {approval.proposal_id} is not pending approval: no approval added"
            )
        return existing[0], False

    def approvals(self, proposal_id: str) -> list[ApprovalRecord]:
        with self._lock:
            return self._approvals("proposal_id = ?", (proposal_id,))

    def _approvals(self, where: str, params: tuple[Any, ...]) -> list[ApprovalRecord]:
        rows = self._conn.execute(
            f"SELECT {','.join(APPROVAL_COLUMNS)} FROM approvals WHERE {where} "  # noqa: S608
            "ORDER BY created_at, approval_id",
            params,
        ).fetchall()
        return [approval_from_row(row) for row in rows]

    def _select(self, where: str, params: tuple[Any, ...]) -> ProposalRecord | None:
        row = self._conn.execute(
            f"SELECT {','.join(COLUMNS)} FROM proposals WHERE {where}",  # noqa: S608
            params,
        ).fetchone()
        return None if row is None else record_from_row(row)
