"""The console's web application (Starlette): routes, middleware, and the server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console.config import ConsoleConfig, split_host_port
from console.oidc import OidcClient
from console.pages import ReviewPages
from console.reviews import ReviewApi
from console.search import ProposalSearch
from console.security import SecurityHeaders
from console.signin import SignInPages
from console.web import HERE, Web

log: Final = logging.getLogger("chartgate.console")


def create_app(
    config: ConsoleConfig,
    *,
    review: ReviewApi | None = None,
    search: ProposalSearch | None = None,
    oidc: OidcClient | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The ASGI app; sessions live in memory for the app's lifetime."""
    web = Web(config, review=review, search=search, oidc=oidc, clock=clock)
    signin, pages = SignInPages(web), ReviewPages(web)
    routes = [
        Route("/", pages.home, methods=["GET"]),
        Route("/healthz", pages.health, methods=["GET"]),
        Route("/login", signin.login, methods=["GET"]),
        Route("/callback", signin.callback, methods=["GET"]),
        Route("/logout", signin.logout, methods=["POST"]),
        Route("/queue", pages.queue, methods=["GET"]),
        Route("/search", pages.search, methods=["GET"]),
        Route("/proposals/{proposal_id}", pages.proposal, methods=["GET"]),
        Route("/proposals/{proposal_id}/approve", pages.approve, methods=["POST"]),
        Route("/proposals/{proposal_id}/reject", pages.reject, methods=["POST"]),
        Route("/proposals/{proposal_id}/amend", pages.amend_form, methods=["GET"]),
        Route("/proposals/{proposal_id}/amend", pages.amend, methods=["POST"]),
        Route("/proposals/{proposal_id}/history", pages.history, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        # Outermost, so even a refused Host gets the headers.
        Middleware(SecurityHeaders),
        # DNS rebinding: a page on another name resolving to this address is not served.
        Middleware(TrustedHostMiddleware, allowed_hosts=list(config.hosts)),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: web.not_found, 500: web.failed},
    )
    app.state.web = web
    return app


def serve(config: ConsoleConfig) -> None:
    """Run with uvicorn until SIGTERM/SIGINT (blocking)."""
    host, port = split_host_port(config.listen)
    log.info(
        "reviewer console on http://%s:%d (public origin %s; issuer %s; Review API %s)",
        host,
        port,
        config.public_origin,
        config.issuer,
        config.review_target,
    )
    # access_log=False: request lines carry patient and proposal ids in paths and queries, and
    # the callback's query carries the authorization code. log_config=None keeps our logging.
    search: ProposalSearch | None = None
    if config.audit_logs:
        from console.search import AuditIndexSearch

        search = AuditIndexSearch(config.audit_logs)
    uvicorn.run(
        create_app(config, search=search),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        server_header=False,
    )
