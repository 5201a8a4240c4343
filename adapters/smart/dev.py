"""A development SMART registration for the demo and tests: the key, the store's clients file, the settings.

SMART client-confidential-asymmetric.html, "Registering a client": the client makes a key pair
and registers the public JWK Set with the authorization server. Here both ends are ours, so one
call writes the private key (0600), the public JWKS, the dev store's `--clients` file and the
adapter's `--smart-config` file. Not for a real EHR: there, registration is the EHR's process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adapters.smart.keys import generate_signing_key, load_signing_key, write_signing_key
from adapters.smart.settings import SigningAlgorithm, SmartSettings


@dataclass(frozen=True, slots=True)
class DevRegistration:
    clients_path: Path  # for `chartgate fhir-store --clients`
    settings_path: Path  # for `chartgate adapter --smart-config`
    settings: SmartSettings


def provision_dev_client(
    directory: Path,
    token_url: str,
    *,
    client_id: str = "chartgate-adapter",
    scope: str = "system/*.crus",
    alg: SigningAlgorithm = "ES384",
) -> DevRegistration:
    """Write (or reuse) the key under `directory` and the two files that name it.

    The clients file leaves the token URL to the store (derived from each request), so it can
    be written before the store's port is known; the settings need `token_url`, the exact `aud`.
    """
    directory = directory.resolve()  # the settings file names the key by an absolute path
    private_path = directory / "smart-client.jwk"
    jwks_path = directory / "smart-client.jwks.json"
    if private_path.exists():
        key = load_signing_key(private_path, alg)
    else:
        key = generate_signing_key(alg)
        write_signing_key(key, private_path, jwks_path)
    clients_path = directory / "smart-clients.json"
    clients = {"clients": [{"client_id": client_id, "jwks": key.public_jwks(), "scopes": [scope]}]}
    clients_path.write_text(json.dumps(clients, indent=2))
    settings = SmartSettings(
        token_url=token_url,
        client_id=client_id,
        private_key_path=private_path,
        alg=alg,
        kid=key.kid,
        scope=scope,
    )
    settings_path = directory / "smart-settings.json"
    settings_path.write_text(settings.model_dump_json(indent=2))
    return DevRegistration(clients_path, settings_path, settings)
