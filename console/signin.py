"""Sign-in and sign-out: the OpenID Connect authorization code flow's two ends, and the session cookie."""

from __future__ import annotations

import logging
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.oidc import SignInError
from console.security import local_path
from console.web import Web

log: Final = logging.getLogger("chartgate.console")

LOGIN_COOKIE_SECONDS: Final = 600


class SignInPages:
    """`/login`, `/callback` and `/logout`."""

    def __init__(self, web: Web) -> None:
        self.web = web

    async def login(self, request: Request) -> Response:
        """Start the authorization code flow: a fresh state, nonce and PKCE verifier bound to a cookie."""
        started = self.web.sessions.begin_login(local_path(request.query_params.get("next", "")))
        if started is None:
            return self.web.error(
                None, 503, "Busy", "Too many sign-ins in progress; try again soon."
            )
        cookie, attempt = started
        try:
            url = await run_in_threadpool(self.web.oidc.authorization_url, attempt)
        except SignInError as exc:
            return self.web.error(None, 503, "Sign-in unavailable", str(exc))
        response = RedirectResponse(url, 303)
        # Lax, not Strict: the identity provider's redirect back is a cross-site navigation, on
        # which a Strict cookie would not be sent. It only names the sign-in attempt.
        response.set_cookie(
            self.web.login_cookie,
            cookie,
            max_age=LOGIN_COOKIE_SECONDS,
            path="/",
            secure=self.web.config.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        """The identity provider's answer: match it to this browser's attempt, redeem the code,
        verify the ID token, open a session."""
        params = request.query_params
        if len(request.url.query) > 8192 or any(
            len(params.getlist(k)) > 1 for k in ("code", "state", "iss", "error")
        ):
            return self.web.error(None, 400, "Sign-in failed", "The sign-in response is malformed.")
        attempt = self.web.sessions.finish_login(
            request.cookies.get(self.web.login_cookie, ""), params.get("state", "")
        )
        if attempt is None:
            # No attempt from this browser with this state: a forged or replayed response, or an
            # attempt older than ten minutes.
            return self.web.error(
                None,
                400,
                "Sign-in failed",
                "This sign-in response does not match a sign-in started in this browser. "
                "Sign in again.",
                back="/login",
            )
        if "error" in params:
            return self.web.error(
                None,
                400,
                "Sign-in failed",
                "The identity provider did not sign you in "
                f"({params.get('error', '')[:64]}). Sign in again.",
                back="/login",
            )
        try:
            signed_in = await run_in_threadpool(
                self.web.oidc.complete, attempt, params.get("code", ""), params.get("iss")
            )
        except SignInError as exc:
            return self.web.error(None, 400, "Sign-in failed", str(exc), back="/login")
        created = self.web.sessions.create(
            signed_in.reviewer,
            signed_in.name,
            signed_in.access_token,
            self.web.clock() + signed_in.expires_in,
        )
        if created is None:
            return self.web.error(None, 503, "Busy", "Too many sessions are open; try again soon.")
        cookie, session = created
        log.info("signed in: %s %s", signed_in.reviewer.issuer, signed_in.reviewer.subject)
        # A page, not a redirect: the session cookie is SameSite=Strict, and a redirect chain
        # that began at the identity provider is cross-site, so the browser would not send the
        # cookie to the page it lands on. The page's own navigation (meta refresh) is same-site.
        response = self.web.page("signed_in.html", session, next=attempt.return_to)
        response.set_cookie(
            self.web.session_cookie,
            cookie,
            path="/",
            secure=self.web.config.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(
            self.web.login_cookie, path="/", secure=self.web.config.secure_cookies, httponly=True
        )
        return response

    async def logout(self, request: Request) -> Response:
        checked = await self.web.checked_post(request)
        if isinstance(checked, Response):
            return checked
        self.web.sessions.delete(request.cookies.get(self.web.session_cookie, ""))
        response = self.web.page("signed_out.html", None)
        response.delete_cookie(
            self.web.session_cookie,
            path="/",
            secure=self.web.config.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        return response
