"""How a ProposalRecord and an ApprovalRecord are stored as rows: one encoding every backend shares."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sidecar.proposals.lifecycle import State
from sidecar.storage.records import ApprovalRecord, ProposalContext, ProposalRecord, utc_now

COLUMNS: Final = tuple(ProposalRecord.__dataclass_fields__)
APPROVAL_COLUMNS: Final = tuple(ApprovalRecord.__dataclass_fields__)
# Stored as JSON objects (sorted keys); the sequences as JSON arrays.
_OBJECTS: Final = ("summary", "obligations", "rejection", "delivery", "receipt", "reconciliation")
# Never changed after the insert: who and what the proposal is (a proposal cannot be re-keyed,
# nor its hash detached from its payload), and its state (only through the lifecycle table).
FIXED: Final = frozenset(
    {
        "proposal_id",
        "state",
        "payload",
        "payload_sha256",
        "tenant_id",
        "agent_id",
        "idempotency_key",
        "created_at",
    }
)


def to_column(name: str, value: Any) -> Any:
    """The stored form of one ProposalRecord field, identical on every backend."""
    if name == "context":
        return json.dumps(value.to_json(), sort_keys=True)
    if name in ("fields", "approver_roles"):
        return json.dumps(list(value))
    if name == "reasons":
        return json.dumps([dict(r) for r in value])
    if name in _OBJECTS:
        return json.dumps(dict(value), sort_keys=True)
    if name == "state":
        return State(value).value
    if name == "payload":
        return bytes(value)
    return value


def record_row(record: ProposalRecord) -> tuple[Any, ...]:
    """A whole record as a row, in COLUMNS order."""
    return tuple(to_column(name, getattr(record, name)) for name in COLUMNS)


def approval_row(approval: ApprovalRecord) -> tuple[Any, ...]:
    """A whole approval as a row, in APPROVAL_COLUMNS order."""
    return tuple(
        json.dumps(list(approval.roles)) if name == "roles" else getattr(approval, name)
        for name in APPROVAL_COLUMNS
    )


def record_from_row(row: Sequence[Any]) -> ProposalRecord:
    data = dict(zip(COLUMNS, row, strict=True))
    data["state"] = State(data["state"])
    data["payload"] = bytes(data["payload"])  # PostgreSQL hands bytea back as memoryview
    data["context"] = ProposalContext.from_json(json.loads(data["context"]))
    data["fields"] = tuple(json.loads(data["fields"]))
    data["approver_roles"] = tuple(json.loads(data["approver_roles"]))
    data["reasons"] = tuple(json.loads(data["reasons"]))
    for name in _OBJECTS:
        data[name] = json.loads(data[name])
    return ProposalRecord(**data)


def approval_from_row(row: Sequence[Any]) -> ApprovalRecord:
    data = dict(zip(APPROVAL_COLUMNS, row, strict=True))
    data["roles"] = tuple(json.loads(data["roles"]))
    return ApprovalRecord(**data)


def update_values(values: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """`values` plus the stored form of each update and a fresh `updated_at`; a column that does
    not exist or may never change is refused (ValueError), whatever the backend."""
    for key, value in updates.items():
        if key not in COLUMNS or key in FIXED:
            raise ValueError(f"cannot update column {key}")
        values[key] = to_column(key, value)
    values["updated_at"] = utc_now()
    return values
