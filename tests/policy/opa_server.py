"""A real OPA server for the tests, when one is available: `opa` on PATH, or CHARTGATE_OPA_URL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

NO_OPA = (
    "no OPA available: install the `opa` binary on PATH or set CHARTGATE_OPA_URL to a server "
    "loaded with rego/ (e.g. `opa run --server rego/`)"
)


def opa_available() -> bool:
    return bool(os.environ.get("CHARTGATE_OPA_URL") or shutil.which("opa"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def opa_server(policy_dir: Path) -> Iterator[str]:
    """The URL of an OPA server with `policy_dir` loaded (started here when `opa` is on PATH)."""
    url = os.environ.get("CHARTGATE_OPA_URL")
    if url:
        yield url.rstrip("/")
        return
    binary = shutil.which("opa")
    if binary is None:
        raise RuntimeError(NO_OPA)
    port = free_port()
    process = subprocess.Popen(
        [binary, "run", "--server", "--addr", f"127.0.0.1:{port}", str(policy_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                detail = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"opa did not start: {detail}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
