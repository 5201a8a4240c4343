"""Whether a policy input is JSON every engine represents exactly: checked once, before any engine sees it.

Engines differ outside this range, and a difference is a decision that depends on which engine
runs: OPA keeps integers of any size, regorus refuses integers beyond 64 bits and floats of
integral value beyond them; rego-cpp could not even convert them. Non-finite numbers are not
JSON (RFC 8259 §6), and a lone surrogate is not Unicode (RFC 8259 §8.2; regorus's binding
crashes the process on one). So every engine is handed only: objects with string keys, arrays,
UTF-8 strings, booleans, null, integers within signed 64 bits, finite floats of magnitude below
2^63. Anything else denies with `policy.input_unrepresentable` on every engine alike.
"""

from __future__ import annotations

from typing import Any, Final

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
_FLOAT_BOUND: Final = 9.2e18  # below 2^63: regorus converts integral floats to integers


def unrepresentable(value: Any) -> str | None:
    """None when `value` is within the representable subset, else what is wrong (never the value).

    Iterative, so a deep input cannot exhaust the stack; about 6 µs for the usual input.
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return "a string that is not valid Unicode (a lone surrogate)"
        elif kind is dict:
            for key in item:
                if type(key) is not str:
                    return "an object key that is not a string"
                push(key)
            extend(item.values())
        elif kind is list:
            extend(item)
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return "an integer beyond signed 64 bits"
        elif kind is float:
            # NaN fails both comparisons, so it is refused here too.
            if not -_FLOAT_BOUND < item < _FLOAT_BOUND:
                return "a number that is not finite or beyond 2^63"
        elif kind is not bool and item is not None:
            return f"a value of type {kind.__name__}, which is not JSON"
    return None
