"""The embedded policy engine: a policy compiled once per revision by an in-process backend, evaluated fail-closed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sidecar.errors import PolicyEvaluationError, PolicyUndefined
from sidecar.policy.engine import (
    DECISION_PACKAGE,
    DECISION_RULE,
    Decision,
    PolicyBackend,
    decision_from_document,
    deny,
)
from sidecar.policy.engines import backend as named_backend
from sidecar.policy.loader import PolicySet, load_policy
from sidecar.policy.representable import unrepresentable

log = logging.getLogger("chartgate.policy")

DECISION_PATH = f"{DECISION_PACKAGE}.{DECISION_RULE}"


class EmbeddedEngine:
    """PolicyEngine on an in-process backend (regorus by default; `engines/` holds the others).

    Raises PolicyLoadError at construction when the policy cannot be served (unreadable,
    invalid, a syntax error, or a builtin the backend lacks). `evaluate` never raises: an engine
    error, an undefined result or a malformed document denies with a `policy.*` reason.
    """

    def __init__(
        self,
        policy_dir: Path,
        extra_data: Path | None = None,
        *,
        backend: PolicyBackend | None = None,
        policy: PolicySet | None = None,
    ) -> None:
        self._policy = policy if policy is not None else load_policy(policy_dir, extra_data)
        self._backend = backend if backend is not None else named_backend()
        self._compiled = self._backend.compile(self._policy)

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def revision(self) -> str:
        return self._policy.revision

    @property
    def policy(self) -> PolicySet:
        return self._policy

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        revision, engine = self._policy.revision, self._backend.name
        problem = unrepresentable(policy_input)
        if problem is not None:
            return deny(
                "policy.input_unrepresentable",
                f"the policy input holds {problem}; denying",
                revision=revision,
                engine=engine,
            )
        try:
            document = self._compiled.query(DECISION_PATH, policy_input, checked=True)
        except PolicyUndefined:
            return deny(
                "policy.undefined",
                f"policy decision data.{DECISION_PATH} is undefined for this input; denying",
                revision=revision,
                engine=engine,
            )
        except PolicyEvaluationError as exc:
            log.error("policy evaluation failed (revision %s, %s): %s", revision, engine, exc)
            return deny(
                "policy.engine_error",
                f"policy evaluation failed in the {engine} engine ({exc}); denying",
                revision=revision,
                engine=engine,
            )
        except Exception as exc:  # any defect here must deny, never raise into the caller
            log.exception("policy engine failed (revision %s, %s)", revision, engine)
            return deny(
                "policy.engine_error",
                f"the {engine} policy engine failed ({type(exc).__name__}); denying",
                revision=revision,
                engine=engine,
            )
        return decision_from_document(document, revision=revision, engine=engine)
