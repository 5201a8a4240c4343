"""`chartgate policy eval`: evaluate one input file on an in-process engine and explain the decision."""

from __future__ import annotations

import json
from pathlib import Path

from sidecar.errors import PolicyLoadError
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Decision
from sidecar.policy.engines import EMBEDDED, backend
from sidecar.validation.strict_json import DuplicateKeyError, loads_strict


def format_decision(decision: Decision) -> str:
    """The decision as a few lines: verdict, tier, revision, then `code  rule  message` per reason."""
    verdict = "ALLOW" if decision.allow else "DENY"
    lines = [
        f"{verdict}  tier {decision.tier.value}  revision {decision.revision}  ({decision.engine})"
    ]
    for reason in decision.reasons:
        lines.append(f"  {reason.code}  {reason.rule or '-'}  {reason.message}")
    if decision.obligations:
        lines.append("  obligations " + json.dumps(dict(decision.obligations), sort_keys=True))
    return "\n".join(lines)


def eval_command(
    input_path: Path, policy_dir: Path, extra_data: Path | None = None, engine: str = EMBEDDED
) -> int:
    """Print the decision for one policy input (docs/policy.md): exit 0 if allowed, 1 if denied,
    2 when the input or the policy cannot be loaded."""
    try:
        policy_input = loads_strict(input_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, DuplicateKeyError, ValueError) as exc:
        print(f"cannot read policy input {input_path}: {exc}")
        return 2
    if not isinstance(policy_input, dict):
        print(f"policy input {input_path} must be a JSON object")
        return 2
    try:
        evaluator = EmbeddedEngine(policy_dir, extra_data, backend=backend(engine))
    except PolicyLoadError as exc:
        print(f"policy refused: {exc}")
        return 2
    decision = evaluator.evaluate(policy_input)
    print(format_decision(decision))
    return 0 if decision.allow else 1
