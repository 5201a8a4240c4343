"""Refusals before the wire: a write the vendor does not take, or a create missing what the vendor requires."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.errors import AdapterError, payload_error
from adapters.vendors.profile import INTERACTIONS, Interaction, VendorProfile


def check_write(
    profile: VendorProfile,
    operation: str,
    resource_type: str,
    resource: Mapping[str, Any] | None = None,
) -> None:
    """Raise AdapterError (class payload) naming the vendor unless it takes this write.

    Called by the adapter before the token is spent and before anything is sent, and again by
    the transport for any request that reaches it: nothing the vendor refuses leaves the adapter.
    The reason is `vendor.unsupported`, `vendor.missing_element` or `vendor.fixed_value`.
    """
    interaction = _interaction(operation)
    if not profile.accepts(interaction, resource_type):
        raise unsupported(profile, interaction, resource_type)
    if interaction == "create" and resource is not None:
        check_required_elements(profile, resource_type, resource)


def unsupported(profile: VendorProfile, interaction: str, resource_type: str) -> AdapterError:
    return payload_error(
        "vendor.unsupported",
        f"{profile.name} does not accept {interaction} of {resource_type} "
        f"({profile.title}'s FHIR API; docs/adapters.md)",
    )


def check_required_elements(
    profile: VendorProfile, resource_type: str, resource: Mapping[str, Any]
) -> None:
    """The elements the vendor requires on a create, and their fixed values (top level)."""
    required = profile.requirements.elements.get(resource_type, ())
    missing = [name for name in required if resource.get(name) in (None, "", [], {})]
    if missing:
        raise payload_error(
            "vendor.missing_element",
            f"{profile.name} requires {', '.join(f'{resource_type}.{m}' for m in missing)} "
            f"on create of {resource_type}",
        )
    for element, value in profile.requirements.fixed.get(resource_type, {}).items():
        if resource.get(element) != value:
            raise payload_error(
                "vendor.fixed_value",
                f"{profile.name} accepts create of {resource_type} only with "
                f"{resource_type}.{element} = {value!r}",
            )


def _interaction(operation: str) -> Interaction:
    for interaction in INTERACTIONS:
        if operation == interaction:
            return interaction
    raise payload_error(
        "vendor.unsupported", f"no vendor profile covers the operation {operation!r}"
    )
