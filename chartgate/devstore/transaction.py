"""POST [base] with a transaction Bundle (FHIR R4 http.html#transaction, #trules, #transaction-response)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from chartgate.devstore.http_headers import Preferences, etag, parse_if_match
from chartgate.devstore.outcome import FhirError, Issue, fhir_error, information
from chartgate.devstore.payload import parse_strict_object
from chartgate.devstore.resource_types import require_id, require_type
from chartgate.devstore.search import parse_condition
from chartgate.devstore.storage import (
    Matcher,
    Storage,
    StoredVersion,
    VersionConflict,
    WriteTransaction,
    Written,
    fhir_instant,
)
from chartgate.devstore.validation import validate_resource
from chartgate.devstore.vendor_mode import VendorMode

MAX_ENTRIES: Final = 1000
# FHIR Extensions Pack, usable on Reference: resolve the reference to the version this same
# transaction writes.
RESOLVE_AS_VERSION_SPECIFIC: Final = (
    "http://hl7.org/fhir/StructureDefinition/resolve-as-version-specific"
)
_REFUSED_METHODS: Final = frozenset({"DELETE", "GET", "HEAD", "PATCH"})
# http.html#trules, "Conditional References": Type?search in place of a reference.
_CONDITIONAL_REFERENCE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}\?")
_RESOURCE_PATH: Final = re.compile(r"[A-Z][A-Za-z]{1,63}(?=[.\[]|$)")

WriteInteraction = Literal["create", "update"]
# Raises FhirError (401/403) unless the caller may do the interaction on the type.
Authorize = Callable[[str, WriteInteraction], None]


@dataclass(frozen=True, slots=True)
class Context:
    """What a transaction needs from its HTTP request and the app."""

    base_url: str
    preferences: Preferences
    authorize: Authorize | None = None  # None: no SMART checks (the store runs open)
    vendor: VendorMode | None = None


@dataclass(slots=True)
class Entry:
    """One Bundle.entry, read: a create (POST) or an update (PUT) and its resource."""

    index: int
    resource_type: str
    resource: dict[str, Any]
    resource_id: str | None = None  # PUT: the id in request.url
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: int | Literal["*"] | None = None
    references: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interaction(self) -> WriteInteraction:
        return "update" if self.resource_id is not None else "create"


@dataclass(frozen=True, slots=True)
class Planned:
    """The identity and version an entry will write, or the resource a conditional create found."""

    resource_type: str
    resource_id: str
    version_id: int
    found: StoredVersion | None = None

    @property
    def literal(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


def execute(
    storage: Storage, raw: bytes, content_type: str | None, context: Context
) -> dict[str, Any]:
    """Run the transaction the body holds: its transaction-response Bundle, or a FhirError with
    the status the failing entry would have had alone, nothing stored (http.html#trules)."""
    entries = read_bundle(parse_strict_object(raw, content_type), context.base_url)
    # The token first, for every entry: a caller without the scopes learns nothing else.
    if context.authorize is not None:
        for entry in entries:
            with _at(entry.index):
                context.authorize(entry.resource_type, entry.interaction)
    for entry in entries:
        with _at(entry.index):
            _check_entry(entry, context.vendor)
    conditions = _conditions(entries, context.base_url)
    with storage.transaction() as writes:
        planned = _plan(writes, entries, conditions)
        _refuse_overlaps(entries, planned)
        _resolve_references(entries, planned)
        results = _write(writes, entries, planned)
    return _response(entries, results, context)


def read_bundle(bundle: Mapping[str, Any], base_url: str) -> list[Entry]:
    """The entries of a transaction Bundle, in request order; 400 (413 too many) otherwise."""
    if bundle.get("resourceType") != "Bundle":
        raise fhir_error(
            400, "invalid", "POST [base] takes a Bundle", expression=("Bundle.resourceType",)
        )
    if bundle.get("type") == "batch":
        raise fhir_error(
            400, "not-supported", "batch Bundles are not supported; send type transaction"
        )
    if bundle.get("type") != "transaction":
        raise fhir_error(
            400, "invalid", "Bundle.type must be transaction", expression=("Bundle.type",)
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise fhir_error(
            400, "structure", "Bundle.entry must be an array", expression=("Bundle.entry",)
        )
    if len(raw_entries) > MAX_ENTRIES:
        raise fhir_error(413, "too-long", f"a transaction takes at most {MAX_ENTRIES} entries")
    validate_resource(_shell(bundle))  # the Bundle's own elements; each resource comes later
    entries = []
    for index, raw in enumerate(raw_entries):
        with _at(index):
            entries.append(_read_entry(index, raw, base_url))
    _refuse_duplicate_full_urls(entries)
    return entries


def _shell(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The Bundle without its entries' resources, which are validated one by one as themselves."""
    shell = dict(bundle)
    if isinstance(shell.get("entry"), list):
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in shell["entry"]
        ]
    return shell


def _read_entry(index: int, raw: Any, base_url: str) -> Entry:
    if not isinstance(raw, dict):
        raise fhir_error(400, "structure", "an entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise fhir_error(400, "required", "request is required in a transaction")
    method = request.get("method")
    if method in _REFUSED_METHODS:
        raise fhir_error(
            400, "not-supported", f"{method} entries are not supported in a transaction here"
        )
    if method not in ("POST", "PUT"):
        raise fhir_error(400, "invalid", "request.method must be POST or PUT")
    for name in ("ifNoneMatch", "ifModifiedSince"):
        if name in request:
            raise fhir_error(400, "not-supported", f"request.{name} applies to reads only")
    resource_type, resource_id = _target(str(request.get("url", "")), method, base_url)
    resource = raw.get("resource")
    if not isinstance(resource, dict):
        raise fhir_error(400, "required", f"resource is required for {method}")
    if resource.get("resourceType") != resource_type:
        raise fhir_error(
            400,
            "invalid",
            f"resource.resourceType must be {resource_type}, the type in request.url",
            expression=("resourceType",),
        )
    entry = Entry(index, resource_type, dict(resource), resource_id, _full_url(raw))
    if method == "POST":
        _read_create(entry, request)
    else:
        _read_update(entry, request)
    return entry


def _target(url: str, method: str, base_url: str) -> tuple[str, str | None]:
    """(type, None) for POST's `Type`, (type, id) for PUT's `Type/id`; the server's own base may
    prefix them (request.url is relative to it, but an absolute one naming it means the same)."""
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    if "?" in url:
        if method == "PUT":
            # http.html#cond-update: a server without conditional update SHOULD answer 400.
            raise fhir_error(400, "not-supported", "conditional update is not supported")
        raise fhir_error(
            400, "invalid", "a POST entry's request.url is the type; conditions go in ifNoneExist"
        )
    parts = url.split("/")
    if method == "POST" and len(parts) == 1 and parts[0]:
        return require_type(parts[0]), None
    if method == "PUT" and len(parts) == 2 and parts[0]:
        return require_type(parts[0]), require_id(parts[1])
    shape = "[type]" if method == "POST" else "[type]/[id]"
    raise fhir_error(400, "invalid", f"request.url of a {method} entry must be {shape}")


def _full_url(raw: Mapping[str, Any]) -> str | None:
    full_url = raw.get("fullUrl")
    return full_url if isinstance(full_url, str) else None


def _read_create(entry: Entry, request: Mapping[str, Any]) -> None:
    if "ifMatch" in request:
        raise fhir_error(400, "invalid", "request.ifMatch applies to PUT entries")
    condition = request.get("ifNoneExist")
    entry.if_none_exist = condition if isinstance(condition, str) else None
    # http.html#create: the server assigns the id; one sent by the client is ignored.
    entry.resource.pop("id", None)


def _read_update(entry: Entry, request: Mapping[str, Any]) -> None:
    if "ifNoneExist" in request:
        raise fhir_error(400, "invalid", "request.ifNoneExist applies to POST entries")
    if_match = request.get("ifMatch")
    entry.if_match = parse_if_match(if_match) if isinstance(if_match, str) else None
    if entry.resource.get("id") != entry.resource_id:
        # http.html#update: SHALL answer 400 when the body's id is missing or differs.
        raise fhir_error(
            400, "invalid", "resource.id must equal the id in request.url", expression=("id",)
        )
    full_url = entry.full_url
    literal = f"{entry.resource_type}/{entry.resource_id}"
    if (
        full_url
        and not full_url.startswith("urn:")
        and full_url.split("/")[-2:] != literal.split("/")
    ):
        # Bundle.entry.fullUrl: SHALL NOT disagree with the resource's id.
        raise fhir_error(400, "invalid", "fullUrl disagrees with request.url")


def _refuse_duplicate_full_urls(entries: Sequence[Entry]) -> None:
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in seen:
            first = seen[entry.full_url]
            raise fhir_error(
                400,
                "invalid",
                f"Bundle.entry[{entry.index}] repeats the fullUrl of Bundle.entry[{first}]",
                expression=(f"Bundle.entry[{entry.index}].fullUrl",),
            )
        seen[entry.full_url] = entry.index


def _check_entry(entry: Entry, vendor: VendorMode | None) -> None:
    """What the entry would have met alone, in the same order: the vendor's refusals, then the
    resource's validity; and no conditional reference, which this server does not resolve."""
    if vendor is not None:
        vendor.check_interaction(entry.interaction, entry.resource_type)
        if entry.resource_id is None:
            vendor.check_create(entry.resource_type, entry.resource, entry.if_none_exist)
    try:
        validate_resource(entry.resource)
    except RecursionError:
        raise fhir_error(400, "structure", "the resource nests too deeply") from None
    entry.references = _reference_holders(entry.resource)
    for holder in entry.references:
        if _CONDITIONAL_REFERENCE.match(holder["reference"]):
            raise fhir_error(
                400, "not-supported", "conditional references (Type?search) are not supported"
            )


def _reference_holders(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object in the resource, contained ones included, whose `reference` is a string (a
    Reference), found without recursion."""
    holders: list[dict[str, Any]] = []
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                holders.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return holders


def _conditions(entries: Sequence[Entry], base_url: str) -> dict[int, Matcher]:
    """Each conditional create's criteria, parsed as If-None-Exist is (http.html#ccreate)."""
    conditions: dict[int, Matcher] = {}
    for entry in entries:
        if entry.if_none_exist is not None:
            with _at(entry.index):
                query = parse_condition(entry.resource_type, entry.if_none_exist, base_url=base_url)
            conditions[entry.index] = query.matches
    return conditions


def _plan(
    writes: WriteTransaction, entries: Sequence[Entry], conditions: Mapping[int, Matcher]
) -> dict[int, Planned]:
    """The identity and version of every entry, before anything is written, so references can
    name them. Conditional creates all match against what was stored before the transaction:
    the outcome must not depend on the order of the entries (http.html#trules)."""
    planned: dict[int, Planned] = {}
    for entry in entries:
        with _at(entry.index):
            planned[entry.index] = _plan_entry(writes, entry, conditions.get(entry.index))
    return planned


def _plan_entry(writes: WriteTransaction, entry: Entry, condition: Matcher | None) -> Planned:
    if entry.resource_id is not None:
        try:
            version, _ = writes.next_version(
                entry.resource_type, entry.resource_id, if_match=entry.if_match
            )
        except VersionConflict as exc:
            current = "none" if exc.current_version is None else etag(exc.current_version)
            raise fhir_error(
                412, "conflict", f"ifMatch does not match the current version ({current})"
            ) from None
        return Planned(entry.resource_type, entry.resource_id, version)
    if condition is not None:
        found = writes.matching(entry.resource_type, condition)
        if len(found) > 1:
            raise fhir_error(
                412,
                "multiple-matches",
                f"ifNoneExist matches {len(found)} {entry.resource_type} resources",
            )
        if found:
            match = found[0]
            return Planned(match.resource_type, match.resource_id, match.version_id, match)
    return Planned(entry.resource_type, str(uuid.uuid4()), 1)


def _refuse_overlaps(entries: Sequence[Entry], planned: Mapping[int, Planned]) -> None:
    """http.html#trules: resource identities (resolved conditional ones included) that overlap
    make the transaction fail."""
    seen: dict[str, int] = {}
    for entry in entries:
        literal = planned[entry.index].literal
        if literal in seen:
            raise fhir_error(
                400,
                "invalid",
                f"Bundle.entry[{entry.index}] and Bundle.entry[{seen[literal]}] write the same "
                "resource",
                expression=(f"Bundle.entry[{entry.index}]",),
            )
        seen[literal] = entry.index


def _resolve_references(entries: Sequence[Entry], planned: Mapping[int, Planned]) -> None:
    """Replace each entry's fullUrl, wherever a Reference or the narrative names it, with the
    Type/id the server assigned (http.html#trules); Type/id/_history/v where the Reference asks
    for resolve-as-version-specific. Other references are left as sent."""
    targets = {e.full_url: planned[e.index] for e in entries if e.full_url is not None}
    if not targets:
        return
    for entry in entries:
        for holder in entry.references:
            target = targets.get(holder["reference"])
            if target is not None:
                versioned = _asks_version_specific(holder)
                suffix = f"/_history/{target.version_id}" if versioned else ""
                holder["reference"] = target.literal + suffix
        _resolve_narrative(entry.resource, targets)


def _asks_version_specific(reference: Mapping[str, Any]) -> bool:
    extensions = reference.get("extension")
    return isinstance(extensions, list) and any(
        isinstance(e, dict)
        and e.get("url") == RESOLVE_AS_VERSION_SPECIFIC
        and e.get("valueBoolean") is True
        for e in extensions
    )


def _resolve_narrative(resource: dict[str, Any], targets: Mapping[str, Planned]) -> None:
    """Links in the narrative (`<a href>`, `<img src>`) name entries by fullUrl too."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(text, dict) or not isinstance(div, str):
        return
    for full_url, target in targets.items():
        if full_url in div:
            for attribute in ("href", "src"):
                div = div.replace(f'{attribute}="{full_url}"', f'{attribute}="{target.literal}"')
    text["div"] = div


def _write(
    writes: WriteTransaction, entries: Sequence[Entry], planned: Mapping[int, Planned]
) -> dict[int, Written]:
    """Creates, then updates (http.html#trules), each at the identity planned for it."""
    results: dict[int, Written] = {}
    for entry in sorted(entries, key=lambda e: e.resource_id is not None):
        plan = planned[entry.index]
        if plan.found is not None:
            results[entry.index] = Written(plan.found, created=False)
        elif entry.resource_id is None:
            results[entry.index] = writes.create(
                entry.resource_type, entry.resource, resource_id=plan.resource_id
            )
        else:
            results[entry.index] = writes.update(
                entry.resource_type, entry.resource_id, entry.resource, if_match=entry.if_match
            )
        if results[entry.index].version.version_id != plan.version_id:
            # The write lock is held from planning to here, so this cannot happen; were it to,
            # a version-specific reference would name the wrong version: roll everything back.
            raise RuntimeError("a transaction wrote another version than it planned")
    return results


def _response(
    entries: Sequence[Entry], results: Mapping[int, Written], context: Context
) -> dict[str, Any]:
    """http.html#transaction-response: one entry per request entry, in the request's order."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(datetime.now(UTC))},
        "type": "transaction-response",
        "entry": [_response_entry(results[e.index], context) for e in entries],
    }


def _response_entry(written: Written, context: Context) -> dict[str, Any]:
    version = written.version
    literal = f"{version.resource_type}/{version.resource_id}"
    response: dict[str, Any] = {
        "status": "201 Created" if written.created else "200 OK",
        "location": f"{literal}/_history/{version.version_id}",
        "etag": etag(version.version_id),
        "lastModified": fhir_instant(version.last_updated),
    }
    entry: dict[str, Any] = {"fullUrl": f"{context.base_url}/{literal}"}
    if context.preferences.return_ == "representation":
        entry["resource"] = version.resource
    elif context.preferences.return_ == "OperationOutcome":
        verb = "created" if written.created else "stored"
        response["outcome"] = information(f"{literal} {verb} as version {version.version_id}")
    entry["response"] = response
    return entry


@contextmanager
def _at(index: int) -> Iterator[None]:
    """Name the entry in any error raised for it: same status, its issues prefixed with
    `Bundle.entry[i]` and their expressions made paths from the Bundle."""
    try:
        yield
    except FhirError as exc:
        issues = [
            Issue(
                issue.severity,
                issue.code,
                f"Bundle.entry[{index}]: {issue.diagnostics}",
                _expressions(index, issue.expression),
            )
            for issue in exc.issues
        ]
        raise FhirError(exc.status, issues, exc.headers) from None


def _expressions(index: int, expressions: Sequence[str]) -> tuple[str, ...]:
    """`Observation.code` (validation) as `Bundle.entry[i].resource.code`; `resourceType` as
    `Bundle.entry[i].resource.resourceType`; none at all as `Bundle.entry[i]`."""
    entry = f"Bundle.entry[{index}]"
    if not expressions:
        return (entry,)
    mapped = []
    for expression in expressions:
        match = _RESOURCE_PATH.match(expression)
        rest = expression[match.end() :] if match else "." + expression
        mapped.append(f"{entry}.resource{rest}")
    return tuple(mapped)
