"""The store suite on every backend (SQLite in tmp_path, PostgreSQL in a database of its own), and PostgreSQL's own."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.proposals.lifecycle import State
from sidecar.storage.records import ProposalQuery
from sidecar.storage.sqlite.store import SqliteStore
from tests.storage.backends import (
    POSTGRES_DSN_ENV,
    Backend,
    PostgresBackend,
    SqliteBackend,
    connect,
    fresh_database,
    postgres_dsn,
    redacted,
)
from tests.storage.samples import full_record, record
from tests.storage.suite import REPO, ProposalStoreSuite


@dataclass(frozen=True)
class Server:
    """The PostgreSQL database this module's tests use."""

    dsn: str
    owned: bool  # a database created for this module (False: the DSN's own, schemas only)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    """A fresh database on the test server, dropped after the module; skip if unreachable."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is absent")
    dsn = postgres_dsn()
    try:
        connect(dsn).close()
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(
            f"PostgreSQL is not reachable at {redacted(dsn)} ({first_line}); start it or set "
            f"{POSTGRES_DSN_ENV} to a server the tests may create a database on"
        )
    with fresh_database(dsn) as database:
        yield Server(database, owned=database != dsn)


def new_schema() -> str:
    return f"chartgate_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty store location of each backend, for every test."""
    if request.param == "sqlite":
        sqlite = SqliteBackend(tmp_path / "store.sqlite3")
        yield sqlite
        sqlite.close_all()
        return
    server: Server = request.getfixturevalue("postgres")
    pg = PostgresBackend(server.dsn, new_schema())
    yield pg
    pg.drop()


class TestProposalStore(ProposalStoreSuite):
    """Every test of the suite, once per backend."""


# --- PostgreSQL only ------------------------------------------------------------------------


@pytest.fixture
def pg(postgres: Server) -> Iterator[PostgresBackend]:
    backend = PostgresBackend(postgres.dsn, new_schema())
    yield backend
    backend.drop()


@pytest.mark.postgres
def test_postgres_stores_the_same_column_text_as_sqlite(
    pg: PostgresBackend, tmp_path: Path
) -> None:
    """Byte for byte the columns SQLite stores, so the two ledgers read alike (timestamps aside)."""
    from psycopg import sql

    sqlite = SqliteStore(tmp_path / "s.sqlite3")
    store = pg.open()
    given = full_record("pr-1")
    sqlite.insert_or_get(given)
    store.insert_or_get(given)
    sqlite.close()
    lite = sqlite3.connect(tmp_path / "s.sqlite3")
    lite.row_factory = sqlite3.Row
    lite_row = dict(lite.execute("SELECT * FROM proposals").fetchone())
    lite.close()
    with connect(pg.dsn) as conn:
        cursor = conn.execute(
            sql.SQL("SELECT * FROM {}.proposals").format(sql.Identifier(pg.schema))
        )
        names = [column.name for column in cursor.description]
        pg_row = dict(zip(names, cursor.fetchone(), strict=True))
    assert set(pg_row) == set(lite_row)
    for name in ("created_at", "updated_at"):
        assert len(pg_row.pop(name)) == len(lite_row.pop(name))
    assert pg_row == lite_row


@pytest.mark.postgres
def test_replicas_starting_together_create_the_schema_once(pg: PostgresBackend) -> None:
    from sidecar.storage.postgres import PostgresStore

    n = 6
    start = threading.Barrier(n)
    opened: list[Any] = [None] * n

    def open_one(i: int) -> None:
        start.wait()
        try:
            opened[i] = pg.keep(PostgresStore(pg.dsn, schema=pg.schema))
        except Exception as exc:  # reported below, with every other outcome
            opened[i] = exc

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(o, PostgresStore) for o in opened), opened
    opened[0].insert_or_get(record("pr-1"))
    assert all(o.get("pr-1") is not None for o in opened)


@pytest.mark.postgres
def test_the_default_schema_is_chartgate(postgres: Server) -> None:
    if not postgres.owned:
        pytest.skip("the default schema is only tried in a database of the tests' own")
    from sidecar.storage.postgres import PostgresStore

    store = PostgresStore(postgres.dsn)
    try:
        store.insert_or_get(record("pr-1"))
        with connect(postgres.dsn) as conn:
            count = conn.execute("SELECT count(*) FROM chartgate.proposals").fetchone()
        assert count == (1,)
    finally:
        store.close()
        with connect(postgres.dsn) as conn:
            conn.execute("DROP SCHEMA IF EXISTS chartgate CASCADE")


@pytest.mark.postgres
@pytest.mark.parametrize("schema", ['Chart Gate "quoted"', "ünïcode-schema", "select"])
def test_any_schema_name_is_quoted(postgres: Server, schema: str) -> None:
    backend = PostgresBackend(postgres.dsn, schema)
    try:
        store = backend.open()
        store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
        store.update("pr-1", State.PENDING_APPROVAL, tier="approval")
        assert [r.tier for r in store.find(ProposalQuery(states=(State.PENDING_APPROVAL,)))] == [
            "approval"
        ]
    finally:
        backend.drop()


@pytest.mark.parametrize(
    "schema", ["", "s" * 64, "é" * 32], ids=["empty", "64_ascii_bytes", "64_utf8_bytes"]
)
def test_a_schema_name_postgres_would_truncate_is_refused(schema: str) -> None:
    pytest.importorskip("psycopg")
    from sidecar.storage.postgres import PostgresStore

    # Refused before any connection: nothing listens on port 1.
    with pytest.raises(ValueError, match="schema name"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/postgres", schema=schema)


def test_an_unreachable_server_fails_at_start_with_a_driver_error() -> None:
    psycopg = pytest.importorskip("psycopg")
    from sidecar.storage.postgres import PostgresStore

    began = time.monotonic()
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(psycopg.Error):
        PostgresStore("postgresql://postgres@127.0.0.1:1/postgres", timeout=1.0)
    assert time.monotonic() - began < 10


@pytest.mark.postgres
def test_a_statement_stuck_behind_a_lock_fails_in_bounded_time(pg: PostgresBackend) -> None:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    from sidecar.storage.postgres import PostgresStore

    store = pg.keep(PostgresStore(pg.dsn, schema=pg.schema, timeout=0.5))
    store.insert_or_get(record("pr-1", state=State.PENDING_APPROVAL))
    with connect(pg.dsn) as holder, holder.transaction():
        holder.execute(
            sql.SQL("SELECT 1 FROM {}.proposals WHERE proposal_id = 'pr-1' FOR UPDATE").format(
                sql.Identifier(pg.schema)
            )
        )
        began = time.monotonic()
        # A storage error (ledger.unavailable, retryable), not a gRPC worker held forever.
        with pytest.raises(psycopg.Error):
            store.transition("pr-1", State.PENDING_APPROVAL, State.APPROVED)
        assert time.monotonic() - began < 5
    assert store.transition("pr-1", State.PENDING_APPROVAL, State.APPROVED).state is State.APPROVED


def test_docs_show_the_postgres_schema_the_store_creates() -> None:
    pytest.importorskip("psycopg")
    from sidecar.storage.postgres.store import _DDL

    assert _DDL.format(schema="chartgate").strip() in (REPO / "docs/storage.md").read_text()
