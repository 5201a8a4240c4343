"""Single-use token ids: a `jti` is recorded once, atomically, and any second use is a replay."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


class JtiStore:
    """Used token ids in SQLite, kept until well after their tokens have expired."""

    # Rows are kept this long past expiry so clock skew cannot reopen a window for replay.
    RETENTION_SECONDS = 600

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._inserts = 0
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS used_jti (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)"
            )

    def consume(self, jti: str, expires_at: int) -> bool:
        """Record a jti as used; False if it was used before (a replay)."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO used_jti (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
                (jti, expires_at),
            )
            self._inserts += 1
            if self._inserts % 1000 == 0:
                self._conn.execute(
                    "DELETE FROM used_jti WHERE expires_at < ?",
                    (int(time.time()) - self.RETENTION_SECONDS,),
                )
            return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()
