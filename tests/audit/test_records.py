"""The record encoder: its bytes are RFC 8785 (as the rfc8785 library makes them) for any body."""

from __future__ import annotations

import random
from typing import Any

import pytest
import rfc8785

from chartgate.canonical import stdlib_agrees
from sidecar.audit.records import (
    MAX_STRING_CHARS,
    _check_value,
    _quickly_valid,
    b64url_decode,
    b64url_encode,
    encode_head,
)

# Characters where JSON encoders tend to differ: escapes, controls, DEL, line separators,
# non-ASCII in the BMP on both sides of the surrogate range, and astral characters (whose UTF-16
# surrogates sort below U+E000 but whose code points sort above it).
TRICKY = [
    *['"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "\u2028", "\u2029"],
    *["é", "ÿ", "Ā", "中", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0001f600"],
    *"azAZ09-_. ",
]
FLOATS = [0.1, 0.5, 1.5, -2.25, 1e-4, 1e-5, 1e-6, 1e-7, 1e15, 1e16, 1e20, 1e21, 1e22]
FLOATS += [123456789.125, 9007199254740991.0, 5e-324, 1.7976931348623157e308, 0.0, -0.0, 3.0]


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 8)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randint(0, 9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, 1, -1, 2**53 - 1, -(2**53 - 1), rng.randint(-(10**12), 10**12)])
    if choice == 3:
        return rng.choice(
            [*FLOATS, rng.uniform(-1, 1), rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-12, 12)]
        )
    if choice in (4, 5, 6):
        return random_string(rng)
    if choice in (7, 8):
        return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def test_encode_head_matches_rfc8785_on_random_bodies() -> None:
    rng = random.Random(8785)
    plain = 0
    for _ in range(3000):
        body = {random_string(rng): random_value(rng) for _ in range(rng.randint(0, 5))}
        kind = rng.choice(["policy.decision", "token.minted"])
        kid = rng.choice(["audit-0123456789abcdef", "kid-é-\U0001f600"])
        clean, head = encode_head(body, kid, kind)
        assert clean == body
        assert head + b"}" == rfc8785.dumps({"body": body, "kid": kid, "kind": kind}), body
        plain += stdlib_agrees({"body": body, "kid": kid, "kind": kind})
    # Both the stdlib fast path and the rfc8785 path were exercised.
    assert 300 < plain < 2700


class _Str(str):
    pass


def test_quick_walk_agrees_with_the_full_walk() -> None:
    """_checked_body trusts _quickly_valid's True; it must never say True where _check_value
    would refuse the value."""
    rng = random.Random(53)
    quick = 0
    odd: list[Any] = [
        2**53,
        -(2**53),
        "x" * (MAX_STRING_CHARS + 1),
        "x" * MAX_STRING_CHARS,
        _Str("s"),
        {_Str("k"): 1},
        {1: "v"},
        (1, 2),
        b"bytes",
        float("nan"),
        float("inf"),
        {"\ud800": 1},
        [[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]],
    ]
    for _ in range(3000):
        value = random_value(rng)
        if rng.random() < 0.2:
            value = [value, rng.choice(odd)] if rng.random() < 0.5 else {"k": rng.choice(odd)}
        try:
            _check_value(value, "body", 1)
            accepted = True
        except ValueError:
            accepted = False
        if _quickly_valid(value, 1):
            assert accepted, value
            quick += 1
    # The quick walk takes the usual values (else every record pays for the full walk).
    assert quick > 1500


@pytest.mark.parametrize(
    "body",
    [
        {"\U0001f600": 1, "\ue000": 2},  # code-point order and UTF-16 order disagree here
        {"score": 1.0},
        {"score": 1e21},
        {"score": 1e-7},
        {"score": -0.0},
        {"n": True, "f": False, "z": None},
    ],
)
def test_encode_head_edge_cases(body: dict[str, Any]) -> None:
    _, head = encode_head(body, "k", "a.b")
    assert head + b"}" == rfc8785.dumps({"body": body, "kid": "k", "kind": "a.b"})


def test_integers_beyond_json_precision_are_refused() -> None:
    with pytest.raises(ValueError, match="2\\^53"):
        encode_head({"n": 2**53}, "k", "a.b")


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(ValueError, match="canonicalized"):
        encode_head({"s": "\ud800"}, "k", "a.b")


def test_base64url_is_strict() -> None:
    sig = bytes(range(64))
    text = b64url_encode(sig)
    assert len(text) == 86
    assert "=" not in text
    assert b64url_decode(text) == sig
    with pytest.raises(ValueError, match="canonical"):
        b64url_decode(text[:-1] + "B")  # same 2 data bits in the last char, other unused bits
