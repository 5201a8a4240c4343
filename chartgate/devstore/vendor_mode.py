"""`--behave-like NAME`: the store refuses what a vendor profile (adapters/vendors) says that vendor refuses."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from adapters.vendors.profile import Interaction, VendorProfile
from adapters.vendors.registry import get_profile
from chartgate.devstore.outcome import fhir_error

# The interactions of the store's CapabilityStatement that a vendor mode may take away.
_WRITES: dict[str, Interaction] = {"create": "create", "update": "update"}


class VendorMode:
    """The checks a vendor would make before storing a write, with its answers.

    The facts come from the same profile the adapter uses, so the store and the adapter cannot
    drift apart; what the tests then show is that the adapter honours them (it never sends what
    the store would refuse). Statuses a vendor does not document are the profile's
    `errors.unsupported_write_status` and 400, as docs/adapters.md says.
    """

    def __init__(self, profile: VendorProfile) -> None:
        self.profile = profile

    @classmethod
    def named(cls, name: str) -> VendorMode:
        """The mode for a registered profile; ValueError (listing the names) for any other."""
        return cls(get_profile(name))

    def check_interaction(self, interaction: Interaction, resource_type: str) -> None:
        """A create or update of a type the vendor does not take: its refusal, before the body
        is read."""
        if not self.profile.accepts(interaction, resource_type):
            raise fhir_error(
                self.profile.errors.unsupported_write_status,
                "not-supported",
                f"{self.profile.title} does not accept {interaction} of {resource_type} "
                f"(local store behaving like {self.profile.name})",
            )

    def check_transaction(self) -> None:
        """POST [base] with a transaction Bundle where the vendor takes none: refused as an
        unsupported write, before the body is read (each entry is then checked as itself)."""
        if not self.profile.conditionals.transactions:
            raise fhir_error(
                self.profile.errors.unsupported_write_status,
                "not-supported",
                f"{self.profile.title} does not accept transaction of Bundle "
                f"(local store behaving like {self.profile.name})",
            )

    def check_create(
        self, resource_type: str, resource: Mapping[str, Any], if_none_exist: str | None
    ) -> None:
        """If-None-Exist where the vendor has no conditional create, then what a created
        resource must carry (elements, fixed values, identifiers, extensions)."""
        if if_none_exist is not None and not self.profile.conditionals.conditional_create:
            raise fhir_error(
                400,
                "not-supported",
                f"conditional create (If-None-Exist) is not supported "
                f"(local store behaving like {self.profile.name})",
            )
        required = self.profile.requirements
        for element in required.elements.get(resource_type, ()):
            if resource.get(element) in (None, "", [], {}):
                raise fhir_error(
                    400,
                    "required",
                    f"{resource_type}.{element} is required by {self.profile.title}",
                    expression=(f"{resource_type}.{element}",),
                )
        for element, value in required.fixed.get(resource_type, {}).items():
            if resource.get(element) != value:
                raise fhir_error(
                    400,
                    "value",
                    f"{self.profile.title} files {resource_type} only with {element} {value!r}",
                    expression=(f"{resource_type}.{element}",),
                )
        for rule in required.identifiers:
            if required.applies(rule.resource_types, resource_type) and not _has_identifier(
                resource, rule.system
            ):
                raise fhir_error(
                    400,
                    "required",
                    f"an identifier of system {rule.system} is required by {self.profile.title}",
                    expression=(f"{resource_type}.identifier",),
                )
        for extension in required.extensions:
            if required.applies(extension.resource_types, resource_type) and not _has_extension(
                resource, extension.url
            ):
                raise fhir_error(
                    400,
                    "required",
                    f"the extension {extension.url} is required by {self.profile.title}",
                    expression=(f"{resource_type}.extension",),
                )

    def capability(self, statement: Mapping[str, Any]) -> dict[str, Any]:
        """The store's CapabilityStatement with the vendor's writes and conditionals."""
        adjusted = copy.deepcopy(dict(statement))
        conditionals = self.profile.conditionals
        for rest in adjusted.get("rest", []):
            for entry in rest.get("resource", []):
                resource_type = entry.get("type", "")
                entry["conditionalCreate"] = conditionals.conditional_create
                entry["conditionalUpdate"] = conditionals.conditional_update
                entry["interaction"] = [
                    i
                    for i in entry.get("interaction", [])
                    if i.get("code") not in _WRITES
                    or self.profile.accepts(_WRITES[i["code"]], resource_type)
                ]
            if not conditionals.transactions:
                rest["interaction"] = [
                    i for i in rest.get("interaction", []) if i.get("code") != "transaction"
                ]
        implementation = adjusted.setdefault("implementation", {})
        implementation["description"] = (
            f"{implementation.get('description', '')} (behaving like {self.profile.title})"
        ).strip()
        return adjusted


def _has_identifier(resource: Mapping[str, Any], system: str) -> bool:
    identifiers = resource.get("identifier")
    return isinstance(identifiers, list) and any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") for i in identifiers
    )


def _has_extension(resource: Mapping[str, Any], url: str) -> bool:
    extensions = resource.get("extension")
    return isinstance(extensions, list) and any(
        isinstance(e, dict) and e.get("url") == url for e in extensions
    )
