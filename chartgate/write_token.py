"""The one-write token format (RFC 9068 JWT access token) shared by the minting sidecar and the adapter.

A token authorizes exactly one FHIR write. Beyond RFC 9068's claims (iss, exp, aud, sub,
client_id, iat, jti, scope) it names the write in an RFC 9396 `authorization_details` entry of
type WRITE_DETAIL_TYPE: the operation, the target, the proposal and the SHA-256 of the RFC 8785
canonical payload, so a body the token was not minted for is refused.
"""

from __future__ import annotations

import warnings
from typing import Final

TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - RFC 9068 section 2.1 media type, not a secret
ALGORITHM: Final = "EdDSA"  # RFC 8037; the JWKS pins the curve to Ed25519
WRITE_DETAIL_TYPE: Final = "chartgate_fhir_write"
MAX_LIFETIME_SECONDS: Final = 60
# The identifier system the adapter stamps on every resource it creates, with the proposal id
# as value, so a write can be found again (conditional create, ambiguous-outcome lookup).
PROPOSAL_IDENTIFIER_SYSTEM: Final = "urn:chartgate:proposal"

# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519". We keep "EdDSA"
# because verifiers in the field accept it and not yet the new name; the key type is fixed by
# the JWKS, so the polymorphism RFC 9864 warns about cannot be steered by a token.
warnings.filterwarnings("ignore", message="EdDSA is deprecated via RFC 9864")
