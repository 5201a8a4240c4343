"""The ProposalStore on PostgreSQL: one schema shared by every replica, a connection pool per process.

Same semantics as the SQLite backend, row for row: each statement runs in autocommit (its own
transaction), compare-and-set is one `UPDATE ... WHERE proposal_id = %s AND state = %s RETURNING`,
so of any number of replicas racing to move one proposal exactly one row update happens; and
insert-or-get is `INSERT ... ON CONFLICT DO NOTHING` followed, on a conflict, by a SELECT in a
new statement (whose snapshot sees the row the conflicting insert committed). Every failure
of the driver or the pool is a `psycopg.Error` (the pool's PoolTimeout and PoolClosed included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

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

# The same number as the SQLite backend's: schema N has the same tables and columns in every
# backend, so one migration note covers both.
SCHEMA_VERSION: Final = 4

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
    delivery           text COLLATE "C" NOT NULL DEFAULT '{{}}',
    receipt            text COLLATE "C" NOT NULL DEFAULT '{{}}',
    reconciliation     text COLLATE "C" NOT NULL DEFAULT '{{}}',
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

# The SQLite backend caps a page at 1000 rows; the same cap keeps results identical.
_MAX_LIMIT: Final = 1000
# PostgreSQL truncates longer identifiers silently, so two long schema names could meet.
_MAX_IDENTIFIER_BYTES: Final = 63


_COLUMN_LIST: Final = ", ".join(COLUMNS)
_APPROVAL_COLUMN_LIST: Final = ", ".join(APPROVAL_COLUMNS)
_Statement = bytes  # SQL text; every identifier in it is ours, the schema quoted by psycopg


class PostgresStore:
    """ProposalStore over one PostgreSQL schema (default `chartgate`), thread-safe.

    `dsn` is a libpq connection string or URL. The pool keeps `min_connections` open and
    grows to `max_connections` (small by default: there is a sidecar per agent pod, and all
    of them share the server's connection limit); a call waits up to `timeout` seconds for a
    free connection and then fails with psycopg_pool.PoolTimeout (a psycopg.Error), and a
    statement running longer than `timeout` is cancelled, unless the DSN sets `options`.
    Construction waits up to `timeout` for the first connection, so an unreachable server
    fails at start, not on the first proposal.
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
        if "options" not in settings:
            # Every statement here takes a millisecond or so; one stuck behind a lock someone
            # else holds must fail (ledger.unavailable, retryable), not hold a gRPC worker forever.
            kwargs["options"] = f"-c statement_timeout={max(1, round(timeout * 1000))}"
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=min_connections,
            max_size=max_connections,
            timeout=timeout,
            name=f"chartgate-{schema}",
            open=False,
        )
        # Set by _prepare_schema; the UPDATE statements are cached per set of columns.
        self._proposals = self._approvals = ""
        self._updates: dict[tuple[str, ...], _Statement] = {}
        try:
            self._pool.open(wait=True, timeout=timeout)
            self._prepare_schema()
        except BaseException:
            self._pool.close()
            raise
        # Built once as bytes: composing with psycopg.sql on every call costs ~60 µs, more than
        # the query's round trip; the same bytes each time also let psycopg prepare them.
        self._insert = self._sql(
            f"INSERT INTO {self._proposals} ({_COLUMN_LIST}) "  # noqa: S608
            f"VALUES ({', '.join('%s' for _ in COLUMNS)}) "
            "ON CONFLICT (tenant_id, agent_id, idempotency_key) DO NOTHING"
        )
        select = f"SELECT {_COLUMN_LIST} FROM {self._proposals} WHERE "  # noqa: S608
        self._by_key = self._sql(
            select + "tenant_id = %s AND agent_id = %s AND idempotency_key = %s"
        )
        self._by_id = self._sql(select + "proposal_id = %s")
        self._state_of = self._sql(
            f"SELECT state FROM {self._proposals} WHERE proposal_id = %s"  # noqa: S608
        )
        # Only while the proposal waits for approval, in one statement: FOR SHARE makes a
        # concurrent move out of pending_approval wait for this insert, or this insert see the
        # moved row and add nothing. So the approvals a decision counted are all there will be.
        self._insert_approval = self._sql(
            f"INSERT INTO {self._approvals} ({_APPROVAL_COLUMN_LIST}) "  # noqa: S608
            f"SELECT {', '.join('%s' for _ in APPROVAL_COLUMNS)} WHERE EXISTS ("
            f"SELECT 1 FROM {self._proposals} WHERE proposal_id = %s AND state = %s FOR SHARE) "
            "ON CONFLICT (proposal_id, issuer, subject) DO NOTHING"
        )
        select_approvals = f"SELECT {_APPROVAL_COLUMN_LIST} FROM {self._approvals} WHERE "  # noqa: S608
        self._approvals_of = self._sql(
            select_approvals + "proposal_id = %s ORDER BY created_at, approval_id"
        )
        self._approval_by_reviewer = self._sql(
            select_approvals + "proposal_id = %s AND issuer = %s AND subject = %s"
        )

    @staticmethod
    def _sql(text: str) -> _Statement:
        return text.encode()

    def _prepare_schema(self) -> None:
        """Create the tables if the schema has none; refuse a schema of another version.

        Under a transaction-scoped advisory lock: `CREATE ... IF NOT EXISTS` is not safe
        against another replica starting at the same moment (both may pass the check and one
        fails on a catalog unique index). Nothing is created when the tables exist, so a
        role with only DML rights can run against a schema an operator created.
        """
        with self._pool.connection() as conn, conn.transaction():
            schema = sql.Identifier(self._schema).as_string(conn)
            self._proposals, self._approvals = f"{schema}.proposals", f"{schema}.approvals"
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"chartgate.schema:{self._schema}",)
            )
            tables = {
                name
                # pg_class, not information_schema: that lists only tables this role may use.
                for (name,) in conn.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                    (self._schema,),
                )
            }
            if "proposals" in tables or "schema_version" in tables:
                version = 0
                if "schema_version" in tables:
                    row = conn.execute(
                        self._sql(f"SELECT max(version) FROM {schema}.schema_version")  # noqa: S608
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
                conn.execute(self._sql(f"CREATE SCHEMA {schema}"))
            conn.execute(self._sql(_DDL.format(schema=schema)))
            conn.execute(
                self._sql(f"INSERT INTO {schema}.schema_version (version) VALUES (%s)"),  # noqa: S608
                (SCHEMA_VERSION,),
            )

    def close(self) -> None:
        self._pool.close()

    def insert_or_get(self, record: ProposalRecord) -> tuple[ProposalRecord, bool]:
        now = utc_now()
        record = replace(record, created_at=now, updated_at=now)
        row = record_row(record)
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
        return record_from_row(existing), False

    def get(self, proposal_id: str) -> ProposalRecord | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._by_id, (proposal_id,)).fetchone()
        return None if row is None else record_from_row(row)

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
        columns = tuple(values)
        statement = self._updates.get(columns)
        if statement is None:
            # Column names come from the record's own fields (checked above), never the caller.
            assignments = ", ".join(f"{name} = %s" for name in columns)
            statement = self._sql(
                f"UPDATE {self._proposals} SET {assignments} "  # noqa: S608
                f"WHERE proposal_id = %s AND state = %s RETURNING {_COLUMN_LIST}"
            )
            self._updates[columns] = statement
        params = (*values.values(), proposal_id, State(expected).value)
        with self._pool.connection() as conn:
            row = conn.execute(statement, params).fetchone()
            if row is not None:
                return record_from_row(row)
            # Only for the message: the row may move again right after this read.
            current = conn.execute(self._state_of, (proposal_id,)).fetchone()
        state = current[0] if current else "absent"
        goal = f"cannot move to {target}" if target else "cannot be changed"
        raise IllegalTransition(f"proposal {proposal_id} is {state}, not {expected}; {goal}")

    def find(self, query: ProposalQuery) -> list[ProposalRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.states:
            clauses.append("state = ANY(%s)")
            params.append([State(s).value for s in query.states])
        for column, value in (
            ("tenant_id", query.tenant_id),
            ("tier", query.tier),
            ("patient_id", query.patient_id),
            ("resource_type", query.resource_type),
            ("agent_id", query.agent_id),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if query.created_before is not None:
            clauses.append("created_at < %s")
            params.append(query.created_before)
        if query.expires_before is not None:
            clauses.append("expires_at <> '' AND expires_at < %s")
            params.append(query.expires_before)
        if query.escalation_due_before is not None:
            clauses.append("escalate_at <> '' AND escalated_at = '' AND escalate_at < %s")
            params.append(query.escalation_due_before)
        where = " AND ".join(clauses) or "TRUE"
        statement = self._sql(
            f"SELECT {_COLUMN_LIST} FROM {self._proposals} WHERE {where} "  # noqa: S608
            "ORDER BY created_at, proposal_id LIMIT %s"
        )
        with self._pool.connection() as conn:
            rows = conn.execute(
                statement, (*params, max(0, min(query.limit, _MAX_LIMIT)))
            ).fetchall()
        return [record_from_row(row) for row in rows]

    def add_approval(self, approval: ApprovalRecord) -> tuple[ApprovalRecord, bool]:
        approval = replace(approval, created_at=approval.created_at or utc_now())
        row = approval_row(approval)
        params = (*row, approval.proposal_id, State.PENDING_APPROVAL.value)
        with self._pool.connection() as conn:
            if conn.execute(self._insert_approval, params).rowcount == 1:
                return approval, True
            existing = conn.execute(
                self._approval_by_reviewer,
                (approval.proposal_id, approval.issuer, approval.subject),
            ).fetchone()
        if existing is None:
            raise IllegalTransition(
                f"proposal {approval.proposal_id} is not pending approval: no approval added"
            )
        return approval_from_row(existing), False

    def approvals(self, proposal_id: str) -> list[ApprovalRecord]:
        with self._pool.connection() as conn:
            rows = conn.execute(self._approvals_of, (proposal_id,)).fetchall()
        return [approval_from_row(row) for row in rows]
