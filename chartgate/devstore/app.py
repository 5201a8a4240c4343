"""The FHIR store's Starlette ASGI app: routes for the R4 RESTful interactions (http.html) and `serve`."""

from __future__ import annotations

import json
import logging
import pathlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Final
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from chartgate.devstore.access_log import AccessLog
from chartgate.devstore.bearer import BearerAuth, bearer_error
from chartgate.devstore.bundle import searchset
from chartgate.devstore.capability import capability_statement
from chartgate.devstore.control import Control
from chartgate.devstore.fault_injector import FaultInjector
from chartgate.devstore.faults import FaultPlan, FaultState
from chartgate.devstore.http_headers import (
    RESPONSE_CONTENT_TYPE,
    Preferences,
    etag,
    http_date,
    media_type,
    parse_if_match,
    parse_prefer,
    require_json_response,
)
from chartgate.devstore.interactions import normalize_base
from chartgate.devstore.outcome import FhirError, Issue, fhir_error, information, operation_outcome
from chartgate.devstore.payload import parse_resource
from chartgate.devstore.resource_types import require_id, require_type
from chartgate.devstore.search import parse_condition, parse_search
from chartgate.devstore.smart import AuthServer, BearerError
from chartgate.devstore.smart_clients import SmartServerConfig
from chartgate.devstore.smart_http import smart_routes
from chartgate.devstore.storage import (
    MultipleMatches,
    Storage,
    StoredVersion,
    VersionConflict,
    Written,
)
from chartgate.devstore.transaction import Authorize, Context, WriteInteraction, execute
from chartgate.devstore.validation import validate_resource
from chartgate.devstore.vendor_mode import VendorMode

log: Final = logging.getLogger("chartgate.devstore")
FORM: Final = "application/x-www-form-urlencoded"
_ANY_METHOD: Final = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def fhir_response(
    body: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    content = json.dumps(body, ensure_ascii=False).encode()
    return Response(content, status, headers, media_type=RESPONSE_CONTENT_TYPE)


def _version_headers(base_url: str, version: StoredVersion) -> dict[str, str]:
    """ETag, Last-Modified and the version-specific Location (http.html#create, #update)."""
    return {
        "ETag": etag(version.version_id),
        "Last-Modified": http_date(version.last_updated),
        "Location": (
            f"{base_url}/{version.resource_type}/{version.resource_id}"
            f"/_history/{version.version_id}"
        ),
    }


class FhirApi:
    """The handlers. Blocking work (SQLite, pydantic validation) runs in Starlette's thread pool."""

    def __init__(
        self,
        storage: Storage,
        base_path: str,
        vendor: VendorMode | None = None,
        auth: AuthServer | None = None,
    ) -> None:
        self._storage = storage
        self._base_path = base_path
        self._vendor = vendor  # --behave-like: what that vendor refuses is refused here too
        self._auth = auth  # SMART: a transaction's entries are checked here, not by BearerAuth
        self._started = datetime.now(UTC)
        try:
            self._software_version = package_version("chartgate")
        except PackageNotFoundError:
            self._software_version = "0"

    def _base_url(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{self._base_path}"

    async def metadata(self, request: Request) -> Response:
        _negotiate(request)
        statement = capability_statement(
            self._base_url(request), self._started, self._software_version
        )
        if self._vendor is not None:
            statement = self._vendor.capability(statement)
        return fhir_response(statement)

    async def type_level(self, request: Request) -> Response:
        """GET: search-type; POST: create or conditional create; PUT: conditional update."""
        _negotiate(request)
        resource_type = require_type(request.path_params["type"])
        if request.method == "POST":
            return await self._create(request, resource_type)
        if request.method == "PUT":
            # http.html#cond-update: a server without conditional update SHOULD answer 400.
            raise fhir_error(400, "not-supported", "conditional update is not supported")
        params = list(request.query_params.multi_items())
        return await self._search(request, resource_type, params)

    async def search_post(self, request: Request) -> Response:
        """POST [base]/[type]/_search with form-encoded parameters (http.html#search)."""
        _negotiate(request)
        resource_type = require_type(request.path_params["type"])
        if media_type(request.headers.get("content-type")) != FORM:
            raise fhir_error(415, "not-supported", f"a POST search takes a {FORM} body")
        # The stdlib parses the form: Starlette's request.form() would need python-multipart.
        form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        params = [*request.query_params.multi_items(), *form]
        return await self._search(request, resource_type, params)

    async def transaction(self, request: Request) -> Response:
        """POST [base]: a transaction Bundle, all of its entries stored or none (transaction.py)."""
        _negotiate(request)
        if self._vendor is not None:
            self._vendor.check_transaction()
        raw = await request.body()
        content_type = request.headers.get("content-type")
        context = Context(
            base_url=self._base_url(request),
            preferences=parse_prefer(request.headers.getlist("prefer")),
            authorize=self._authorize(request.headers.get("authorization")),
            vendor=self._vendor,
        )

        def run() -> Response:
            return fhir_response(execute(self._storage, raw, content_type, context))

        return await run_in_threadpool(run)

    def _authorize(self, authorization: str | None) -> Authorize | None:
        auth = self._auth
        if auth is None:
            return None

        def authorize(resource_type: str, interaction: WriteInteraction) -> None:
            try:
                auth.check(authorization, resource_type, interaction)
            except BearerError as exc:
                raise bearer_error(exc) from None

        return authorize

    async def instance(self, request: Request) -> Response:
        """GET: read; PUT: update (or update-as-create); DELETE: delete."""
        _negotiate(request)
        resource_type = require_type(request.path_params["type"])
        resource_id = require_id(request.path_params["id"])
        base_url = self._base_url(request)
        if request.method == "PUT":
            return await self._update(request, resource_type, resource_id)
        if request.method == "DELETE":
            return await run_in_threadpool(self._delete, resource_type, resource_id)
        latest = await run_in_threadpool(self._storage.latest, resource_type, resource_id)
        return _read_response(base_url, resource_type, resource_id, latest)

    async def vread(self, request: Request) -> Response:
        _negotiate(request)
        resource_type = require_type(request.path_params["type"])
        resource_id = require_id(request.path_params["id"])
        vid: str = request.path_params["vid"]
        found = None
        if re.fullmatch(r"[0-9]{1,18}", vid):  # ASCII digits: str.isdigit() also takes "²"
            found = await run_in_threadpool(
                self._storage.version, resource_type, resource_id, int(vid)
            )
        return _read_response(self._base_url(request), resource_type, resource_id, found)

    async def _create(self, request: Request, resource_type: str) -> Response:
        if self._vendor is not None:
            self._vendor.check_interaction("create", resource_type)
        resource = parse_resource(
            await request.body(), request.headers.get("content-type"), resource_type
        )
        condition = request.headers.get("if-none-exist")
        preferences = parse_prefer(request.headers.getlist("prefer"))
        base_url = self._base_url(request)

        def create() -> Response:
            if self._vendor is not None:
                self._vendor.check_create(resource_type, resource, condition)
            # http.html#create: the server assigns the id; one sent by the client is ignored.
            resource.pop("id", None)
            matcher = None
            if condition is not None:
                matcher = parse_condition(resource_type, condition, base_url=base_url).matches
            validate_resource(resource)
            try:
                written = self._storage.create(resource_type, resource, if_none_match=matcher)
            except MultipleMatches as exc:
                raise fhir_error(
                    412,
                    "multiple-matches",
                    f"If-None-Exist matches {exc.count} {resource_type} resources; nothing created",
                ) from None
            verb = "created" if written.created else "already exists"
            return _write_response(base_url, written, preferences, verb)

        return await run_in_threadpool(create)

    async def _update(self, request: Request, resource_type: str, resource_id: str) -> Response:
        if self._vendor is not None:
            self._vendor.check_interaction("update", resource_type)
        resource = parse_resource(
            await request.body(), request.headers.get("content-type"), resource_type
        )
        if_match_header = request.headers.get("if-match")
        if_match = parse_if_match(if_match_header) if if_match_header is not None else None
        preferences = parse_prefer(request.headers.getlist("prefer"))
        base_url = self._base_url(request)
        if resource.get("id") != resource_id:
            # http.html#update: SHALL answer 400 when the body's id is missing or differs.
            raise fhir_error(
                400,
                "invalid",
                "the resource id must equal the id in the URL",
                expression=(f"{resource_type}.id",),
            )

        def update() -> Response:
            validate_resource(resource)
            try:
                written = self._storage.update(
                    resource_type, resource_id, resource, if_match=if_match
                )
            except VersionConflict as exc:
                current = "none" if exc.current_version is None else etag(exc.current_version)
                raise fhir_error(
                    412, "conflict", f"If-Match does not match the current version ({current})"
                ) from None
            verb = "created" if written.created else "updated"
            return _write_response(base_url, written, preferences, verb)

        return await run_in_threadpool(update)

    def _delete(self, resource_type: str, resource_id: str) -> Response:
        """http.html#delete: 204; deleting an already deleted resource changes nothing."""
        deleted = self._storage.delete(resource_type, resource_id)
        if deleted is not None:
            return fhir_response(None, 204, {"ETag": etag(deleted.version_id)})
        if self._storage.latest(resource_type, resource_id) is None:
            raise fhir_error(404, "not-found", f"{resource_type}/{resource_id} is not known")
        return fhir_response(None, 204)

    async def _search(
        self, request: Request, resource_type: str, params: list[tuple[str, str]]
    ) -> Response:
        strict = parse_prefer(request.headers.getlist("prefer")).handling == "strict"
        base_url = self._base_url(request)

        def search() -> Response:
            query = parse_search(resource_type, params, base_url=base_url, strict=strict)
            matches = [
                v for v in self._storage.current(resource_type) if query.matches(v.resource or {})
            ]
            return fhir_response(searchset(base_url, resource_type, query, matches))

        return await run_in_threadpool(search)


def _negotiate(request: Request) -> None:
    require_json_response(request.headers.get("accept"), request.query_params.get("_format"))


def _read_response(
    base_url: str, resource_type: str, resource_id: str, found: StoredVersion | None
) -> Response:
    """read/vread: 200 with ETag and Last-Modified; 404 unknown; 410 deleted (http.html#read)."""
    if found is None:
        raise fhir_error(404, "not-found", f"{resource_type}/{resource_id} is not known")
    headers = _version_headers(base_url, found)
    if found.deleted:
        raise fhir_error(
            410,
            "deleted",
            f"{resource_type}/{resource_id} is deleted",
            headers={"ETag": headers["ETag"]},
        )
    del headers["Location"]  # Location belongs to writes
    return fhir_response(found.resource, 200, headers)


def _write_response(
    base_url: str, written: Written, preferences: Preferences, verb: str
) -> Response:
    """201 (created) or 200 (updated, or matched by a conditional create), body per Prefer."""
    version = written.version
    headers = _version_headers(base_url, version)
    status = 201 if written.created else 200
    name = f"{version.resource_type}/{version.resource_id}"
    if preferences.return_ == "minimal":
        return fhir_response(None, status, headers)
    if preferences.return_ == "OperationOutcome":
        return fhir_response(
            information(f"{name} {verb} as version {version.version_id}"), status, headers
        )
    return fhir_response(version.resource, status, headers)


async def _no_interaction(request: Request) -> Response:
    raise HTTPException(404)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return fhir_response(exc.outcome(), exc.status, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (method), as OperationOutcomes."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        issue = Issue("error", "not-supported", f"{request.method} is not supported here")
    elif exc.status_code == 404:
        issue = Issue(
            "error",
            "not-found",
            "no FHIR interaction is served at this URL "
            "(history, operations and batch are not supported)",
        )
    else:
        issue = Issue("error", "processing", f"HTTP {exc.status_code}")
    return fhir_response(operation_outcome([issue]), exc.status_code, dict(exc.headers or {}))


def create_app(
    db_path: pathlib.Path,
    base_path: str = "/fhir",
    *,
    faults: FaultPlan | None = None,
    allow_control: bool = False,
    smart: SmartServerConfig | None = None,
    behave_like: str | None = None,
) -> ASGIApp:
    """The ASGI app serving a store kept in the SQLite file `db_path` under `base_path`.

    `faults`: a plan injected from the first request (docs/devstore-faults.md); `allow_control`:
    serve the loopback-only control endpoints (`/_faults`, `/_auth/*`); `smart`: registered SMART
    Backend Services clients, which turns the token endpoint and bearer checks on (docs/smart.md).
    Without `smart` every interaction is open, as before. `behave_like`: a vendor profile name
    (docs/adapters.md); the store then refuses what that vendor refuses (ValueError if unknown).
    """
    base = normalize_base(base_path)
    vendor = VendorMode.named(behave_like) if behave_like is not None else None
    storage = Storage(db_path)
    auth = AuthServer(smart, db_path.parent / "smart-jti.sqlite3") if smart is not None else None
    api = FhirApi(storage, base, vendor, auth)
    fault_state = FaultState(faults)
    control = Control(enabled=allow_control, faults=fault_state, auth=auth)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            storage.close()
            if auth is not None:
                auth.close()
            log.info("FHIR store stopped; database closed")

    routes = [
        *control.routes(),
        # Before the FHIR routes: `.well-known` and `auth` would otherwise match {type}/{id}.
        *smart_routes(auth, base),
        Route(f"{base}/metadata", api.metadata, methods=["GET"]),
        # The base itself: exact, so no {type} route below can take it, nor it theirs.
        Route(base or "/", api.transaction, methods=["POST"]),
        # http.html#root: the base has no trailing slash. [base]/ stays a 404, as before,
        # rather than Starlette's redirect to the base route.
        *([Route(f"{base}/", _no_interaction, methods=_ANY_METHOD)] if base else []),
        Route(f"{base}/{{type}}/_search", api.search_post, methods=["POST"]),
        Route(f"{base}/{{type}}/{{id}}/_history/{{vid}}", api.vread, methods=["GET"]),
        Route(f"{base}/{{type}}/{{id}}", api.instance, methods=["GET", "PUT", "DELETE"]),
        Route(f"{base}/{{type}}", api.type_level, methods=["GET", "POST", "PUT"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Any]] = {
        FhirError: _fhir_error,
        HTTPException: _http_error,
    }
    middleware = [Middleware(AccessLog)]
    if auth is not None:
        middleware.append(Middleware(BearerAuth, auth=auth, base=base))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    # Outermost, outside Starlette's own error handling: a dropped connection must stay dropped.
    return FaultInjector(app, fault_state, base)


def serve(
    host: str,
    port: int,
    db_path: pathlib.Path,
    base_path: str = "/fhir",
    *,
    faults: pathlib.Path | None = None,
    allow_fault_control: bool = False,
    clients: pathlib.Path | None = None,
    behave_like: str | None = None,
) -> None:
    """Run with uvicorn until SIGTERM/SIGINT (blocking). Log no resource content (PHI): method, path, status only.

    `faults` is a FaultPlan JSON file, `clients` a SMART clients JSON file; either one that cannot
    be read or is invalid raises ValueError naming the file and the problem, before serving, as
    does a `behave_like` that names no vendor profile.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    plan = FaultPlan.load(faults) if faults is not None else None
    smart = SmartServerConfig.load(clients) if clients is not None else None
    app = create_app(
        db_path,
        base_path,
        faults=plan,
        allow_control=allow_fault_control,
        smart=smart,
        behave_like=behave_like,
    )
    log.info(
        "FHIR store on http://%s:%d%s (db %s; faults %s; SMART auth %s; control %s; behaves like %s)",
        host,
        port,
        base_path,
        db_path,
        faults or "none",
        f"{len(smart.clients)} client(s)" if smart is not None else "off",
        "loopback" if allow_fault_control else "off",
        behave_like or "plain FHIR R4",
    )
    # access_log=False: uvicorn's access line carries the query string, and search values can be
    # patient identifiers. AccessLog logs method, path and status instead. log_config=None keeps
    # the process's own logging configuration. proxy_headers=False: the control endpoints trust
    # the TCP peer's address, never an X-Forwarded-For header.
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="on",
        proxy_headers=False,
    )
