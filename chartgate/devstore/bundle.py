"""The searchset Bundle a search answers with (R4 bundle.html, search.html#bundle, #count)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from chartgate.devstore.outcome import Issue, operation_outcome
from chartgate.devstore.search import SearchQuery
from chartgate.devstore.storage import StoredVersion, fhir_instant


def searchset(
    base_url: str,
    resource_type: str,
    query: SearchQuery,
    matches: Sequence[StoredVersion],
) -> dict[str, Any]:
    """One page (`query.count` from `query.offset`) of `matches`, with total, self and next links.

    The self link lists only the parameters that were applied, so a client can see what was
    ignored (search.html#errors); ignored ones are also reported in an `outcome` entry.
    """
    page = matches[query.offset : query.offset + query.count]
    links = [{"relation": "self", "url": _link(base_url, resource_type, query, query.offset)}]
    if query.count and query.offset + query.count < len(matches):
        next_offset = query.offset + query.count
        links.append(
            {"relation": "next", "url": _link(base_url, resource_type, query, next_offset)}
        )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base_url}/{v.resource_type}/{v.resource_id}",
            "resource": v.resource,
            "search": {"mode": "match"},
        }
        for v in page
    ]
    if query.ignored:
        issues = [
            Issue("warning", "not-supported", f"search parameter {name} was ignored")
            for name in query.ignored
        ]
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(datetime.now(UTC))},
        "type": "searchset",
        "total": len(matches),
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _link(base_url: str, resource_type: str, query: SearchQuery, offset: int) -> str:
    params = [*query.used, ("_count", str(query.count))]
    if offset:
        params.append(("_offset", str(offset)))
    return f"{base_url}/{resource_type}?{urlencode(params)}"
