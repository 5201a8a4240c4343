"""Policy engine backends, one folder each: regorus (the embedded default), OPA in-process, OPA server."""

from __future__ import annotations

from sidecar.errors import PolicyLoadError
from sidecar.policy.engine import PolicyBackend

EMBEDDED = "regorus"
IN_PROCESS_BACKENDS = ("regorus", "opa")


def backend(name: str = EMBEDDED) -> PolicyBackend:
    """The in-process backend called `name`; imported on first use, so an optional engine that is
    not installed costs nothing until a configuration asks for it."""
    if name == "regorus":
        from sidecar.policy.engines.regorus.backend import RegorusBackend

        return RegorusBackend()
    if name == "opa":
        from sidecar.policy.engines.opa_inprocess.backend import OpaInProcessBackend

        return OpaInProcessBackend()
    raise PolicyLoadError(f"unknown policy engine {name!r}; use one of {list(IN_PROCESS_BACKENDS)}")
