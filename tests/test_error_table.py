"""docs/errors.md lists every row of the error table, with its status and retry flag."""

from __future__ import annotations

from pathlib import Path

import grpc

from sidecar.errors import ERROR_TABLE

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def test_every_row_is_documented_as_it_is() -> None:
    text = DOC.read_text()
    for row in ERROR_TABLE:
        retry = "yes" if row.retryable else "no"
        assert f"| `{row.reason}` | `{row.status.name}` | {retry} |" in text, row.reason


def test_no_row_answers_unknown_or_internal() -> None:
    statuses = {row.status for row in ERROR_TABLE}
    assert grpc.StatusCode.UNKNOWN not in statuses
    assert grpc.StatusCode.INTERNAL not in statuses
    assert len({row.reason for row in ERROR_TABLE}) == len(ERROR_TABLE)
