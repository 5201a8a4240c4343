"""Fixtures: the FHIR store as a separate process on a free loopback port, each test with a fresh db."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

from chartgate.stack import free_port

REPO = Path(__file__).resolve().parents[2]
FHIR_JSON = "application/fhir+json"


@dataclass
class StoreProcess:
    """One running `python -m chartgate.devstore`; `restart()` keeps the db and the port.

    `args` are extra command-line options (`--faults FILE`, `--allow-fault-control`,
    `--clients FILE`); `host` is the address it binds and is reached at.
    """

    db: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    def start(self, port: int | None = None) -> None:
        """Start on `port`, else on the port it had (a restart), else on a free one."""
        self.port = port or self.port or free_port()
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chartgate.devstore",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--db",
                str(self.db),
                *self.args,
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 20.0
        with httpx.Client(timeout=1.0) as probe:  # one client: building one per poll costs CPU
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"store exited with {self.popen.returncode}: {self.log()}")
                try:
                    if probe.get(f"{self.base}/metadata").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"store not ready after 20 s: {self.log()}")

    def stop(self) -> int:
        """SIGTERM, as an operator would; the exit code (0 for a clean shutdown)."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10.0)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._log is not None:
            self._log.close()
        return self.popen.returncode

    def kill(self) -> int:
        """SIGKILL: a crash, no shutdown code runs."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        if self._log is not None:
            self._log.close()
        return self.popen.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreProcess]:
    running = StoreProcess(db=tmp_path / "store" / "fhir.sqlite3", log_path=tmp_path / "store.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def client(store: StoreProcess) -> Iterator[httpx.Client]:
    """An httpx client on the store's base URL; requests take paths relative to the base."""
    with httpx.Client(
        base_url=store.base + "/", headers={"Accept": FHIR_JSON}, timeout=10.0
    ) as http:
        yield http
