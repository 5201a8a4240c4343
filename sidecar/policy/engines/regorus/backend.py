"""The embedded engine: regorus (microsoft/regorus, Rust) in-process, one interpreter per thread.

Why regorus (docs/policy.md, "Choosing the embedded engine"): results come back as Python values
built by the engine, never as text to re-parse, so no input string can forge a decision; its
memory stays flat; it installs as one abi3 wheel; it evaluates the shipped library fastest with
the tightest tail among the engines that install here, and the library decides the same on it as
on OPA (the parity suite runs both).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

# The regorus binding allocates with mimalloc, which by default commits each thread's arena
# eagerly: measured, 16 threads that each build and query an engine cost +118 MB of RSS, against
# +28 MB with eager commit off, at the same evaluation speed (bench/memory_soak.py). Read by
# mimalloc when the library loads, so it is set before the import; an operator's value wins.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

import regorus  # after the allocator setting above

from sidecar.errors import PolicyEvaluationError, PolicyLoadError, PolicyUndefined
from sidecar.policy.engines.regorus.calls import BuiltinCall, builtin_calls
from sidecar.policy.loader import PolicyModule, PolicySet
from sidecar.policy.representable import unrepresentable

log = logging.getLogger("chartgate.policy")

NAME = "regorus"

# A regorus Engine is `unsendable` (pyo3): used or dropped on any thread but the one that made it,
# it panics. So each thread builds its own from the sources (~10 ms once per revision per thread)
# and keeps it here; a thread evicts only its own engines, so every drop happens on the owner.
_local = threading.local()
# The enforced policy and a shadow candidate, and one revision being replaced: older revisions'
# engines are evicted by the thread that owns them as it meets newer ones.
_PER_THREAD = 3
_keys = itertools.count(1)

_LOCATION = re.compile(r"-->\s*([^:\s]+):(\d+):\d+")
_ERROR = re.compile(r"^error:\s*(.*)$", re.MULTILINE)
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def error_summary(exc: BaseException) -> str:
    """`file:line: message` from a regorus error, bounded and printable: fit for a log line and a
    reason message (it names policy source positions, and at most 100 characters of text)."""
    text = str(exc)
    where = _LOCATION.search(text)
    message = _ERROR.search(text)
    summary = message.group(1) if message else (text.strip().splitlines() or ["error"])[0]
    summary = _PRINTABLE.sub("?", summary)[:100]
    return f"{where.group(1)}:{where.group(2)}: {summary}" if where else summary


def _build(modules: Sequence[PolicyModule], data_json: str) -> regorus.Engine:
    engine = regorus.Engine()
    engine.set_rego_v0(False)
    for module in modules:
        try:
            engine.add_policy(module.name, module.source)
        except RuntimeError as exc:
            raise PolicyLoadError(
                f"policy does not compile:\n  {module.name}: {error_summary(exc)}"
            ) from None
    engine.add_data_json(data_json)
    return engine


# Builtins a decision must not depend on: a decision is a function of its input and data, so it
# can be reproduced from its audit record. regorus also answers `http.send` with undefined (it
# has no HTTP client), which would make a deny rule silently never fire.
NONDETERMINISTIC = frozenset(
    {"http.send", "time.now_ns", "rand.intn", "uuid.rfc4122", "opa.runtime", "net.lookup_ip_addr"}
)


def _missing_builtins(calls: Sequence[BuiltinCall]) -> list[str]:
    """Calls of builtins regorus does not implement, or that a decision must not depend on.
    regorus resolves a call only when it is reached, so a branch calling a missing one would fail
    only on the inputs that reach it: probe each distinct (name, arity) once here instead."""
    refused = [
        f"{c.file}:{c.line}: calls {c.name}, which a decision must not depend on "
        "(it is not a function of the input and data)"
        for c in calls
        if c.name in NONDETERMINISTIC
    ]
    distinct = sorted({(c.name, c.arity) for c in calls if c.name not in NONDETERMINISTIC})
    if not distinct:
        return refused
    lines = ["package chartgate_probe", "import rego.v1"]
    for index, (name, arity) in enumerate(distinct):
        lines.append(f"p{index} := {name}({', '.join(['null'] * arity)})")
    probe = regorus.Engine()
    probe.add_policy("probe.rego", "\n".join(lines) + "\n")
    missing: set[tuple[str, int]] = set()
    for index, key in enumerate(distinct):
        try:
            probe.eval_rule(f"data.chartgate_probe.p{index}")
        except RuntimeError as exc:
            if "could not find function" in str(exc):
                missing.add(key)
    return refused + [
        f"{c.file}:{c.line}: calls {c.name}, which the embedded engine (regorus) does not implement"
        for c in calls
        if (c.name, c.arity) in missing
    ]


class RegorusPolicy:
    """A policy set compiled for regorus; `query` is safe from any thread (see `_local`)."""

    def __init__(self, modules: tuple[PolicyModule, ...], data_json: str) -> None:
        self._modules = modules
        self._data_json = data_json
        self._key = next(_keys)

    def _engine(self, with_input: bool) -> regorus.Engine:
        cache: OrderedDict[tuple[int, bool], regorus.Engine] | None = getattr(
            _local, "engines", None
        )
        if cache is None:
            cache = OrderedDict()
            _local.engines = cache
        key = (self._key, with_input)
        engine = cache.get(key)
        if engine is None:
            engine = _build(self._modules, self._data_json)
            cache[key] = engine
            while len(cache) > _PER_THREAD:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return engine

    def query(
        self, path: str, policy_input: Mapping[str, Any] | None, *, checked: bool = False
    ) -> Any:
        # Tests run without input (as under OPA); they get an engine that never had one.
        engine = self._engine(policy_input is not None)
        try:
            if policy_input is not None:
                # Converted from Python values by the binding: half the cost of JSON text. Safe
                # only on values sidecar.policy.representable accepts (the binding crashes the
                # process on a lone surrogate), which EmbeddedEngine checks first; anything
                # else goes through JSON text, which regorus parses strictly.
                if checked or unrepresentable(policy_input) is None:
                    engine.set_input(policy_input)
                else:
                    engine.set_input_json(json.dumps(policy_input, allow_nan=False))
            value = engine.eval_rule(f"data.{path}")
        except (RuntimeError, ValueError, OverflowError) as exc:
            raise PolicyEvaluationError(error_summary(exc)) from None
        if value is None:  # regorus answers None for an undefined rule
            raise PolicyUndefined(path)
        return value


class RegorusBackend:
    """PolicyBackend on regorus (PyPI `gordon-to-regorus`: upstream regorus, built unmodified)."""

    @property
    def name(self) -> str:
        return NAME

    def compile(self, policy: PolicySet) -> RegorusPolicy:
        engine = _build(policy.modules, policy.data_json)  # parse errors surface here, named
        problems = _missing_builtins(builtin_calls(engine.get_ast_as_json()))
        if problems:
            raise PolicyLoadError("policy refused:\n  " + "\n  ".join(problems))
        return RegorusPolicy(policy.modules, policy.data_json)
