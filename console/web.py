"""The console's plumbing: templates, sessions, the Review API call, form checks, and pages for refusals and errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import grpc
import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from console.config import ConsoleConfig
from console.oidc import OidcClient
from console.present import REJECTION_LABELS, TIER_LABELS
from console.reviews import ReviewApi, ReviewRefused, http_status
from console.search import PendingSearch, ProposalSearch
from console.security import NO_STORE, SECURITY_HEADERS, FormError, cross_origin, read_form
from console.sessions import Session, SessionStore, csrf_matches
from sidecar.review.client import ReviewClient

log: Final = logging.getLogger("chartgate.console")

HERE: Final = Path(__file__).resolve().parent
T = TypeVar("T")
MAX_ID: Final = 256
FAILED_PAGE: Final = (
    '<!doctype html><html lang="en"><meta charset="utf-8"><title>Error · Chartgate review</title>'
    "<h1>Something went wrong</h1><p>The console failed unexpectedly. Look at the proposal "
    'again before you act on it. <a href="/queue">Back to the queue</a>.</p></html>'
)


def templates() -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template (clinical text is hostile HTML until escaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["path"] = lambda value: quote(str(value), safe="")
    env.globals.update(tier_labels=TIER_LABELS, rejection_labels=REJECTION_LABELS)
    return env


class Web:
    """What every handler shares: configuration, the session table, the identity provider client,
    where the Review API is, and the templates."""

    def __init__(
        self,
        config: ConsoleConfig,
        *,
        review: ReviewApi | None = None,
        search: ProposalSearch | None = None,
        oidc: OidcClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sessions = SessionStore(
            idle_seconds=config.session_idle_seconds,
            max_seconds=config.session_max_seconds,
            max_sessions=config.max_sessions,
            clock=clock,
        )
        self.review = review or ReviewApi(config.review_target, config.review_timeout_seconds)
        self.search_source: ProposalSearch = search or PendingSearch()
        self.oidc = oidc or OidcClient(config)
        self.env = templates()
        secure = config.secure_cookies
        # `__Host-`: the browser accepts the cookie only Secure, for this host, with Path=/
        # (RFC 6265bis §4.1.3.2); without Secure (plain-http loopback) the prefix is not allowed.
        prefix = "__Host-" if secure else ""
        self.session_cookie = f"{prefix}chartgate-session"
        self.login_cookie = f"{prefix}chartgate-login"

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.session_cookie, ""))

    def page(
        self,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        body = self.env.get_template(template).render(
            session=session,
            csrf=session.csrf_token if session else "",
            flashes=session.take_flashes() if session else [],
            **context,
        )
        return HTMLResponse(body, status)

    def error(
        self,
        session: Session | None,
        status: int,
        title: str,
        message: str,
        *,
        reason: str = "",
        violations: list[tuple[str, str]] | None = None,
        back: str = "",
    ) -> HTMLResponse:
        return self.page(
            "error.html",
            session,
            status,
            title=title,
            message=message,
            reason=reason,
            violations=violations or [],
            back=back,
        )

    def sign_in_redirect(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", 303)

    async def call(self, session: Session, call: Callable[[ReviewClient], T]) -> T:
        """One Review API call on the reviewer's own token (blocking gRPC, so off the event loop)."""

        def run() -> T:
            with self.review.client(session.access_token) as client:
                return call(client)

        return await run_in_threadpool(run)

    def refused(
        self, request: Request, session: Session, refusal: ReviewRefused, back: str = ""
    ) -> Response:
        """The Review API said no: show what it said (its own words, escaped), never decide anew."""
        if refusal.code == grpc.StatusCode.UNAUTHENTICATED:
            # The access token expired or was revoked: the session is over.
            self.sessions.delete(request.cookies.get(self.session_cookie, ""))
            if request.method == "GET":
                return self.sign_in_redirect(request)
            return self.error(
                None,
                401,
                "Signed out",
                "Your sign-in has ended; nothing was done. Sign in again and repeat it.",
                reason=refusal.reason,
            )
        titles = {403: "Not allowed", 404: "Not found", 503: "Review API unavailable"}
        status = http_status(refusal)
        log.info(
            "review API refused %s (%s)", request.url.path, refusal.reason or refusal.code.name
        )
        return self.error(
            session,
            status,
            titles.get(status, "Refused by the Review API"),
            refusal.message,
            reason=refusal.reason,
            violations=refusal.violations,
            back=back,
        )

    async def checked_post(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """A state-changing request: signed in, same origin, a well-formed form with this
        session's CSRF token. Anything else is refused before the Review API is called."""
        session = self.session(request)
        if session is None:
            return self.error(None, 401, "Signed out", "You are not signed in; nothing was done.")
        if cross_origin(request, self.config.public_origin):
            return self.error(session, 403, "Refused", "The form was not sent from this console.")
        try:
            form = await read_form(request)
        except FormError as exc:
            return self.error(session, 400, "Refused", str(exc))
        if not csrf_matches(session, form.get("csrf_token", "")):
            log.warning("form post without a valid CSRF token refused: %s", request.url.path)
            return self.error(
                session,
                403,
                "Refused",
                "The form's security token is missing or wrong (reload the page and try again); "
                "nothing was done.",
                reason="console.csrf",
            )
        return session, form

    def proposal_id(self, request: Request) -> str:
        return str(request.path_params["proposal_id"])[:MAX_ID]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def not_found(self, request: Request, _: Exception) -> Response:
        return self.error(self.session(request), 404, "Not found", "There is no such page.")

    async def failed(self, _: Request, __: Exception) -> Response:
        """An unexpected failure (logged by the server): a fixed page, no template involved. It is
        answered outside the header middleware, so it carries the headers itself."""
        headers = {k.decode(): v.decode() for k, v in (*SECURITY_HEADERS, *NO_STORE)}
        return HTMLResponse(FAILED_PAGE, 500, headers)
