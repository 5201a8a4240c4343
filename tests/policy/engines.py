"""Every policy engine the product can run, built the same way, for the shared engine test suite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import PolicyEngine
from sidecar.policy.engines import backend
from sidecar.policy.engines.opa_server.engine import OpaServerEngine
from tests.policy.opa_server import opa_server

# regorus: the embedded default. opa: OPA's Go engine in-process. opa-server: the production
# path, OpaServerEngine over HTTP against OPA's engine behind the REST Data API.
BACKENDS = ("regorus", "opa", "opa-server")


@contextmanager
def make_engine(
    kind: str, policy_dir: Path, extra_data: Path | None = None
) -> Iterator[PolicyEngine]:
    """A fresh engine of `kind` serving `policy_dir` (and operator data)."""
    if kind == "opa-server":
        with opa_server(policy_dir, extra_data) as server:
            engine = OpaServerEngine(server.url, timeout_seconds=10)
            try:
                yield engine
            finally:
                engine.close()
        return
    yield EmbeddedEngine(policy_dir, extra_data, backend=backend(kind))
