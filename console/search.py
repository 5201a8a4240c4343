"""Searching proposals by patient, encounter, agent or reviewer: one seam, one implementation per source.

Today's source is the Review API, which lists pending proposals only (`ListPending`); a decided
proposal is found by its id (`GetReview`, `GetHistory`). The audit index (sidecar/audit/) keeps
every proposal's records by patient, encounter, agent, reviewer and tenant; a search over it
implements `ProposalSearch` too and is passed to `create_app(search=...)`, and the search page
then covers decided proposals without any other change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import grpc

from chartgate.v1 import review_pb2
from sidecar.audit.index import Query, search_logs
from sidecar.review.client import ReviewClient, ReviewRefused

MAX_RESULTS: Final = 200


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Each criterion optional; a proposal matches when it matches every one given."""

    patient: str = ""
    encounter: str = ""
    agent: str = ""
    reviewer: str = ""

    @property
    def empty(self) -> bool:
        return not (self.patient or self.encounter or self.agent or self.reviewer)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The proposals found, and what was searched (shown to the reviewer, so no one mistakes
    "nothing pending" for "nothing ever")."""

    items: tuple[review_pb2.ReviewItem, ...]
    scope: str


class ProposalSearch(Protocol):
    """A source of proposals to search, read with the signed-in reviewer's own Review API client
    (so a source can never show a reviewer another tenant's proposals)."""

    def search(self, review: ReviewClient, query: SearchQuery) -> SearchResult: ...


def _reviewer_matches(item: review_pb2.ReviewItem, reviewer: str) -> bool:
    """`alice` matches the subject; `https://issuer alice` the issuer and subject."""
    return any(reviewer in (a.subject, f"{a.issuer} {a.subject}") for a in item.approvals)


class PendingSearch:
    """Search over what the Review API lists: pending proposals of the reviewer's tenants.

    The patient filter is the API's own; encounter, agent and reviewer (an approval's subject)
    are applied here to what it returned.
    """

    scope = "pending proposals of your tenants (decided ones: look up a proposal id)"

    def search(self, review: ReviewClient, query: SearchQuery) -> SearchResult:
        items = review.list_pending(patient_id=query.patient, limit=MAX_RESULTS)
        found = tuple(
            item
            for item in items
            if (not query.encounter or item.encounter_id == query.encounter)
            and (not query.agent or item.agent_id == query.agent)
            and (not query.reviewer or _reviewer_matches(item, query.reviewer))
        )
        return SearchResult(found, self.scope)


class AuditIndexSearch:
    """Search over the audit index beside each configured log (`audit_logs`): every proposal
    ever recorded, decided ones included, by patient, encounter, agent or approving reviewer.

    The index gives proposal ids only; each is then read through the Review API with the
    reviewer's own client, so a proposal of another tenant is never shown (the API answers
    not-found for it).
    """

    scope = "every proposal in the audit log (most recently active first)"

    def __init__(self, logs: Sequence[Path]) -> None:
        self._logs = tuple(logs)

    def search(self, review: ReviewClient, query: SearchQuery) -> SearchResult:
        try:
            hits = search_logs(
                self._logs,
                Query(
                    patient=query.patient or None,
                    encounter=query.encounter or None,
                    agent=query.agent or None,
                    reviewer=query.reviewer or None,
                    limit=10_000,
                ),
            )
        except (OSError, sqlite3.Error):
            # The log or its index is missing or locked: a refusal the page shows, not a 500.
            raise ReviewRefused(
                grpc.StatusCode.UNAVAILABLE,
                "the audit index cannot be read right now; try again shortly",
                "audit.unavailable",
                [],
            ) from None
        ids: list[str] = []
        for hit in reversed(hits):  # most recently active first
            try:
                record = json.loads(hit.text)
            except ValueError:
                continue
            body = record.get("body") if isinstance(record, dict) else None
            pid = body.get("proposal_id") if isinstance(body, dict) else None
            if isinstance(pid, str) and pid and pid not in ids:
                ids.append(pid)
            if len(ids) >= MAX_RESULTS:
                break
        items: list[review_pb2.ReviewItem] = []
        for pid in ids:
            try:
                items.append(review.show(pid))
            except ReviewRefused:
                continue  # another tenant's, or gone: as good as absent
        return SearchResult(tuple(items), self.scope)
