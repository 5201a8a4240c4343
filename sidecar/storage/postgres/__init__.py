"""PostgreSQL backend of the proposal store (several replicas, across hosts, share one database)."""

from sidecar.storage.postgres.store import SCHEMA_VERSION, PostgresStore

__all__ = ["SCHEMA_VERSION", "PostgresStore"]
