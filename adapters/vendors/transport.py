"""The httpx seam where a vendor's quirks live: a transport under FhirClient that applies the profile."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx

from adapters.errors import payload_error
from adapters.vendors.content import with_requirements
from adapters.vendors.emulation import CreateEmulator
from adapters.vendors.error_shapes import vendor_failure
from adapters.vendors.gate import check_write, unsupported
from adapters.vendors.profile import Interaction, VendorProfile

_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")


class VendorTransport(httpx.BaseTransport):
    """An httpx transport that makes one vendor's differences invisible above it.

    `FhirClient(base_url, transport=VendorTransport(profile, base_url=base_url))` and each
    request then: (a) is refused before the wire, naming the vendor, when the vendor does not
    take that write (adapters/vendors/gate.py); (b) for a create under If-None-Exist at a vendor
    without conditional create, becomes a search and a plain create under a lock per identifier
    (emulation.py); (c) has an answer in one of the vendor's error shapes turned into the
    failure class it means (error_shapes.py); (d) for a create, carries the identifiers,
    extensions and meta profiles the vendor requires (content.py). A transaction (where the
    vendor takes them) has each entry judged and completed as its own request would be. Under
    the `generic` profile it passes everything through unchanged.

    It sits below httpx's auth, so a 401 still reaches BackendServicesAuth for its one refresh.
    """

    def __init__(
        self,
        profile: VendorProfile,
        *,
        base_url: str,
        settings: Mapping[str, str] | None = None,
        inner: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._profile = profile
        # Checked here, at start: a missing setting must stop the adapter, not a write.
        self._settings = profile.check_settings(settings or {})
        self._base_path = httpx.URL(base_url).path.rstrip("/")
        self._base_url = base_url.rstrip("/")
        self._inner = inner if inner is not None else EnvironmentTransport()
        self._clock = clock
        self._emulator = (
            None if profile.conditionals.conditional_create else CreateEmulator(profile)
        )

    @property
    def profile(self) -> VendorProfile:
        return self._profile

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._is_transaction(request):
            return self._send(self._transaction(request))
        write = self._write_of(request)
        if write is None:
            return self._send(request)
        interaction, resource_type = write
        body = _json_body(request)
        check_write(
            self._profile, interaction, resource_type, body if interaction == "create" else None
        )
        if interaction == "create" and body is not None:
            request = _with_body(request, with_requirements(self._profile, self._settings, body))
            if self._emulator is not None and "If-None-Exist" in request.headers:
                return self._emulator.create(request, resource_type, self._send)
        return self._send(request)

    def close(self) -> None:
        self._inner.close()

    def _send(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        failure = vendor_failure(self._profile, response, clock=self._clock)
        if failure is not None:
            response.close()
            raise failure
        return response

    def _is_transaction(self, request: httpx.Request) -> bool:
        """POST [base] (http.html#transaction); refused here where the vendor takes none."""
        path = request.url.path
        if request.method != "POST" or path.rstrip("/") != self._base_path:
            return False
        if not self._profile.conditionals.transactions:
            raise unsupported(self._profile, "transaction", "Bundle")
        return True

    def _transaction(self, request: httpx.Request) -> httpx.Request:
        """Each entry as its own request would be: refused before the wire when the vendor does
        not take it, a create's required content added."""
        bundle = _json_body(request)
        entries = bundle.get("entry") if bundle is not None else None
        if not isinstance(entries, list):
            return request  # not ours to judge: the vendor answers a malformed bundle
        changed = False
        for entry in entries:
            write = _entry_write(entry, self._base_url)
            if write is None:
                # What cannot be judged is not sent: a vendor's refusals must not be
                # sidestepped by a method, a condition or a spelling of the URL.
                raise payload_error(
                    "vendor.unsupported",
                    f"{self._profile.name}: a transaction entry other than POST [type] or PUT "
                    "[type]/[id] of its own resource type is not sent (docs/adapters.md)",
                )
            interaction, resource_type, resource = write
            if (
                "ifNoneExist" in entry["request"]
                and not self._profile.conditionals.conditional_create
            ):
                # Emulated for a single create (search, then create, under a lock): not inside a
                # transaction, where the search could not be part of the same commit.
                raise unsupported(
                    self._profile, "conditional create in a transaction", resource_type
                )
            check_write(
                self._profile,
                interaction,
                resource_type,
                resource if interaction == "create" else None,
            )
            if interaction == "create" and resource is not None:
                entry["resource"] = with_requirements(self._profile, self._settings, resource)
                changed = True
        return _with_body(request, bundle) if changed and bundle is not None else request

    def _write_of(self, request: httpx.Request) -> tuple[Interaction, str] | None:
        """(create, Type) for POST [base]/Type, (update, Type) for PUT [base]/Type/id; a
        transaction (POST [base]) the vendor does not take is refused here."""
        path = request.url.path
        if not path.startswith(self._base_path):
            return None
        parts = path[len(self._base_path) :].strip("/").split("/")
        if not _TYPE.fullmatch(parts[0]):
            return None
        if request.method == "POST" and len(parts) == 1:
            return "create", parts[0]
        if request.method == "PUT" and len(parts) == 2:
            return "update", parts[0]
        return None


class EnvironmentTransport(httpx.BaseTransport):
    """The transport httpx.Client picks when given none: the proxies the environment names
    (HTTPS_PROXY, NO_PROXY) included. A client built with an explicit transport ignores them,
    and an adapter behind a hospital's egress proxy must keep reaching its EHR, so the request
    is handed to a plain client of its own, as is (no auth, no redirects, its own timeout)."""

    def __init__(self) -> None:
        self._client = httpx.Client(follow_redirects=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._client.send(request, stream=True)

    def close(self) -> None:
        self._client.close()


def _entry_write(
    entry: Any, base_url: str
) -> tuple[Interaction, str, dict[str, Any] | None] | None:
    """(create, Type, resource) for an entry POSTing to Type, (update, Type, resource) for one
    PUTting to Type/id (relative, or under the base); None for anything else: another method,
    a conditional update (`Type?...`), another server's URL, a resource of another type."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        return None
    method, url = entry["request"].get("method"), entry["request"].get("url")
    if not isinstance(url, str):
        return None
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    path, query = url.partition("?")[::2]
    parts = path.split("/")
    resource = entry.get("resource")
    body = resource if isinstance(resource, dict) else None
    if not _TYPE.fullmatch(parts[0]) or (body is not None and body.get("resourceType") != parts[0]):
        return None
    if method == "POST" and len(parts) == 1 and not query:
        return "create", parts[0], body
    if method == "PUT" and len(parts) == 2 and parts[1] and not query:
        return "update", parts[0], body
    return None


def _json_body(request: httpx.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(request.read() or b"null")
    except ValueError:
        return None  # not ours to judge: the vendor answers a malformed body
    return body if isinstance(body, dict) else None


def _with_body(request: httpx.Request, body: dict[str, Any]) -> httpx.Request:
    """The same request with a new JSON body (Content-Length recomputed)."""
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return httpx.Request(
        request.method, request.url, headers=headers, content=content, extensions=request.extensions
    )
