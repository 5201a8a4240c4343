"""Browser-facing defences: headers on every answer, bounded form parsing, same-origin posts, safe redirects."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script or style anywhere (so an injected <script> or style attribute does nothing),
# nothing from another origin (air-gapped hospitals; no CDN), no framing (clickjacking), forms
# post only here, and no <base> to re-point relative URLs.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Page URLs carry proposal and patient ids: never send them to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
# Pages carry PHI: no cache (browser, proxy) may keep them. Static files carry none.
NO_STORE: Final = (b"cache-control", b"no-store"), (b"pragma", b"no-cache")
STATIC_CACHE: Final = ((b"cache-control", b"public, max-age=300"),)
MAX_FORM_BYTES: Final = 256 * 1024
MAX_FORM_FIELDS: Final = 16


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cache = STATIC_CACHE if str(scope.get("path", "")).startswith("/static/") else NO_STORE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in (*SECURITY_HEADERS, *cache) if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class FormError(Exception):
    """The request body is not a form this console accepts."""


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, bounded, each field at most once."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != (
        "application/x-www-form-urlencoded"
    ):
        raise FormError("the form must be sent as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(f"the form is larger than {MAX_FORM_BYTES // 1024} KB")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:
        raise FormError("the form is not valid") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise FormError(f"the form repeats the field {name[:40]!r}")
        form[name] = value
    return form


def cross_origin(request: Request, origin: str) -> bool:
    """Whether a state-changing request comes from a page of another origin.

    Defence in depth beside the CSRF token and the SameSite=Strict cookie: browsers send
    `Sec-Fetch-Site` on every request, and `Origin` on every POST. Under this console's
    `Referrer-Policy: no-referrer` a browser sends `Origin: null` even for its own forms (Fetch,
    "append a request Origin header"), so `null` is no evidence either way and
    `Sec-Fetch-Site` decides. A request from a tool (no browser) sends neither and still needs
    the session cookie and the CSRF token.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    sent = request.headers.get("origin")
    return sent is not None and sent not in (origin, "null")


def local_path(value: str, default: str = "/queue") -> str:
    """`value` if it is a path on this console, else `default` (no open redirect after sign-in)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    return value[:1024]
