"""Vendor error shapes that mean something other than their HTTP status says, mapped to failure classes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Final

import httpx

from adapters.errors import AdapterError, FailureClass
from adapters.fhir_client import diagnostics, retry_after_seconds
from adapters.vendors.profile import ErrorRule, VendorProfile

_MAX_MESSAGE: Final = 600
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]+")
_TAGS: Final = re.compile(r"<[^>]{0,200}>")


def vendor_failure(
    profile: VendorProfile,
    response: httpx.Response,
    *,
    clock: Callable[[], float] = time.time,
) -> AdapterError | None:
    """The failure a vendor rule names for this answer, or None (then adapters/fhir_client.py
    classifies it by its status). Reads the body only of an answer some rule could match."""
    rules = [rule for rule in profile.errors.rules if rule.status == response.status_code]
    if not rules:
        return None
    response.read()
    text = response.text.lower()
    for rule in rules:
        if rule.contains.lower() in text:
            return AdapterError(
                FailureClass(rule.failure),
                rule.reason,
                f"{profile.name}: HTTP {response.status_code}: {describe(response)}"[:_MAX_MESSAGE],
                http_status=response.status_code,
                retry_after=_retry_after(rule, response, clock),
            )
    return None


def describe(response: httpx.Response) -> str:
    """What the answer said, for the agent: an OperationOutcome's `code: diagnostics`, else the
    body's printable text (tags dropped), bounded. Returned to the sidecar, never logged."""
    said = diagnostics(response)
    if said:
        return said[:_MAX_MESSAGE]
    plain = _UNPRINTABLE.sub(" ", _TAGS.sub(" ", response.text))
    return " ".join(plain.split())[:200]


def _retry_after(
    rule: ErrorRule, response: httpx.Response, clock: Callable[[], float]
) -> float | None:
    said = retry_after_seconds(response.headers.get("Retry-After"))
    if said is not None or rule.retry_after == "header":
        return said
    # A counter that resets at the top of every minute: wait for the next one.
    return 60.0 - (clock() % 60.0)
