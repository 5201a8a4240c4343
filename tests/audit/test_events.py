"""Typed events: every kind appends as a valid record, bodies keep the names records always had, and read back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from chartgate import keys
from sidecar.audit.events import (
    EVENT_TYPES,
    AuditEvent,
    PolicyDecision,
    Reason,
    ReviewApproved,
    Reviewer,
    TokenMinted,
    action_of,
    parse_event,
)
from sidecar.audit.log import AuditLog
from sidecar.audit.records import check_kind


def sample(cls: type[AuditEvent]) -> AuditEvent:
    """An instance with every required field filled by its type."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        ):
            continue
        kind = str(field.type)
        if "Reviewer" in kind:
            values[field.name] = Reviewer("https://idp.example", "alice")
        elif "Mapping" in kind:
            values[field.name] = {"tier": "approval"}
        elif "bool" in kind:
            values[field.name] = True
        elif kind.startswith("int"):
            values[field.name] = 3
        else:
            values[field.name] = f"{field.name}-1"
    return cls(**values)


def test_every_kind_appends_and_reads_back(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        for kind, cls in EVENT_TYPES.items():
            check_kind(kind)
            event = sample(cls)
            record = log.append_event(event)
            assert record.kind == kind
            assert record.body == json.loads(record.line)["body"]
            parsed = parse_event(kind, record.body)
            assert parsed.event == event, kind


def test_bodies_keep_the_record_names_the_sidecar_writes() -> None:
    decision = PolicyDecision(
        proposal_id="pr-1",
        allow=False,
        tier="blocked",
        reasons=(Reason("consent.missing", "consent"),),
        policy_revision="sha256:ab",
        engine="regorus",
        state="blocked",
    )
    assert decision.body() == {
        "proposal_id": "pr-1",
        "allow": False,
        "tier": "blocked",
        "reasons": [{"code": "consent.missing", "rule": "consent"}],
        "policy_revision": "sha256:ab",
        "engine": "regorus",
        "state": "blocked",
        "approvals_required": 0,
        "approver_roles": [],
        "expires_at": "",
    }
    approval = ReviewApproved(
        proposal_id="pr-1", approval_id="ap-1", reviewer=Reviewer("iss", "bob"), roles=("rn",)
    )
    assert approval.body()["reviewer"] == {"iss": "iss", "sub": "bob"}
    # The token's jti, never the token; optional fields left out when not known.
    minted = TokenMinted(proposal_id="pr-1", jti="j-1").body()
    assert minted["jti"] == "j-1"
    assert "attempt" not in minted
    assert "token" not in minted


def test_unknown_kinds_and_partial_bodies_read_back_raw() -> None:
    assert parse_event("something.else", {"a": 1}).event is None
    assert parse_event("token.minted", {"proposal_id": "p"}).event is None  # no jti
    assert parse_event("token.minted", {"proposal_id": "p", "jti": "j", "new": 1}).event == (
        TokenMinted(proposal_id="p", jti="j")
    )


def test_action_codes() -> None:
    assert [action_of(t) for t in ("fhir.create", "fhir.update", "other")] == ["C", "U", "E"]
