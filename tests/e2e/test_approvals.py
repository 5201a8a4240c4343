"""Human approval through real processes: roles, distinct reviewers, the exact payload, reject, amend, replicas.

A FHIR store, an adapter and two sidecar replicas sharing one SQLite store run as processes; the
reviewers' tokens come from the development issuer's keys, trusted by the sidecars' config. Every
"written once" is counted in the FHIR store by the identifier the adapter stamps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from chartgate.demo import demo_sidecar_config
from chartgate.devissuer.issuer import DevIssuer
from chartgate.stack import Stack, start_sidecar, start_stack
from chartgate.v1 import gateway_pb2, gateway_pb2_grpc
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.audit.verify import verify_command
from sidecar.client import ChartgateClient
from sidecar.policy.library import shipped_policy_dir
from sidecar.review.client import ReviewClient, ReviewRefused
from tests.support import fhir_search, seed_patient

PATIENT = "demo-patient-1"
# Written: accepted, and reconciled once any replica's sweeper has read it back.
WRITTEN = (gateway_pb2.PROPOSAL_STATE_ACCEPTED, gateway_pb2.PROPOSAL_STATE_RECONCILED)
TENANT = "st-mary"
OBS = "http://terminology.hl7.org/CodeSystem/observation-category"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two sidecar replicas sharing one store; the demo tenant's policy and reviewers."""
    workdir = tmp_path_factory.mktemp("approvals")
    config = demo_sidecar_config(workdir, shipped_policy_dir())
    config["store_path"] = str(workdir / "shared" / "proposals.sqlite3")
    config["sweep_seconds"] = 0.5
    running = start_stack(workdir, config)
    try:
        start_sidecar(running, config, name="replica")
        seed_patient(running.fhir_base, PATIENT)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def issuer(stack: Stack) -> DevIssuer:
    return DevIssuer(stack.workdir / "dev-issuer")


def token(issuer: DevIssuer, subject: str, *roles: str, **extra: Any) -> str:
    return issuer.mint(
        subject,
        roles=list(roles),
        tenants=[TENANT],
        fhir_user=f"Practitioner/{subject}",
        **extra,
    )


def lab_draft(value: float = 98) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "mg/dL"},
    }


def medication_order() -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197361"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }


def propose(stack: Stack, resource: dict[str, Any], **kwargs: Any) -> gateway_pb2.Proposal:
    kwargs.setdefault("confidence", 0.97)
    with ChartgateClient(stack.sidecar_target) as agent:
        return agent.propose(tool="fhir.create", resource=resource, patient_id=PATIENT, **kwargs)


def written(stack: Stack, resource_type: str, proposal_id: str) -> int:
    identifier = f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"
    return len(fhir_search(stack.fhir_base, resource_type, identifier=identifier))


def refused(call: Any) -> ReviewRefused:
    with pytest.raises(ReviewRefused) as info:
        call()
    return info.value


def test_an_approval_tier_write_is_written_once_only_after_an_authorized_approval(
    stack: Stack, issuer: DevIssuer
) -> None:
    held = propose(stack, lab_draft())
    assert held.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert (held.approvals_required, held.approvals_given) == (1, 0)
    pid = held.proposal_id
    # A reviewer without a role policy names for it, a token expired, one from another issuer.
    no_role = refused(
        lambda: ReviewClient(stack.review_target, token(issuer, "dave", "registrar")).approve(pid)
    )
    assert (no_role.code, no_role.reason) == (grpc.StatusCode.PERMISSION_DENIED, "review.forbidden")
    stale = token(
        issuer,
        "alice",
        "clinician",
        lifetime_seconds=1,
        extra_claims={"exp": 1, "iat": 0, "nbf": 0},
    )
    expired = refused(lambda: ReviewClient(stack.review_target, stale).show(pid))
    assert (expired.code, expired.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "reviewer.unauthenticated",
    )
    stranger = DevIssuer(stack.workdir / "stranger", issuer="http://evil.example")
    foreign = refused(
        lambda: ReviewClient(stack.review_target, token(stranger, "alice", "clinician")).show(pid)
    )
    assert foreign.code == grpc.StatusCode.UNAUTHENTICATED
    assert written(stack, "Observation", pid) == 0
    # The reviewer sees what will be written, and who must approve.
    alice = ReviewClient(stack.review_target, token(issuer, "alice", "clinician"))
    # Any age filter is answered (the largest int64 included), never a retryable fault.
    assert pid in {i.proposal.proposal_id for i in alice.list_pending(min_age_seconds=0)}
    assert alice.list_pending(min_age_seconds=2**63 - 1) == []
    item = alice.show(pid)
    assert json.loads(item.resource_json)["valueQuantity"]["value"] == 98
    assert list(item.approver_roles) == ["clinician"]
    assert item.may_approve
    assert 0 < item.seconds_to_expiry <= 86400
    done = alice.approve(pid)
    assert done.proposal.state in WRITTEN
    assert written(stack, "Observation", pid) == 1
    again = refused(lambda: alice.approve(pid))  # decided: nothing to approve, nothing written
    assert again.reason == "review.not_possible"
    assert written(stack, "Observation", pid) == 1


def test_a_payload_other_than_the_one_reviewed_cannot_be_approved(
    stack: Stack, issuer: DevIssuer
) -> None:
    pid = propose(stack, lab_draft(101)).proposal_id
    alice = ReviewClient(stack.review_target, token(issuer, "alice", "clinician"))
    swapped = refused(lambda: alice.approve(pid, payload_sha256="0" * 64))
    assert swapped.reason == "review.not_possible"
    assert alice.show(pid).proposal.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert written(stack, "Observation", pid) == 0


def test_dual_approval_needs_two_distinct_reviewers_and_writes_once(
    stack: Stack, issuer: DevIssuer
) -> None:
    held = propose(stack, medication_order())
    assert held.tier == gateway_pb2.TIER_DUAL_APPROVAL
    pid = held.proposal_id
    carol = ReviewClient(stack.review_target, token(issuer, "carol", "prescriber"))
    carol.approve(pid)
    # The same reviewer again, even with a fresh token on another replica, is not a second one.
    carol_again = ReviewClient(stack.sidecars["replica"][1], token(issuer, "carol", "prescriber"))
    still = carol_again.approve(pid)
    assert still.proposal.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert still.proposal.approvals_given == 1
    assert not still.may_approve
    assert written(stack, "MedicationRequest", pid) == 0
    erin = ReviewClient(stack.review_target, token(issuer, "erin", "prescriber"))
    done = erin.approve(pid)
    assert done.proposal.state in WRITTEN
    assert len(done.approvals) == 2
    assert written(stack, "MedicationRequest", pid) == 1
    steps = [(e.kind, e.actor) for e in erin.history(pid)]
    assert steps[0] == ("proposed", "scribe-agent")
    assert [k for k, _ in steps].count("approved") == 2
    # The last step is where it is now: reconciled once a sweeper has read the write back.
    assert steps[-1][0] in ("accepted", "reconciled")


def test_two_approvals_at_the_same_moment_on_two_replicas_write_once(
    stack: Stack, issuer: DevIssuer
) -> None:
    pids = [propose(stack, medication_order()).proposal_id for _ in range(5)]
    for pid in pids:
        ReviewClient(stack.review_target, token(issuer, "carol", "prescriber")).approve(pid)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def approve(target: str, subject: str, pid: str) -> None:
        client = ReviewClient(target, token(issuer, subject, "prescriber"))
        barrier.wait()
        try:
            client.approve(pid)
        except ReviewRefused as exc:  # the later one may find it decided: fine
            if exc.reason != "review.not_possible":
                errors.append(exc)
        except BaseException as exc:
            errors.append(exc)

    for pid in pids:
        threads = [
            threading.Thread(target=approve, args=(stack.review_target, "erin", pid)),
            threading.Thread(target=approve, args=(stack.sidecars["replica"][1], "frank", pid)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for pid in pids:
        assert written(stack, "MedicationRequest", pid) == 1


def test_a_rejection_reaches_the_agent_and_nothing_is_written(
    stack: Stack, issuer: DevIssuer
) -> None:
    pid = propose(stack, lab_draft(140)).proposal_id
    alice = ReviewClient(stack.review_target, token(issuer, "alice", "clinician"))
    alice.reject(pid, "not_supported_by_evidence", "the cited report shows 104 mg/dL")
    with ChartgateClient(stack.sidecar_target) as agent:
        seen = agent.get(pid)
    assert seen.state == gateway_pb2.PROPOSAL_STATE_REJECTED
    reason = seen.reasons[-1]
    assert reason.code == "review.not_supported_by_evidence"
    assert reason.message == "the cited report shows 104 mg/dL"
    assert refused(lambda: alice.approve(pid)).reason == "review.not_possible"
    assert written(stack, "Observation", pid) == 0


def test_an_amendment_into_autonomous_is_written_once_and_supersedes_the_original(
    stack: Stack, issuer: DevIssuer
) -> None:
    pid = propose(stack, lab_draft(77)).proposal_id
    vital = lab_draft(77)
    vital["category"] = [{"coding": [{"system": OBS, "code": "vital-signs"}]}]
    vital["status"] = "final"
    alice = ReviewClient(stack.review_target, token(issuer, "alice", "clinician"))
    amended = alice.amend(pid, json.dumps(vital))
    assert amended.original.proposal.state == gateway_pb2.PROPOSAL_STATE_SUPERSEDED
    new_id = amended.amendment.proposal.proposal_id
    assert amended.original.proposal.superseded_by == new_id
    assert amended.amendment.proposal.supersedes == pid
    assert amended.amendment.proposal.tier == gateway_pb2.TIER_AUTONOMOUS
    assert amended.amendment.proposal.state in WRITTEN
    assert written(stack, "Observation", new_id) == 1
    assert written(stack, "Observation", pid) == 0
    # The agent sees both, linked.
    with ChartgateClient(stack.sidecar_target) as agent:
        assert agent.get(pid).superseded_by == new_id
        assert agent.get(new_id).supersedes == pid


def test_an_amendment_into_blocked_is_not_written(stack: Stack, issuer: DevIssuer) -> None:
    pid = propose(stack, lab_draft(78)).proposal_id
    narrative = lab_draft(78)
    narrative["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
    }
    alice = ReviewClient(stack.review_target, token(issuer, "alice", "clinician"))
    amended = alice.amend(pid, json.dumps(narrative))
    assert amended.amendment.proposal.state == gateway_pb2.PROPOSAL_STATE_BLOCKED
    assert [r.code for r in amended.amendment.proposal.reasons] == ["fields.narrative"]
    assert amended.original.proposal.state == gateway_pb2.PROPOSAL_STATE_SUPERSEDED
    assert written(stack, "Observation", amended.amendment.proposal.proposal_id) == 0
    assert written(stack, "Observation", pid) == 0


def test_the_person_the_agent_acted_for_cannot_approve_alone(
    stack: Stack, issuer: DevIssuer
) -> None:
    pid = propose(stack, lab_draft(88), on_behalf_of="Practitioner/alice").proposal_id
    alice = ReviewClient(stack.review_target, token(issuer, "alice", "clinician"))
    own = alice.approve(pid)
    assert own.proposal.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert own.proposal.approvals_given == 0
    bob = ReviewClient(stack.review_target, token(issuer, "bob", "clinician"))
    assert bob.approve(pid).proposal.state in WRITTEN
    assert written(stack, "Observation", pid) == 1


def test_the_agent_watches_its_proposal_land_when_another_process_approves(
    stack: Stack, issuer: DevIssuer
) -> None:
    pid = propose(stack, lab_draft(66)).proposal_id
    seen: list[int] = []

    def watch() -> None:
        with grpc.insecure_channel(stack.sidecar_target) as channel:
            stub = gateway_pb2_grpc.ToolGatewayStub(channel)
            for update in stub.WatchProposal(
                gateway_pb2.WatchProposalRequest(proposal_id=pid), timeout=30
            ):
                seen.append(update.state)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # Approved on the other replica: the watcher's sidecar learns it from the shared store.
    ReviewClient(stack.sidecars["replica"][1], token(issuer, "bob", "clinician")).approve(pid)
    watcher.join(timeout=30)
    assert not watcher.is_alive()
    assert seen[0] == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert seen[-1] in WRITTEN


def test_reviews_are_audited_naming_the_reviewer_and_verify_offline(
    stack: Stack, issuer: DevIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        json.loads(line)
        for line in (stack.workdir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    kinds = {r["kind"] for r in records}
    assert {"review.approved", "proposal.approved", "review.rejected", "review.amended"} <= kinds
    approved = next(r for r in records if r["kind"] == "review.approved")
    assert approved["body"]["reviewer"]["iss"] == issuer.issuer
    assert approved["body"]["reviewer"]["sub"]
    # Each approved write's token was bound to the approvals and the payload they approved.
    quorums = {
        r["body"]["proposal_id"]: r["body"] for r in records if r["kind"] == "proposal.approved"
    }
    minted = [r["body"] for r in records if r["kind"] == "token.minted" and r["body"]["approvals"]]
    assert minted
    for token_record in minted:
        quorum = quorums[token_record["proposal_id"]]
        assert token_record["approvals"] == quorum["approvals"]
        assert token_record["payload_sha256"] == quorum["payload_sha256"]
    rejected = next(r for r in records if r["kind"] == "review.rejected")
    assert "message" not in rejected["body"]  # the reviewer's words stay out of the log
    key = stack.workdir / "keys" / "audit-signing.jwks.json"
    assert verify_command(stack.workdir / "audit" / "audit.jsonl", key) == 0
    assert "OK:" in capsys.readouterr().out


def test_unauthenticated_calls_are_refused_with_the_check_named(stack: Stack) -> None:
    for header in ("", "Basic YWxpY2U6eA==", "Bearer " + "x" * 100, "Bearer a.b.c"):
        client = ReviewClient(stack.review_target, "")
        client._metadata = (("authorization", header),) if header else ()
        failure = refused(client.list_pending)
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_stuck_approved_proposal_is_sent_once_by_a_restarted_replica(
    tmp_path: Path, issuer: DevIssuer
) -> None:
    # Its own stack: the sidecar is killed with SIGKILL after its approval moved the proposal to
    # `approved` and before it sent it (simulated by moving it in the store while it is down).
    from sidecar.proposals.lifecycle import State
    from sidecar.storage.sqlite.store import SqliteStore

    config = demo_sidecar_config(tmp_path, shipped_policy_dir())
    config["sweep_seconds"] = 0.3
    running = start_stack(tmp_path, config)
    try:
        seed_patient(running.fhir_base, PATIENT)
        pid = propose(running, lab_draft(55)).proposal_id
        sidecar = running.process("sidecar")
        sidecar.popen.kill()
        sidecar.popen.wait()
        store = SqliteStore(tmp_path / "sidecar" / "ledger.sqlite3")
        store.transition(pid, State.PENDING_APPROVAL, State.APPROVED)
        store.close()
        running.processes.remove(sidecar)
        sidecar.log_file.close()
        start_sidecar(running, config)
        deadline = 40
        for _ in range(deadline * 10):
            if written(running, "Observation", pid):
                break
            threading.Event().wait(0.1)
        assert written(running, "Observation", pid) == 1
        with ChartgateClient(running.sidecar_target) as agent:
            assert agent.get(pid).state in (
                gateway_pb2.PROPOSAL_STATE_ACCEPTED,
                gateway_pb2.PROPOSAL_STATE_RECONCILED,
            )
    finally:
        running.stop()


def test_an_expired_proposal_cannot_be_approved_and_escalates_first(tmp_path: Path) -> None:
    config = demo_sidecar_config(tmp_path, shipped_policy_dir())
    data = json.loads(Path(config["policy_data"]).read_text())
    data["chartgate_config"]["tenants"][TENANT]["approval_expiry_seconds"] = 4
    Path(config["policy_data"]).write_text(json.dumps(data))
    config["sweep_seconds"] = 0.2
    running = start_stack(tmp_path, config)
    try:
        seed_patient(running.fhir_base, PATIENT)
        issuer = DevIssuer(tmp_path / "dev-issuer")
        pid = propose(running, lab_draft(44)).proposal_id
        alice = ReviewClient(running.review_target, token(issuer, "alice", "clinician"))
        threading.Event().wait(3.3)  # past 75 % of the window: escalated, not yet expired
        item = alice.show(pid)
        assert item.escalated_at
        assert item.proposal.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
        threading.Event().wait(1.5)
        late = refused(lambda: alice.approve(pid))
        assert late.reason == "review.not_possible"
        with ChartgateClient(running.sidecar_target) as agent:
            seen = agent.get(pid)
        assert seen.state == gateway_pb2.PROPOSAL_STATE_EXPIRED
        assert seen.reasons[-1].code == "review.expired"
        assert written(running, "Observation", pid) == 0
        kinds = [
            json.loads(line)["kind"]
            for line in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()
        ]
        assert "proposal.escalated" in kinds
        assert "proposal.expired" in kinds
    finally:
        running.stop()


def test_proposal_ids_are_unguessable_across_tenants(stack: Stack, issuer: DevIssuer) -> None:
    pid = propose(stack, lab_draft(33)).proposal_id
    elsewhere = issuer.mint(
        "zed", roles=["clinician"], tenants=["other-hospital"], fhir_user="Practitioner/zed"
    )
    outsider = refused(lambda: ReviewClient(stack.review_target, elsewhere).show(pid))
    assert outsider.code == grpc.StatusCode.NOT_FOUND
