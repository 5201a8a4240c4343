"""A thin typed layer over regopy (rego-cpp): compile a policy once, query entrypoints fast, read errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regopy
from regopy import rego_shared

from sidecar.policy.loader import PolicyLoadError, PolicyModule, PolicySet, compile_error

# The C entry points regopy itself binds (argtypes set there). Calling them directly skips
# regopy's per-node Python wrappers: converting a typical 1-2 KB input through `regopy.Input`
# costs ~3x more than this (bench/policy_eval.py).
_lib = rego_shared.rego
_new_input: Callable[[], int] = _lib.regoNewInput
_free_input: Callable[[int], None] = _lib.regoFreeInput
_in_str: Callable[[int, bytes], int] = _lib.regoInputString
_in_int: Callable[[int, int], int] = _lib.regoInputInt
_in_float: Callable[[int, float], int] = _lib.regoInputFloat
_in_bool: Callable[[int, bool], int] = _lib.regoInputBoolean
_in_null: Callable[[int], int] = _lib.regoInputNull
_in_item: Callable[[int], int] = _lib.regoInputObjectItem
_in_object: Callable[[int, int], int] = _lib.regoInputObject
_in_array: Callable[[int, int], int] = _lib.regoInputArray

_INT64 = range(-(2**63), 2**63)


class RegoEvaluationError(Exception):
    """rego-cpp reported an error while evaluating (e.g. a builtin error under strict errors)."""


class UndefinedResult(Exception):
    """The entrypoint evaluated to undefined."""


def _add(handle: int, value: Any) -> None:
    kind = type(value)
    if kind is str:
        code = _in_str(handle, value.encode("utf-8"))
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError("policy input object keys must be strings")
            _in_str(handle, key.encode("utf-8"))
            _add(handle, item)
            _in_item(handle)
        code = _in_object(handle, len(value))
    elif kind is list or kind is tuple:
        for item in value:
            _add(handle, item)
        code = _in_array(handle, len(value))
    elif kind is bool:
        code = _in_bool(handle, value)
    elif kind is int:
        if value not in _INT64:
            raise TypeError("policy input integers must fit in 64 bits")
        code = _in_int(handle, value)
    elif kind is float:
        code = _in_float(handle, value)
    elif value is None:
        code = _in_null(handle)
    elif isinstance(value, Mapping):
        _add(handle, dict(value))
        return
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        _add(handle, list(value))
        return
    else:
        raise TypeError(f"cannot pass a {kind.__name__} to policy")
    if code != 0:
        raise TypeError(f"rego-cpp refused a {kind.__name__} in the policy input (code {code})")


def set_input(interpreter: regopy.Interpreter, value: Any) -> None:
    """Set the interpreter's input document (rego-cpp copies it, so it is freed at once)."""
    handle = _new_input()
    try:
        _add(handle, value)
        rego_shared.rego_set_input(interpreter._impl, handle)
    finally:
        _free_input(handle)


_ERRMSG = re.compile(r"\(errormsg \d+:([^)\n]*)")


def _error_messages(node: int) -> list[str]:
    """The `errormsg` texts of a rego-cpp error node (an error sequence and its children)."""
    try:
        text = rego_shared.rego_node_json(node)
        for i in range(rego_shared.rego_node_size(node)):
            text += rego_shared.rego_node_json(rego_shared.rego_node_get(node, i))
    except Exception:  # error details are best effort; the caller already failed
        return []
    return [m.strip()[:120] for m in _ERRMSG.findall(text)]


def _error_text(output: int) -> str:
    """The first `errormsg` of an error output: builtin messages are fixed phrases ("divide by
    zero", "invalid syntax"), not input values, so they are fit for a reason message."""
    messages = _error_messages(rego_shared.rego_output_node(output))
    return messages[0] if messages else "evaluation error"


def query_entrypoint(
    interpreter: regopy.Interpreter, bundle: regopy.Bundle, entrypoint: str
) -> Any:
    """Evaluate one entrypoint of a built bundle and return its value.

    Raises RegoEvaluationError on an engine error and UndefinedResult when undefined. The JSON
    text is parsed here (not by regopy.Output) so invalid output is an error we can name.
    """
    output = rego_shared.rego_bundle_query_entrypoint(interpreter._impl, bundle._impl, entrypoint)
    try:
        if not rego_shared.rego_output_ok(output):
            raise RegoEvaluationError(_error_text(output))
        text = rego_shared.rego_output_string(output)
    finally:
        rego_shared.rego_free_output(output)
    if text == "undefined":
        raise UndefinedResult(entrypoint)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegoEvaluationError(f"rego-cpp produced output that is not JSON ({exc.msg})") from exc
    results = parsed if isinstance(parsed, list) else [parsed]
    if len(results) != 1 or not isinstance(results[0], dict):
        raise RegoEvaluationError("rego-cpp produced an unexpected result shape")
    expressions = results[0].get("expressions")
    if not isinstance(expressions, list) or not expressions:
        raise UndefinedResult(entrypoint)
    return expressions[0]


def new_interpreter() -> regopy.Interpreter:
    """An interpreter that reports builtin errors (rather than yielding undefined) and keeps
    rego-cpp's own error printing off stdout (errors are raised and logged by us instead)."""
    interpreter = regopy.Interpreter()
    interpreter.strict_built_in_errors = True
    interpreter.log_level = regopy.LogLevel.NONE
    return interpreter


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy set compiled once into a bundle with fixed entrypoints.

    The bundle is read-only once built; each thread queries it through an interpreter of its
    own (`new_interpreter`), as regopy interpreters are not thread-safe.
    """

    policy: PolicySet
    bundle: regopy.Bundle
    entrypoints: tuple[str, ...]
    builder: regopy.Interpreter  # keeps what the bundle was built from alive


def compile_policy(
    policy: PolicySet, entrypoints: Sequence[str], modules: Sequence[PolicyModule] | None = None
) -> CompiledPolicy:
    """Compile modules (default: the serving modules) and data into a bundle; raise
    PolicyLoadError naming file and line on a syntax or compile error."""
    chosen = tuple(policy.serving_modules if modules is None else modules)
    builder = new_interpreter()
    try:
        for module in chosen:
            builder.add_module(module.name, module.source)
        builder.add_data_json(policy.data_json)
        bundle = builder.build(None, list(entrypoints))
    except regopy.RegoError as exc:
        raise compile_error(exc, chosen) from exc
    if not bundle.ok():
        # Some compile errors come back in the bundle rather than raised, without a position.
        messages = _error_messages(bundle.node()._impl) or ["unknown error"]
        raise PolicyLoadError("policy does not compile:\n  " + "\n  ".join(messages))
    return CompiledPolicy(
        policy=policy, bundle=bundle, entrypoints=tuple(entrypoints), builder=builder
    )
