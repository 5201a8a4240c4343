"""The ProposalStore on PostgreSQL: one schema shared by every replica, a connection pool per process.

Same semantics as the SQLite backend, row for row: each statement runs in autocommit (its own
transaction), compare-and-set is one `UPDATE ... WHERE proposal_id = %s AND state = %s RETURNING`,
so of any number of replicas racing to move one proposal exactly one row update happens; and
insert-or-get is `INSERT ... ON CONFLICT DO NOTHING` followed, on a conflict, by a SELECT in a
new statement (whose snapshot sees the row the conflicting insert committed). Every failure
of the driver or the pool is a `psycopg.Error` (the pool's PoolTimeout and PoolClosed included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import State, check_transition
from sidecar.storage.records import (
    ApprovalRecord,
    ProposalContext,
    ProposalQuery,
    ProposalRecord,
    utc_now,
)

# The same number as the SQLite backend's: schema N has the same tables and columns in every
# backend, so one migration note covers both.
SCHEMA_VERSION: Final = 2

# Every text column is COLLATE "C": ordering and `<` on the RFC 3339 timestamps and the ids are
# then bytewise, as in SQLite, whatever the database's default collation (an ICU or glibc
# locale would order "B" before "a" differently and compare punctuation loosely).
# JSON columns are text holding exactly the JSON the SQLite backend stores, not jsonb: jsonb
# would normalize numbers (1e300 comes back as an int), refuse NaN and \u0000, and so break
# the exact round trip. Cast to jsonb in an ad-hoc query when needed.
_DDL: Final = """
CREATE TABLE {schema}.proposals (
    proposal_id        text COLLATE "C" PRIMARY KEY,
    tenant_id          text COLLATE "C" NOT NULL,
    agent_id           text COLLATE "C" NOT NULL,
    idempotency_key    text COLLATE "C" NOT NULL,
    payload_sha256     text COLLATE "C" NOT NULL,
    payload            bytea NOT NULL,
    tool               text COLLATE "C" NOT NULL,
    operation          text COLLATE "C" NOT NULL,
    resource_type      text COLLATE "C" NOT NULL,
    target             text COLLATE "C" NOT NULL,
    patient_id         text COLLATE "C" NOT NULL,
    encounter_id       text COLLATE "C" NOT NULL,
    trace_id           text COLLATE "C" NOT NULL,
    state              text COLLATE "C" NOT NULL,
    context            text COLLATE "C" NOT NULL,
    fields             text COLLATE "C" NOT NULL DEFAULT '[]',
    summary            text COLLATE "C" NOT NULL DEFAULT '{{}}',
    tier               text COLLATE "C" NOT NULL DEFAULT '',
    reasons            text COLLATE "C" NOT NULL DEFAULT '[]',
    policy_revision    text COLLATE "C" NOT NULL DEFAULT '',
    obligations        text COLLATE "C" NOT NULL DEFAULT '{{}}',
    approvals_required bigint NOT NULL DEFAULT 0,
    approver_roles     text COLLATE "C" NOT NULL DEFAULT '[]',
    expires_at         text COLLATE "C" NOT NULL DEFAULT '',
    escalate_at        text COLLATE "C" NOT NULL DEFAULT '',
    escalated_at       text COLLATE "C" NOT NULL DEFAULT '',
    supersedes         text COLLATE "C" NOT NULL DEFAULT '',
    superseded_by      text COLLATE "C" NOT NULL DEFAULT '',
    rejection          text COLLATE "C" NOT NULL DEFAULT '{{}}',
    fhir_id            text COLLATE "C" NOT NULL DEFAULT '',
    fhir_version       text COLLATE "C" NOT NULL DEFAULT '',
    created_at         text COLLATE "C" NOT NULL,
    updated_at         text COLLATE "C" NOT NULL,
    UNIQUE (tenant_id, agent_id, idempotency_key)
);
CREATE INDEX proposals_by_state ON {schema}.proposals (state, tenant_id, created_at);
CREATE TABLE {schema}.approvals (
    approval_id    text COLLATE "C" PRIMARY KEY,
    proposal_id    text COLLATE "C" NOT NULL REFERENCES {schema}.proposals (proposal_id),
    issuer         text COLLATE "C" NOT NULL,
    subject        text COLLATE "C" NOT NULL,
    roles          text COLLATE "C" NOT NULL,
    payload_sha256 text COLLATE "C" NOT NULL,
    fhir_user      text COLLATE "C" NOT NULL DEFAULT '',
    created_at     text COLLATE "C" NOT NULL,
    UNIQUE (proposal_id, issuer, subject)
);
CREATE TABLE {schema}.schema_version (
    version integer NOT NULL
);
"""

_COLUMNS: Final = tuple(ProposalRecord.__dataclass_fields__)
_APPROVAL_COLUMNS: Final = tuple(ApprovalRecord.__dataclass_fields__)
_FIXED: Final = frozenset({"proposal_id", "state", "payload", "created_at"})
# The SQLite backend caps a page at 1000 rows; the same cap keeps results identical.
_MAX_LIMIT: Final = 1000
# PostgreSQL truncates longer identifiers silently, so two long schema names could meet.
_MAX_IDENTIFIER_BYTES: Final = 63


def _to_column(name: str, value: Any) -> Any:
    """The stored form of one ProposalRecord field: the SQLite backend's, byte for byte."""
    if name == "context":
        return json.dumps(value.to_json(), sort_keys=True)
    if name in ("fields", "approver_roles"):
        return json.dumps(list(value))
    if name == "reasons":
        return json.dumps([dict(r) for r in value])
    if name in ("summary", "obligations", "rejection"):
        return json.dumps(dict(value), sort_keys=True)
    if name == "state":
        return State(value).value
    if name == "payload":
        return bytes(value)
    return value


def _from_row(row: Sequence[Any]) -> ProposalRecord:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["state"] = State(data["state"])
    data["payload"] = bytes(data["payload"])
    data["context"] = ProposalContext.from_json(json.loads(data["context"]))
    data["fields"] = tuple(json.loads(data["fields"]))
    data["approver_roles"] = tuple(json.loads(data["approver_roles"]))
    data["reasons"] = tuple(json.loads(data["reasons"]))
    for name in ("summary", "obligations", "rejection"):
        data[name] = json.loads(data[name])
    return ProposalRecord(**data)


def _approval_from_row(row: Sequence[Any]) -> ApprovalRecord:
    data = dict(zip(_APPROVAL_COLUMNS, row, strict=True))
    data["roles"] = tuple(json.loads(data["roles"]))
    return ApprovalRecord(**data)


def _names(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class PostgresStore:
    """ProposalStore over one PostgreSQL schema (default `chartgate`), thread-safe.

    `dsn` is a libpq connection string or URL. The pool keeps `min_connections` open and
    grows to `max_connections`; a call waits up to `timeout` seconds for a free connection
    and then fails with psycopg_pool.PoolTimeout (a psycopg.Error). Construction waits up to
    `timeout` for the first connection, so an unreachable server fails at start, not later.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "chartgate",
        min_connections: int = 1,
        max_connections: int = 4,
        timeout: float = 5.0,
    ) -> None:
        if not schema or len(schema.encode()) > _MAX_IDENTIFIER_BYTES:
            raise ValueError(f"schema name must be 1 to {_MAX_IDENTIFIER_BYTES} bytes")
        self._schema = schema
        kwargs: dict[str, Any] = {"autocommit": True}
        settings = conninfo_to_dict(dsn)
        if "connect_timeout" not in settings:
            kwargs["connect_timeout"] = max(1, round(timeout))
        if "application_name" not in settings:
            kwargs["application_name"] = "chartgate"
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=min_connections,
            max_size=max_connections,
            timeout=timeout,
            name=f"chartgate-{schema}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
            self._prepare_schema()
        except BaseException:
            self._pool.close()
            raise
        self._build_statements()

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self._schema), sql.Identifier(name))

    def _prepare_schema(self) -> None:
        """Create the tables if the schema has none; refuse a schema of another version.

        Under a transaction-scoped advisory lock: `CREATE ... IF NOT EXISTS` is not safe
        against another replica starting at the same moment (both may pass the check and one
        fails on a catalog unique index). Nothing is created when the tables exist, so a
        role with only DML rights can run against a schema an operator created.
        """
        schema_name = sql.Identifier(self._schema)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"chartgate.schema:{self._schema}",)
            )
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (self._schema,),
                )
            }
            if "proposals" in tables or "schema_version" in tables:
                version = 0
                if "schema_version" in tables:
                    row = conn.execute(
                        sql.SQL("SELECT max(version) FROM {}").format(self._table("schema_version"))
                    ).fetchone()
                    version = int(row[0]) if row and row[0] is not None else 0
                if version != SCHEMA_VERSION:
                    raise psycopg.DatabaseError(
                        f"schema {self._schema!r} holds a ledger of schema {version}, not "
                        f"{SCHEMA_VERSION}; use another schema (it is not migrated) and start again"
                    )
                return
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema_name))
            # The DDL is a template of our own with one identifier slot (quoted by psycopg).
            conn.execute(sql.SQL(_DDL).format(schema=schema_name))
            conn.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                    self._table("schema_version")
                ),
                (SCHEMA_VERSION,),
            )

    def _build_statements(self) -> None:
        # Composed once: the same query bytes every call, which psycopg prepares server-side
        # after a few executions on a connection.
        proposals, approvals = self._table("proposals"), self._table("approvals")
        self._insert = sql.SQL(
            "INSERT INTO {} ({}) VALUES ({}) "
            "ON CONFLICT (tenant_id, agent_id, idempotency_key) DO NOTHING"
        ).format(proposals, _names(_COLUMNS), sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)))
        self._select = sql.SQL("SELECT {} FROM {} WHERE ").format(_names(_COLUMNS), proposals)
        self._by_key = self._select + sql.SQL(
            "tenant_id = %s AND agent_id = %s AND idempotency_key = %s"
        )
        self._by_id = self._select + sql.SQL("proposal_id = %s")
        self._state_of = sql.SQL("SELECT state FROM {} WHERE proposal_id = %s").format(proposals)
        self._insert_approval = sql.SQL(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (proposal_id, issuer, subject) DO NOTHING"
        ).format(
            approvals,
            _names(_APPROVAL_COLUMNS),
            sql.SQL(", ").join(sql.Placeholder() * len(_APPROVAL_COLUMNS)),
        )
        select_approvals = sql.SQL("SELECT {} FROM {} WHERE ").format(
            _names(_APPROVAL_COLUMNS), approvals
        )
        order = sql.SQL(" ORDER BY created_at, approval_id")
        self._approvals_of = select_approvals + sql.SQL("proposal_id = %s") + order
        self._approval_by_reviewer = select_approvals + sql.SQL(
            "proposal_id = %s AND issuer = %s AND subject = %s"
        )
        self._update_table = proposals

    def close(self) -> None:
        self._pool.close()

    def insert_or_get(self, record: ProposalRecord) -> tuple[ProposalRecord, bool]:
        now = utc_now()
        record = replace(record, created_at=now, updated_at=now)
        row = tuple(_to_column(name, getattr(record, name)) for name in _COLUMNS)
        with self._pool.connection() as conn:
            if conn.execute(self._insert, row).rowcount == 1:
                return record, True
            # A new statement, so a new snapshot: it sees the row that made the insert conflict
            # (the INSERT waited for that row's transaction to commit before doing nothing).
            existing = conn.execute(
                self._by_key, (record.tenant_id, record.agent_id, record.idempotency_key)
            ).fetchone()
        if existing is None:  # pragma: no cover - rows are never deleted
            raise psycopg.DatabaseError("idempotency conflict row disappeared")
        return _from_row(existing), False

    def get(self, proposal_id: str) -> ProposalRecord | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._by_id, (proposal_id,)).fetchone()
        return None if row is None else _from_row(row)

    def transition(
        self, proposal_id: str, expected: State, target: State, **updates: Any
    ) -> ProposalRecord:
        check_transition(expected, target)
        return self._set(proposal_id, expected, {"state": target.value}, updates, target)

    def update(self, proposal_id: str, expected: State, **updates: Any) -> ProposalRecord:
        return self._set(proposal_id, expected, {}, updates, None)

    def _set(
        self,
        proposal_id: str,
        expected: State,
        values: dict[str, Any],
        updates: Mapping[str, Any],
        target: State | None,
    ) -> ProposalRecord:
        for key, value in updates.items():
            if key not in _COLUMNS or key in _FIXED:
                raise ValueError(f"cannot update column {key}")
            values[key] = _to_column(key, value)
        values["updated_at"] = utc_now()
        template = sql.SQL("UPDATE {} SET {} WHERE proposal_id = %s AND state = %s RETURNING {}")
        statement = template.format(
            self._update_table,
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values),
            _names(_COLUMNS),
        )
        params = (*values.values(), proposal_id, State(expected).value)
        with self._pool.connection() as conn:
            row = conn.execute(statement, params).fetchone()
            if row is not None:
                return _from_row(row)
            # Only for the message: the row may move again right after this read.
            current = conn.execute(self._state_of, (proposal_id,)).fetchone()
        state = current[0] if current else "absent"
        goal = f"cannot move to {target}" if target else "cannot be changed"
        raise IllegalTransition(f"proposal {proposal_id} is {state}, not {expected}; {goal}")

    def find(self, query: ProposalQuery) -> list[ProposalRecord]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        if query.states:
            clauses.append(sql.SQL("state = ANY(%s)"))
            params.append([State(s).value for s in query.states])
        for column, value in (
            ("tenant_id", query.tenant_id),
            ("tier", query.tier),
            ("patient_id", query.patient_id),
            ("resource_type", query.resource_type),
            ("agent_id", query.agent_id),
        ):
            if value is not None:
                clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if query.created_before is not None:
            clauses.append(sql.SQL("created_at < %s"))
            params.append(query.created_before)
        if query.expires_before is not None:
            clauses.append(sql.SQL("expires_at <> '' AND expires_at < %s"))
            params.append(query.expires_before)
        if query.escalation_due_before is not None:
            clauses.append(sql.SQL("escalate_at <> '' AND escalated_at = '' AND escalate_at < %s"))
            params.append(query.escalation_due_before)
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
        statement = self._select + where + sql.SQL(" ORDER BY created_at, proposal_id LIMIT %s")
        with self._pool.connection() as conn:
            rows = conn.execute(
                statement, (*params, max(0, min(query.limit, _MAX_LIMIT)))
            ).fetchall()
        return [_from_row(row) for row in rows]

    def add_approval(self, approval: ApprovalRecord) -> tuple[ApprovalRecord, bool]:
        approval = replace(approval, created_at=approval.created_at or utc_now())
        row = tuple(
            json.dumps(list(approval.roles)) if name == "roles" else getattr(approval, name)
            for name in _APPROVAL_COLUMNS
        )
        with self._pool.connection() as conn:
            if conn.execute(self._insert_approval, row).rowcount == 1:
                return approval, True
            existing = conn.execute(
                self._approval_by_reviewer,
                (approval.proposal_id, approval.issuer, approval.subject),
            ).fetchone()
        if existing is None:  # pragma: no cover - rows are never deleted
            raise psycopg.DatabaseError("approval conflict row disappeared")
        return _approval_from_row(existing), False

    def approvals(self, proposal_id: str) -> list[ApprovalRecord]:
        with self._pool.connection() as conn:
            rows = conn.execute(self._approvals_of, (proposal_id,)).fetchall()
        return [_approval_from_row(row) for row in rows]
