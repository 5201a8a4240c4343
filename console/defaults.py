"""The console's defaults, free of heavy imports so the `chartgate` parser can show them cheaply."""

from __future__ import annotations

from typing import Final

DEFAULT_LISTEN: Final = "127.0.0.1:8091"
DEFAULT_CLIENT_ID: Final = "chartgate-console"
DEFAULT_REDIRECT_URI: Final = "http://127.0.0.1:8091/callback"
CALLBACK_PATH: Final = "/callback"
