"""What a vendor requires a created resource to carry, added by the adapter: identifiers, extensions, profiles."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from adapters.vendors.profile import VendorProfile


def with_requirements(
    profile: VendorProfile, settings: Mapping[str, str], resource: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of `resource` carrying the profile's required identifiers, extensions and meta
    profiles (each added once; an equal one already present is kept). `settings` were checked
    against the profile at start (VendorProfile.check_settings), so every {name} resolves."""
    stamped = copy.deepcopy(dict(resource))
    resource_type = str(stamped.get("resourceType", ""))
    required = profile.requirements
    for rule in required.identifiers:
        if required.applies(rule.resource_types, resource_type):
            identifier = {"system": rule.system, "value": rule.value.format_map(settings)}
            identifiers = stamped.setdefault("identifier", [])
            if identifier not in identifiers:
                identifiers.append(identifier)
    for extension in required.extensions:
        if required.applies(extension.resource_types, resource_type):
            entry: dict[str, Any] = {
                "url": extension.url,
                "valueReference": {"reference": extension.value_reference.format_map(settings)},
            }
            extensions = stamped.setdefault("extension", [])
            # One per URL: a different value the body already names is not silently doubled;
            # the vendor decides about it.
            if not any(isinstance(e, dict) and e.get("url") == extension.url for e in extensions):
                extensions.append(entry)
    profiles = required.profiles.get(resource_type, ())
    if profiles:
        meta = stamped.setdefault("meta", {})
        claimed = meta.setdefault("profile", [])
        for url in profiles:
            if url not in claimed:
                claimed.append(url)
    return stamped
