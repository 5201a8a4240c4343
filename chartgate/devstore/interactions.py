"""Which FHIR R4 RESTful interaction (http.html#summary) a request is, read from its method and path alone."""

from __future__ import annotations

import re
from typing import Final, Literal

Interaction = Literal["create", "read", "update", "delete", "search"]
INTERACTIONS: Final[tuple[Interaction, ...]] = ("create", "read", "update", "delete", "search")
WRITES: Final[frozenset[Interaction]] = frozenset({"create", "update", "delete"})

# The SMART v2 permission each interaction needs (scopes-and-launch-context.html, "cruds").
PERMISSION: Final[dict[Interaction, str]] = {
    "create": "c",
    "read": "r",
    "update": "u",
    "delete": "d",
    "search": "s",
}

_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")
_TYPE_LEVEL: Final[dict[str, Interaction]] = {"POST": "create", "GET": "search"}
_INSTANCE_LEVEL: Final[dict[str, Interaction]] = {
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

    Paths under the base that are not a resource type (metadata, .well-known, the token
    endpoint) are None too: they are not FHIR interactions. A path under a type that matches no
    interaction (PATCH, history, operations) is (None, type): the app refuses it, and the
    bearer check still wants a valid token before saying so.
    """
    prefix = base + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if not _TYPE.fullmatch(parts[0]):
        return None
    resource_type = parts[0]
    interaction: Interaction | None = None
    if len(parts) == 1:
        interaction = _TYPE_LEVEL.get(method)
    elif len(parts) == 2 and parts[1] == "_search":
        interaction = "search" if method == "POST" else None
    elif len(parts) == 2:
        interaction = _INSTANCE_LEVEL.get(method)
    elif len(parts) == 4 and parts[2] == "_history" and method == "GET":
        interaction = "read"  # vread: a read of one version
    return interaction, resource_type
