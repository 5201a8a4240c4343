"""SIGKILL of the adapter or the sidecar in the middle of writes: every in-flight proposal settles, none written twice.

The store answers every create two seconds after committing it (`slow`, phase `after`), so a kill
lands while writes are stored but not yet answered: the case where a blind resend would duplicate.
After the restart, every proposal must end `accepted` with exactly one resource in the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from chartgate.demo import AGENT, TENANT
from chartgate.stack import Stack, restart
from chartgate.v1 import gateway_pb2
from sidecar.client import ProposalRefused
from sidecar.proposals.service import proposal_id_for
from tests.e2e.test_write_faults import (
    WRITTEN,
    control,
    inject,
    propose,
    settled,
    start_faulty_stack,
    stored,
)

SLOW_WRITES = {"slow": {"probability": 1.0, "delay_seconds": 2.0, "phase": "after"}}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_faulty_stack(tmp_path / "crash")
    yield running
    running.stop()


def send_all(pool: ThreadPoolExecutor, stack: Stack, keys: list[str]) -> list[Future[object]]:
    def one(n: int, key: str) -> object:
        try:
            return propose(stack, 80 + n, key)
        except ProposalRefused as exc:  # the sidecar itself died under the call
            return exc

    return [pool.submit(one, n, key) for n, key in enumerate(keys)]


def settle_by_key(stack: Stack, keys: list[str]) -> list[gateway_pb2.Proposal]:
    """What the agent does after a failure: propose again with the same key, then wait."""
    proposals = []
    for n, key in enumerate(keys):
        deadline = time.monotonic() + 30
        while True:
            try:
                proposal = propose(stack, 80 + n, key)
                break
            except ProposalRefused as exc:
                refusal = exc
            assert refusal.code == grpc.StatusCode.UNAVAILABLE, refusal
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proposals.append(settled(stack, proposal.proposal_id, timeout=40))
    return proposals


def assert_each_written_once(stack: Stack, proposals: list[gateway_pb2.Proposal]) -> None:
    assert all(p.state in WRITTEN for p in proposals), [p.state for p in proposals]
    for proposal in proposals:
        [resource] = stored(stack, proposal.proposal_id)
        assert resource["id"] == proposal.fhir_id


def test_adapter_killed_mid_writes_then_restarted(stack: Stack) -> None:
    inject(stack, SLOW_WRITES)
    keys = [f"adapter-kill-{n}" for n in range(6)]
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        futures = send_all(pool, stack, keys)
        time.sleep(1.0)  # the creates are committed, their answers held back
        stack.process("adapter").kill()
        answers = [f.result(timeout=30) for f in futures]
    states = {a.state for a in answers if isinstance(a, gateway_pb2.Proposal)}
    # Sent and unanswered is ambiguous, never "safe to retry".
    assert gateway_pb2.PROPOSAL_STATE_FAILED_RETRYABLE not in states
    assert gateway_pb2.PROPOSAL_STATE_AMBIGUOUS in states
    # While the adapter is down, a new write finds nobody to send to: that is safe to retry.
    down = propose(stack, 99, "while-down")
    assert down.state == gateway_pb2.PROPOSAL_STATE_FAILED_RETRYABLE
    assert down.reasons[-1].code == "adapter.unreachable"
    httpx.delete(control(stack)).raise_for_status()
    restart(stack, "adapter")
    proposals = settle_by_key(stack, keys)
    assert_each_written_once(stack, [*proposals, settled(stack, down.proposal_id)])


def test_sidecar_killed_mid_writes_then_restarted(stack: Stack) -> None:
    inject(stack, SLOW_WRITES)
    keys = [f"sidecar-kill-{n}" for n in range(6)]
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        futures = send_all(pool, stack, keys)
        time.sleep(1.0)
        stack.process("sidecar").kill()
        answers = [f.result(timeout=30) for f in futures]
    assert all(isinstance(a, ProposalRefused) for a in answers)  # every caller saw it die
    time.sleep(2.5)  # the adapter finishes the writes the dead sidecar sent
    sent = sum(1 for key in keys if stored(stack, proposal_id_for(TENANT, AGENT, key)))
    assert sent > 0  # some writes were stored with nobody left to hear of it
    httpx.delete(control(stack)).raise_for_status()
    restart(stack, "sidecar")
    assert_each_written_once(stack, settle_by_key(stack, keys))
