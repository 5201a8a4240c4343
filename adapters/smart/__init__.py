"""SMART Backend Services client for the adapter (SMART App Launch 2.2 backend-services.html).

`SmartSettings` (the adapter's configuration), `BackendServicesAuth` (an httpx.Auth: pass it as
`httpx.Client(auth=...)`), `TokenEndpointError` (what the EHR's token endpoint said). docs/smart.md.
"""

from adapters.smart.assertion import AssertionSigner
from adapters.smart.auth import AccessToken, BackendServicesAuth, TokenEndpointError
from adapters.smart.keys import SigningKey, SigningKeyError, generate_signing_key, load_signing_key
from adapters.smart.settings import SmartSettings

__all__ = [
    "AccessToken",
    "AssertionSigner",
    "BackendServicesAuth",
    "SigningKey",
    "SigningKeyError",
    "SmartSettings",
    "TokenEndpointError",
    "generate_signing_key",
    "load_signing_key",
]
