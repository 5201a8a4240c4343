"""Every proposal store backend, opened the same way, for the shared store suite (tests/storage/suite.py)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from sidecar.storage.sqlite.store import SqliteStore
from sidecar.storage.store import ProposalStore

# The server the PostgreSQL tests use; they skip, naming it, when it cannot be reached.
POSTGRES_DSN_ENV = "CHARTGATE_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class Backend(Protocol):
    """One fresh, empty store location (a file, a schema) and how to open stores on it."""

    name: str
    # What the backend raises for a storage failure (the service maps them to ledger.unavailable).
    errors: tuple[type[Exception], ...]

    def open(self) -> ProposalStore:
        """Another store instance on the same location (closed by `close_all`)."""
        ...

    def spec(self) -> dict[str, str]:
        """What another process needs to open the same location (see `open_store`)."""
        ...

    def set_schema_version(self, version: int) -> None:
        """Mark the location as holding a ledger of another schema version."""
        ...

    def close_all(self) -> None: ...


class _Opened:
    """Keeps every store a backend opened, so a failing test cannot leak one."""

    def __init__(self) -> None:
        self.stores: list[ProposalStore] = []

    def keep(self, store: ProposalStore) -> ProposalStore:
        self.stores.append(store)
        return store

    def close_all(self) -> None:
        for store in self.stores:
            with suppress(Exception):
                store.close()
        self.stores.clear()


class SqliteBackend(_Opened):
    name = "sqlite"
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def open(self) -> ProposalStore:
        return self.keep(SqliteStore(self.path))

    def spec(self) -> dict[str, str]:
        return {"backend": "sqlite", "path": str(self.path)}

    def set_schema_version(self, version: int) -> None:
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(f"PRAGMA user_version={int(version)}")
        finally:
            conn.close()


class PostgresBackend(_Opened):
    name = "postgres"

    def __init__(self, dsn: str, schema: str) -> None:
        import psycopg

        super().__init__()
        self.dsn = dsn
        self.schema = schema
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def open(self) -> ProposalStore:
        from sidecar.storage.postgres import PostgresStore

        # Enough connections that the suite's 8 racing threads race in the database, not
        # in the pool's queue.
        return self.keep(
            PostgresStore(self.dsn, schema=self.schema, min_connections=8, max_connections=8)
        )

    def spec(self) -> dict[str, str]:
        return {"backend": "postgres", "dsn": self.dsn, "schema": self.schema}

    def set_schema_version(self, version: int) -> None:
        from psycopg import sql

        with connect(self.dsn) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.schema_version SET version = %s").format(
                    sql.Identifier(self.schema)
                ),
                (version,),
            )

    def drop(self) -> None:
        from psycopg import sql

        self.close_all()
        with connect(self.dsn) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


def open_store(spec: Mapping[str, str]) -> ProposalStore:
    """A store on the location `spec` names (Backend.spec), in this process."""
    if spec["backend"] == "sqlite":
        return SqliteStore(Path(spec["path"]))
    from sidecar.storage.postgres import PostgresStore

    return PostgresStore(spec["dsn"], schema=spec["schema"])


def postgres_dsn() -> str:
    return os.environ.get(POSTGRES_DSN_ENV) or DEFAULT_POSTGRES_DSN


def redacted(dsn: str) -> str:
    """The DSN without its password, for a skip reason or a log line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        settings = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable DSN>"
    if "password" not in settings:
        return dsn
    settings["password"] = "***"
    return make_conninfo("", **settings)


def connect(dsn: str) -> Any:
    """An autocommit admin connection (psycopg.Connection), failing within 3 s."""
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=3)


@contextmanager
def fresh_database(dsn: str) -> Iterator[str]:
    """A new database on the server `dsn` names, dropped afterwards; yields its DSN.

    It is created with an ICU en-US collation where the server has ICU, so a backend that
    compares text by the database's collation instead of bytewise (as SQLite does) orders
    differently here and fails the suite. When the role may not create databases, the
    tests use `dsn`'s own database: every test's schema is its own and dropped after it.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"chartgate_test_{uuid.uuid4().hex[:12]}"
    plain = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    icu = sql.SQL(
        "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
        "LOCALE 'C.UTF-8'"
    ).format(sql.Identifier(name))
    created = True
    with connect(dsn) as conn:
        try:
            try:
                conn.execute(icu)
            except psycopg.errors.InsufficientPrivilege:
                raise
            except psycopg.Error:  # no ICU, or no C.UTF-8 locale: the default collation
                conn.execute(plain)
        except psycopg.errors.InsufficientPrivilege:
            created = False
    if not created:
        yield dsn
        return
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with connect(dsn) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
