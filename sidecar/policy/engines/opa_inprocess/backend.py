"""OPA's own Go engine in-process (PyPI `opa-golib-python-bindings`: OPA's v1 `rego` package as a shared library).

The reference every other engine is held to: the parity suite runs the corpus and the library's
tests on it in the default test run. It can also serve (`policy_engine: "opa"`), for exact OPA
semantics without an OPA server; it is optional because its wheel declares Python >= 3.14 (its
ctypes wrapper runs on 3.11) and so installs only with `pip install --ignore-requires-python`.
The bridge evaluates with OPA's strict builtin errors, so a builtin error is an error here too.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from sidecar.errors import PolicyEvaluationError, PolicyLoadError, PolicyUndefined
from sidecar.policy.loader import PolicySet

NAME = "opa"

INSTALL_HINT = (
    "the in-process OPA engine is not installed: "
    "pip install --ignore-requires-python opa-golib-python-bindings==0.4.4"
)

_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def _summary(exc: BaseException, lines: int = 1) -> str:
    """The first `lines` lines of an OPA error (a compile error lists one per line after a count),
    printable and bounded."""
    message = str(getattr(exc, "message", None) or exc).strip() or "error"
    kept = [line.strip() for line in message.splitlines() if line.strip()][:lines]
    return "\n  ".join(_PRINTABLE.sub("?", line)[:160] for line in kept)


class OpaInProcessPolicy:
    """A policy set loaded into one OPA engine. The bridge serializes evaluations per engine, so a
    small pool of engines lets threads evaluate at once (the Go call releases the GIL)."""

    def __init__(self, engines: list[Any]) -> None:
        self._free = list(engines)
        self._lock = threading.Condition()

    def query(
        self, path: str, policy_input: Mapping[str, Any] | None, *, checked: bool = False
    ) -> Any:
        from opa_bindings import OpaError, OpaUndefinedError

        with self._lock:
            while not self._free:
                self._lock.wait()
            engine = self._free.pop()
        try:
            # An input of None means "no input" to the bridge, as in `opa test`.
            return engine.eval_document(path, None if policy_input is None else dict(policy_input))
        except OpaUndefinedError:
            raise PolicyUndefined(path) from None
        except OpaError as exc:
            raise PolicyEvaluationError(_summary(exc)) from None
        except (TypeError, ValueError) as exc:  # the input did not serialize as JSON
            raise PolicyEvaluationError(
                f"input not representable as JSON ({type(exc).__name__})"
            ) from None
        finally:
            with self._lock:
                self._free.append(engine)
                self._lock.notify()


class OpaInProcessBackend:
    """PolicyBackend on OPA's Go engine, loaded through its c-shared bridge."""

    def __init__(self, pool_size: int = 2) -> None:
        self._pool_size = pool_size

    @property
    def name(self) -> str:
        return NAME

    def compile(self, policy: PolicySet) -> OpaInProcessPolicy:
        try:
            from opa_bindings import OpaEngine, OpaError
        except ImportError as exc:
            raise PolicyLoadError(INSTALL_HINT) from exc
        data = json.loads(policy.data_json)
        engines = []
        for _ in range(self._pool_size):
            engine = OpaEngine()
            try:
                for module in policy.modules:
                    engine.add_policy(module.name, module.source)
                engine.add_data(data)
                # Compile now (the bridge compiles lazily, on first evaluation), so a broken
                # policy is refused at load, not on the first proposal.
                engine.eval_query("true")
            except OpaError as exc:
                raise PolicyLoadError(
                    f"policy does not compile on OPA:\n  {_summary(exc, lines=6)}"
                ) from None
            engines.append(engine)
        return OpaInProcessPolicy(engines)
