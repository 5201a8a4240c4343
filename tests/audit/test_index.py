"""Search: by patient through the proposal, by reviewer, agent, tenant, time; kept up to date and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

from chartgate import keys
from sidecar.audit.events import (
    PolicyDecision,
    ProposalReceived,
    ReviewApproved,
    Reviewer,
    WriteOutcome,
)
from sidecar.audit.files import LogFiles
from sidecar.audit.index import Query, SearchIndex, search_logs
from sidecar.audit.log import AuditLog


def proposal(log: AuditLog, n: int, patient: str, agent: str = "scribe") -> None:
    pid = f"pr-{n}"
    log.append_event(
        ProposalReceived(
            proposal_id=pid,
            agent=agent,
            tenant="st-mary" if n % 2 else "st-jude",
            idempotency_key=f"k{n}",
            tool="fhir.create",
            resource_type="Observation",
            target="",
            patient=patient,
            encounter=f"enc-{n}",
        )
    )
    log.append_event(PolicyDecision(proposal_id=pid, allow=True, tier="approval"))
    log.append_event(
        ReviewApproved(
            proposal_id=pid, approval_id=f"ap{n}", reviewer=Reviewer("https://idp", f"rev{n % 2}")
        )
    )
    log.append_event(WriteOutcome(proposal_id=pid, state="accepted", fhir_id=f"o{n}"))


def kinds(hits: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(json.loads(h.text)["body"]["proposal_id"], h.kind) for h in hits]


def test_search_by_each_identifier(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        for n in range(6):
            proposal(log, n, patient=f"pat-{n % 3}", agent="scribe" if n < 4 else "coder")
    # By patient: every record of that patient's proposals, though only one names the patient.
    hits = search_logs([path], Query(patient="pat-1"))
    assert {pid for pid, _ in kinds(hits)} == {"pr-1", "pr-4"}
    assert len(hits) == 8
    assert {kind for _, kind in kinds(hits)} >= {"policy.decision", "write.outcome"}
    assert len(search_logs([path], Query(encounter="enc-2"))) == 4
    assert {p for p, _ in kinds(search_logs([path], Query(agent="coder")))} == {"pr-4", "pr-5"}
    reviewed = search_logs([path], Query(reviewer="rev1"))
    assert [k for _, k in kinds(reviewed)] == ["review.approved"] * 3
    assert len(search_logs([path], Query(reviewer="https://idp rev1"))) == 3
    assert len(search_logs([path], Query(tenant="st-jude"))) == 12
    assert len(search_logs([path], Query(proposal="pr-3"))) == 4
    assert len(search_logs([path], Query(patient="pat-0", kind="write.outcome"))) == 2
    # Time range (inclusive), against the records' own ts.
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    middle = lines[10]["ts"]
    assert len(search_logs([path], Query(since=middle))) == len(lines) - 10
    assert len(search_logs([path], Query(until=middle))) == 11
    assert search_logs([path], Query(patient="nobody")) == []
    # The hits are the log's own lines.
    assert {h.text for h in hits} <= set(path.read_bytes().splitlines())


def test_the_index_follows_the_log_and_is_rebuilt_when_it_changed(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        proposal(log, 1, "pat-a")
    with SearchIndex(path) as index:
        assert index.update() == 4
        assert index.update() == 0
    assert LogFiles(path).index.exists()
    with AuditLog(path, signing_key) as log:
        proposal(log, 2, "pat-a")
    with SearchIndex(path) as index:
        assert index.update() == 4  # only the new records
    # The log replaced by another: the index notices and rebuilds from scratch.
    other = tmp_path / "other" / "audit.jsonl"
    with AuditLog(other, signing_key) as log:
        proposal(log, 7, "pat-b")
    path.write_bytes(other.read_bytes())
    assert kinds(search_logs([path], Query(patient="pat-a"))) == []
    assert len(search_logs([path], Query(patient="pat-b"))) == 4


def test_several_logs_are_merged_in_time_order(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    first, second = tmp_path / "a" / "audit.jsonl", tmp_path / "b" / "audit.jsonl"
    with AuditLog(first, signing_key) as a, AuditLog(second, signing_key) as b:
        proposal(a, 1, "pat")
        proposal(b, 2, "pat")
        proposal(a, 3, "pat")
    hits = search_logs([first, second], Query(patient="pat"))
    assert [h.ts for h in hits] == sorted(h.ts for h in hits)
    assert {h.log for h in hits} == {first, second}
