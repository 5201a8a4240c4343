"""The embedded policy engine: rego-cpp through regopy, compiled once per revision, failing closed."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import regopy

from sidecar.policy.engine import DECISION_PACKAGE, DECISION_RULE, Decision, decision_from_document, deny
from sidecar.policy.loader import PolicyLoadError, PolicySet, compile_error, load_policy

ENTRYPOINT = f"{DECISION_PACKAGE.replace('.', '/')}/{DECISION_RULE}"


class EmbeddedEngine:
    """A compiled bundle of one policy revision; evaluation is serialized (regopy is not thread-safe)."""

    name = "embedded"

    def __init__(self, policy_dir: Path, extra_data: Path | None = None) -> None:
        self._policy = load_policy(policy_dir, extra_data)
        self._lock = threading.Lock()
        self._interpreter, self._bundle = _compile(self._policy)

    @property
    def revision(self) -> str:
        return self._policy.revision

    @property
    def policy(self) -> PolicySet:
        return self._policy

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        try:
            with self._lock:
                self._interpreter.set_input(regopy.Input(dict(policy_input)))
                output = self._interpreter.query_bundle_entrypoint(self._bundle, ENTRYPOINT)
                ok = output.ok()
                text = output.node().json() if ok else ""
        except Exception as exc:  # regopy raises RegoError and others; fail closed on all
            return deny(
                "policy.engine_error",
                f"the policy engine failed ({type(exc).__name__}); denying",
                revision=self.revision,
                engine=self.name,
            )
        if not ok:
            return deny(
                "policy.engine_error",
                "the policy engine reported an evaluation error; denying",
                revision=self.revision,
                engine=self.name,
            )
        try:
            expressions = json.loads(text).get("expressions", [])
        except (ValueError, AttributeError):
            expressions = []
        document = expressions[0] if expressions else None
        return decision_from_document(document, revision=self.revision, engine=self.name)


def _compile(policy: PolicySet) -> tuple[Any, Any]:
    interpreter = regopy.Interpreter()
    interpreter.strict_built_in_errors = True
    try:
        interpreter.add_data_json(policy.data_json)
        for module in policy.serving_modules:
            interpreter.add_module(module.name, module.source)
        bundle = interpreter.build(None, [ENTRYPOINT])
    except Exception as exc:
        raise compile_error(exc, policy.serving_modules) from exc
    if not bundle.ok():
        raise PolicyLoadError(f"{policy.root}: policy did not compile")
    return interpreter, bundle
