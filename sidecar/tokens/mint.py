"""Mint RFC 9068 `at+jwt` access tokens scoped to one write (one audience, one scope, one payload)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from joserfc import jwt

from chartgate.keys import SigningKey
from chartgate.write_token import (
    ALGORITHM,
    MAX_LIFETIME_SECONDS,
    TOKEN_TYPE,
    WRITE_DETAIL_TYPE,
)


@dataclass(frozen=True, slots=True)
class WriteGrant:
    """What one token allows: everything the adapter will check against the body it receives."""

    proposal_id: str
    tenant_id: str
    agent_id: str
    on_behalf_of: str
    patient_id: str
    scope: str
    operation: str
    target: str
    payload_sha256: str
    # The approvals that let this write happen (empty for an autonomous one): the token is
    # bound to them and to the payload they approved.
    approvals: tuple[str, ...] = ()
    # A look-up token: it lets the adapter search for the write (to settle an ambiguous outcome)
    # and never authorizes one.
    lookup: bool = False
    # What the adapter records as the write's Provenance (HL7 AI Transparency on FHIR): the
    # agent's model and prompt versions, the evidence it cites, the reviewers who approved.
    # Carried in the signed token, so the adapter writes only what the sidecar decided.
    provenance: WriteProvenance | None = None
    # Which attempt at the write this token is for (1: the first). A resent create may find
    # the first attempt's resource already stored, and its Provenance with it: the adapter then
    # must not write the Provenance again (docs/adapter.md, "AI provenance").
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class WriteProvenance:
    """The agent's account of a write, bound into its token."""

    model_version: str = ""
    prompt_version: str = ""
    evidence_refs: tuple[str, ...] = ()
    # Each approving reviewer as a FHIR reference (their fhirUser) or `issuer#subject`.
    reviewers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "model_version": self.model_version,
            "prompt_version": self.prompt_version,
            "evidence_refs": list(self.evidence_refs),
            "reviewers": list(self.reviewers),
        }


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    jti: str
    expires_at: int


class TokenMinter:
    """Signs one-write tokens with the sidecar's key for one audience (the adapter)."""

    def __init__(self, key: SigningKey, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        if not 0 < ttl_seconds <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"token lifetime must be 1..{MAX_LIFETIME_SECONDS} s")
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}

    def mint(self, grant: WriteGrant, ttl_seconds: int | None = None) -> MintedToken:
        """Mint a token for exactly this grant; policy (or an approval's expiry) may shorten its
        lifetime, never lengthen it."""
        ttl = self._ttl if ttl_seconds is None else max(1, min(ttl_seconds, self._ttl))
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            # RFC 9068: sub is the resource owner or, with no user, the client.
            "sub": grant.on_behalf_of or grant.agent_id,
            "client_id": grant.agent_id,
            "act": {"sub": grant.agent_id},  # RFC 8693 section 4.1: the actor
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
            "scope": grant.scope,
            "patient": grant.patient_id,  # SMART launch context claim
            "tenant": grant.tenant_id,
            "authorization_details": [
                {
                    "type": WRITE_DETAIL_TYPE,
                    "proposal_id": grant.proposal_id,
                    "operation": grant.operation,
                    "target": grant.target,
                    "payload_sha256": grant.payload_sha256,
                    "approvals": list(grant.approvals),
                    "lookup": grant.lookup,
                    "attempt": grant.attempt,
                    **(
                        {"provenance": grant.provenance.to_json()}
                        if grant.provenance is not None
                        else {}
                    ),
                }
            ],
        }
        token = jwt.encode(self._header, claims, self._key.jwk, algorithms=[ALGORITHM])
        return MintedToken(token=token, jti=jti, expires_at=now + ttl)
