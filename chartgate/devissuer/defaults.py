"""The dev issuer's defaults, kept free of heavy imports so the `chartgate` parser can show them cheaply."""

from __future__ import annotations

from typing import Final

DEFAULT_ISSUER: Final = "http://127.0.0.1:8090"
DEFAULT_LISTEN: Final = "127.0.0.1:8090"
DEFAULT_AUDIENCE: Final = "chartgate-review"
DEFAULT_TENANT: Final = "st-mary"
DEFAULT_CLIENT_ID: Final = "chartgate-console"
DEFAULT_REDIRECT_URIS: Final = ("http://127.0.0.1:8091/callback", "http://localhost:8091/callback")
MAX_LIFETIME_SECONDS: Final = 86_400
