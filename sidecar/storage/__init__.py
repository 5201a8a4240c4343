"""Storage of sidecar state: the proposal ledger (SQLite by default)."""
