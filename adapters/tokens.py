"""Verify a one-write RFC 9068 token against the body it came with (RFC 9068 section 4 validation)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from adapters.errors import payload_error, token_error
from chartgate.write_token import (
    ALGORITHM,
    MAX_LIFETIME_SECONDS,
    TOKEN_TYPE,
    WRITE_DETAIL_TYPE,
)

_OPERATION_SCOPE = {"create": "c", "update": "u"}
# A look-up token (authorization_details `lookup: true`) reads and searches the write's target
# to settle an ambiguous outcome; it never authorizes a write.
LOOKUP_SCOPE = "rs"


@dataclass(frozen=True, slots=True)
class VerifiedWrite:
    """A write the token covers, with the body parsed once."""

    jti: str
    expires_at: int
    proposal_id: str
    tenant_id: str
    patient_id: str
    operation: str
    resource_type: str
    resource_id: str | None
    resource: dict[str, Any]
    lookup: bool = False
    # Who wrote it and why (for the write's security labels and Provenance): the agent (token
    # `client_id`), the person it acted for (`sub` when it is not the agent), the approvals,
    # and the agent's account (model, prompt, evidence, reviewers) the sidecar bound in.
    agent_id: str = ""
    on_behalf_of: str = ""
    approvals: tuple[str, ...] = ()
    provenance: WriteAccount | None = None
    # The sidecar's attempt number for this write (1: the first; a token without one is a first).
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class WriteAccount:
    """The provenance the token carries (bounded: it came through the sidecar's validation)."""

    model_version: str
    prompt_version: str
    evidence_refs: tuple[str, ...]
    reviewers: tuple[str, ...]


_MAX_LIST = 50
_MAX_TEXT = 512


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > _MAX_LIST:
        raise token_error("token.claims", f"provenance {name} must be a list of strings")
    if not all(isinstance(v, str) and len(v) <= _MAX_TEXT for v in value):
        raise token_error("token.claims", f"provenance {name} must be a list of strings")
    return tuple(value)


def _account(detail: dict[str, Any]) -> WriteAccount | None:
    raw = detail.get("provenance")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise token_error("token.claims", "authorization_details provenance must be an object")
    texts = [raw.get("model_version", ""), raw.get("prompt_version", "")]
    if not all(isinstance(t, str) and len(t) <= _MAX_TEXT for t in texts):
        raise token_error("token.claims", "provenance versions must be strings")
    return WriteAccount(
        model_version=str(texts[0]),
        prompt_version=str(texts[1]),
        evidence_refs=_strings(raw.get("evidence_refs", []), "evidence_refs"),
        reviewers=_strings(raw.get("reviewers", []), "reviewers"),
    )


class TokenVerifier:
    """Checks signature, type, issuer, audience, lifetime and the write the token names."""

    def __init__(
        self, keys: KeySet, *, issuer: str, audience: str, leeway_seconds: int = 5
    ) -> None:
        self._keys = keys
        self._registry = JWTClaimsRegistry(
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
            sub={"essential": True},
            client_id={"essential": True},
            scope={"essential": True},
        )

    def verify(self, token: str, body: bytes) -> VerifiedWrite:
        """Return the verified write, or raise AdapterError saying what was wrong."""
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            raise token_error(
                "token.invalid", f"token signature or format invalid: {exc}"
            ) from None
        if decoded.header.get("typ") != TOKEN_TYPE:
            raise token_error("token.wrong_type", f"token typ must be {TOKEN_TYPE}")
        claims = decoded.claims
        try:
            self._registry.validate(claims)
        except JoseError as exc:
            reason = (
                "token.expired" if "exp" in str(exc) or "expired" in str(exc) else "token.claims"
            )
            if "aud" in str(exc):
                reason = "token.wrong_audience"
            raise token_error(reason, f"token rejected: {exc}") from None
        if int(claims["exp"]) - int(claims["iat"]) > MAX_LIFETIME_SECONDS:
            raise token_error("token.lifetime", f"token lifetime exceeds {MAX_LIFETIME_SECONDS} s")
        detail = _write_detail(claims)
        if hashlib.sha256(body).hexdigest() != detail["payload_sha256"]:
            raise payload_error(
                "payload.hash_mismatch", "the body is not the payload this token was minted for"
            )
        try:
            resource = json.loads(body)
        except ValueError:
            raise payload_error("payload.not_json", "the body is not JSON") from None
        if not isinstance(resource, dict):
            raise payload_error("payload.not_resource", "the body is not a FHIR resource")
        verified = _bind(claims, detail, resource)
        raw = claims["authorization_details"][0]
        agent = str(claims.get("client_id", ""))
        subject = str(claims.get("sub", ""))
        return replace(
            verified,
            agent_id=agent,
            on_behalf_of=subject if subject != agent else "",
            approvals=_strings(raw.get("approvals", []), "approvals"),
            provenance=_account(raw),
            attempt=_attempt(raw),
        )


def _attempt(detail: dict[str, Any]) -> int:
    attempt = detail.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= 1_000_000:
        raise token_error(
            "token.claims", "authorization_details attempt must be a positive integer"
        )
    return attempt


def _write_detail(claims: dict[str, Any]) -> dict[str, str]:
    details = claims.get("authorization_details")
    if not isinstance(details, list) or len(details) != 1:
        raise token_error(
            "token.claims", "token must carry exactly one authorization_details entry"
        )
    detail = details[0]
    keys = ("proposal_id", "operation", "target", "payload_sha256")
    if (
        not isinstance(detail, dict)
        or detail.get("type") != WRITE_DETAIL_TYPE
        or not all(isinstance(detail.get(k), str) for k in keys)
    ):
        raise token_error("token.claims", f"authorization_details must be one {WRITE_DETAIL_TYPE}")
    if not isinstance(claims.get("patient"), str) or not isinstance(claims.get("tenant"), str):
        raise token_error("token.claims", "token must name a patient and a tenant")
    lookup = detail.get("lookup", False)
    if not isinstance(lookup, bool):
        raise token_error("token.claims", "authorization_details lookup must be a boolean")
    bound = {k: detail[k] for k in keys}
    bound["lookup"] = "true" if lookup else ""
    return bound


def _bind(
    claims: dict[str, Any], detail: dict[str, str], resource: dict[str, Any]
) -> VerifiedWrite:
    """The body must be the operation, target and patient the token names, under its one scope."""
    operation = detail["operation"]
    if operation not in _OPERATION_SCOPE:
        raise token_error("token.claims", f"unknown operation {operation!r}")
    resource_type = resource.get("resourceType")
    resource_id = resource.get("id") if operation == "update" else None
    target = resource_type if operation == "create" else f"{resource_type}/{resource_id}"
    if target != detail["target"]:
        raise payload_error("payload.wrong_target", "the body's target differs from the token's")
    letters = LOOKUP_SCOPE if detail["lookup"] else _OPERATION_SCOPE[operation]
    expected_scope = f"patient/{resource_type}.{letters}"
    if claims["scope"] != expected_scope:
        raise token_error("token.scope", f"token scope does not grant {expected_scope}")
    return VerifiedWrite(
        jti=str(claims["jti"]),
        expires_at=int(claims["exp"]),
        proposal_id=detail["proposal_id"],
        tenant_id=claims["tenant"],
        patient_id=claims["patient"],
        operation=operation,
        resource_type=str(resource_type),
        resource_id=resource_id,
        resource=resource,
        lookup=bool(detail["lookup"]),
    )
