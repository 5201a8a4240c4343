"""Conditional create without If-None-Exist: search the identifier, then create, one lock per identifier."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import httpx

from adapters.errors import AdapterError, FailureClass, payload_error
from adapters.fhir_client import retry_after_seconds
from adapters.vendors.error_shapes import describe, vendor_failure
from adapters.vendors.profile import VendorProfile

FHIR_JSON: Final = "application/fhir+json"
Send = Callable[[httpx.Request], httpx.Response]


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it (the map stays small)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._entries.setdefault(key, _Entry())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[key]

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)


class CreateEmulator:
    """Stands in for If-None-Exist at a vendor that does not honour it (DESIGN.md, "Idempotency").

    Under a lock keyed by the identifier, it searches `identifier=system|value`; a match found is
    the answer (200, as a conditional create answers), none found lets the create through
    without the header. The lock serializes this adapter's creates of one identifier; writes
    of one proposal from several adapter processes are serialized by the sidecar's
    compare-and-set on the proposal, not here. A search index that lags behind writes can still
    miss a create made moments before: the sidecar waits `retry_index_delay_seconds` before it
    looks a write up, for the same reason.
    """

    def __init__(self, profile: VendorProfile, locks: KeyedLocks | None = None) -> None:
        self._profile = profile
        self._locks = locks or KeyedLocks()

    def create(self, request: httpx.Request, resource_type: str, send: Send) -> httpx.Response:
        condition = request.headers["If-None-Exist"]
        system, value = _identifier_condition(self._profile, condition)
        with self._locks.hold(f"{resource_type}|{system}|{value}"):
            found = self._search(request, resource_type, system, value, send)
            if isinstance(found, httpx.Response):
                return found  # a 401 for the auth to refresh and resend
            if len(found) > 1:
                return _answer(
                    request,
                    412,
                    _outcome(
                        "multiple-matches", f"{len(found)} {resource_type} carry the identifier"
                    ),
                )
            if found:
                return _existing(request, resource_type, found[0])
            headers = [
                (k, v) for k, v in request.headers.multi_items() if k.lower() != "if-none-exist"
            ]
            plain = httpx.Request(
                request.method,
                request.url,
                headers=headers,
                content=request.content,
                extensions=request.extensions,
            )
            return send(plain)

    def _search(
        self, request: httpx.Request, resource_type: str, system: str, value: str, send: Send
    ) -> list[dict[str, Any]] | httpx.Response:
        query = urlencode({"identifier": f"{system}|{value}"})
        headers = {
            name: request.headers[name]
            for name in ("Accept", "Authorization")
            if name in request.headers
        }
        search = httpx.Request(
            "GET",
            request.url.copy_with(query=query.encode()),
            headers=headers,
            extensions=request.extensions,
        )
        try:
            response = send(search)
            response.read()
        except httpx.TransportError as exc:
            # Only the search went out: nothing can have been written, so a resend is safe.
            raise AdapterError(
                FailureClass.TRANSPORT,
                "fhir.no_answer",
                f"{self._profile.name}: no answer to the search that precedes a create "
                f"({type(exc).__name__}); nothing was written",
            ) from None
        if response.status_code == 401:
            return response
        if response.status_code != 200:
            raise self._search_failure(response)
        return _carrying(response, resource_type, system, value)

    def _search_failure(self, response: httpx.Response) -> AdapterError:
        said = vendor_failure(self._profile, response)
        if said is not None:
            return said
        status = response.status_code
        if status == 403:
            failure = FailureClass.AUTHORIZATION
        elif status == 429:
            failure = FailureClass.THROTTLED
        elif status >= 500:
            failure = FailureClass.TRANSPORT  # the create was never sent: safe to resend
        else:
            failure = FailureClass.BUSINESS_RULE
        return AdapterError(
            failure,
            "vendor.lookup_failed",
            f"{self._profile.name}: the search standing in for conditional create answered "
            f"HTTP {status}: {describe(response)}"[:600],
            http_status=status,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )


def _identifier_condition(profile: VendorProfile, condition: str) -> tuple[str, str]:
    """`identifier=system|value`, the only condition the adapter sends (adapters/fhir_client.py);
    any other is refused rather than emulated loosely."""
    params = parse_qsl(condition.partition("?")[2] or condition, keep_blank_values=True)
    if len(params) == 1 and params[0][0] == "identifier":
        system, bar, value = params[0][1].partition("|")
        if bar and system and value:
            return system, value
    raise payload_error(
        "vendor.unsupported_condition",
        f"{profile.name}: conditional create is emulated for identifier=system|value only",
    )


def _carrying(
    response: httpx.Response, resource_type: str, system: str, value: str
) -> list[dict[str, Any]]:
    """The matches that really carry the identifier: a server that ignores an unknown search
    parameter answers with everything, and that must read as "absent", not "already there"."""
    try:
        bundle = response.json()
    except ValueError:
        bundle = None
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if (
            not isinstance(entry, dict)
            or (entry.get("search") or {}).get("mode", "match") != "match"
        ):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            continue
        identifiers = resource.get("identifier") or []
        if any(
            isinstance(i, dict) and i.get("system") == system and i.get("value") == value
            for i in identifiers
        ):
            found.append(resource)
    return found


def _existing(
    request: httpx.Request, resource_type: str, resource: dict[str, Any]
) -> httpx.Response:
    """The answer a conditional create gives when the resource exists: 200 with it."""
    meta = resource.get("meta")
    version = meta.get("versionId", "") if isinstance(meta, dict) else ""
    base = str(request.url.copy_with(query=None)).rstrip("/")
    headers = {"Content-Type": FHIR_JSON}
    if resource.get("id") and version:
        headers["Location"] = f"{base}/{resource['id']}/_history/{version}"
    return _answer(request, 200, resource, headers)


def _outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def _answer(
    request: httpx.Request,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers or {"Content-Type": FHIR_JSON},
        content=json.dumps(body).encode(),
        request=request,
    )
