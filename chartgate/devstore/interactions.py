"""Which FHIR R4 RESTful interaction (http.html#summary) a request is, read from its method and path alone."""

from __future__ import annotations

import re
from typing import Final, Literal

# The interactions on one resource type, each with its SMART permission letter.
TypeInteraction = Literal["create", "read", "update", "delete", "search"]
# transaction: POST [base] with a transaction Bundle (http.html#transaction), whose entries are
# type interactions of their own; it has no type and no permission letter of its own.
Interaction = TypeInteraction | Literal["transaction"]
INTERACTIONS: Final[tuple[Interaction, ...]] = (
    "create",
    "read",
    "update",
    "delete",
    "search",
    "transaction",
)
WRITES: Final[frozenset[Interaction]] = frozenset({"create", "update", "delete", "transaction"})

# The SMART v2 permission each interaction needs (scopes-and-launch-context.html, "cruds").
PERMISSION: Final[dict[TypeInteraction, str]] = {
    "create": "c",
    "read": "r",
    "update": "u",
    "delete": "d",
    "search": "s",
}

_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")
_TYPE_LEVEL: Final[dict[str, TypeInteraction]] = {"POST": "create", "GET": "search"}
_INSTANCE_LEVEL: Final[dict[str, TypeInteraction]] = {
    "GET": "read",
    "PUT": "update",
    "DELETE": "delete",
}


def normalize_base(base_path: str) -> str:
    """`/fhir` for `fhir`, `/fhir/` or `/fhir`; the empty string for the root."""
    stripped = base_path.strip("/")
    return "/" + stripped if stripped else ""


def classify(method: str, path: str, base: str) -> tuple[Interaction | None, str | None] | None:
    """(interaction, resource type) for a request under the FHIR base, or None outside it.

    POST [base] itself is ("transaction", None). Paths under the base that are not a resource
    type (metadata, .well-known, the token endpoint) are None: they are not FHIR interactions. A
    path under a type that matches no interaction (PATCH, history, operations) is (None, type):
    the app refuses it, and the bearer check still wants a valid token before saying so.
    """
    if method == "POST" and path == (base or "/"):
        return "transaction", None
    prefix = base + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if not _TYPE.fullmatch(parts[0]):
        return None
    resource_type = parts[0]
    interaction: TypeInteraction | None = None
    if len(parts) == 1:
        interaction = _TYPE_LEVEL.get(method)
    elif len(parts) == 2 and parts[1] == "_search":
        interaction = "search" if method == "POST" else None
    elif len(parts) == 2:
        interaction = _INSTANCE_LEVEL.get(method)
    elif len(parts) == 4 and parts[2] == "_history" and method == "GET":
        interaction = "read"  # vread: a read of one version
    return interaction, resource_type
