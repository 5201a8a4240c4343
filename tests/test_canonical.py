"""canonicalize's bytes are RFC 8785 (as the rfc8785 library makes them) for any JSON text, shortcut or not."""

from __future__ import annotations

import json
import random

import pytest
import rfc8785

from chartgate.canonical import CanonicalizationError, CanonicalPayload, sha256_hex, stdlib_agrees
from tests.audit.test_records import random_value


def test_payload_bytes_match_rfc8785_on_random_documents() -> None:
    rng = random.Random(8259)
    plain = 0
    for _ in range(3000):
        value = random_value(rng)
        try:
            text = json.dumps(value, ensure_ascii=rng.choice([True, False]))
        except ValueError:
            continue
        payload = CanonicalPayload.from_json_text(text)
        assert payload.canonical == rfc8785.dumps(json.loads(text)), text
        assert payload.sha256 == sha256_hex(payload.canonical)
        assert payload.value == json.loads(text)
        plain += stdlib_agrees(json.loads(text))
    # Both the stdlib fast path and the rfc8785 path were exercised.
    assert 300 < plain < 2700


@pytest.mark.parametrize(
    "text",
    [
        '{"\U0001f600": 1, "\ue000": 2}',  # code-point order and UTF-16 order disagree here
        '{"a": 1.0, "b": -0.0, "c": 0.0, "d": 1e21, "e": 1e-7, "f": 1E2, "g": 3.50}',
        '{"s": "\\u0000\\u001f\\u007f\\b\\f\\n\\r\\t\\"\\\\/\\u2028"}',
        '[9007199254740991, -9007199254740991, true, false, null, "", {}, []]',
        '{"":{"":[]}}',
    ],
)
def test_payload_edge_cases(text: str) -> None:
    assert CanonicalPayload.from_json_text(text).canonical == rfc8785.dumps(json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 9007199254740992}',
        '{"n": -9007199254740992}',
        '{"f": NaN}',
        "[Infinity]",
        '"\\ud800"',
    ],
)
def test_what_rfc8785_refuses_is_refused(text: str) -> None:
    with pytest.raises(CanonicalizationError):
        CanonicalPayload.from_json_text(text)


def test_text_that_is_not_json_is_refused_as_before() -> None:
    with pytest.raises(json.JSONDecodeError):
        CanonicalPayload.from_json_text('{"a": ')
