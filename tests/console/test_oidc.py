"""The console's relying-party checks against the real development issuer, served in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from chartgate.devissuer.app import create_app
from chartgate.devissuer.background import BackgroundServer
from chartgate.devissuer.issuer import DevClient, DevIssuer
from console.config import ConsoleConfig
from console.oidc import OidcClient, SignInError, code_challenge
from console.sessions import LoginAttempt

REDIRECT = "http://127.0.0.1:8091/callback"


@dataclass
class Provider:
    url: str
    oidc: OidcClient


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    server = BackgroundServer()
    clients = (
        DevClient(client_id="chartgate-console", redirect_uris=(REDIRECT,)),
        DevClient(client_id="other-app", redirect_uris=(REDIRECT,)),
    )
    issuer = DevIssuer(tmp_path / "dev-issuer", server.url, clients=clients)
    with server.serving(create_app(issuer)):
        config = ConsoleConfig(issuer=server.url, review_target="127.0.0.1:1")
        oidc = OidcClient(config)
        yield Provider(server.url, oidc)
        oidc.close()


def attempt(nonce: str = "n" * 43) -> LoginAttempt:
    return LoginAttempt(
        state="s" * 43,
        nonce=nonce,
        code_verifier="v" * 64,
        return_to="/queue",
        created_at=time.time(),
    )


def code_for(provider: Provider, login: LoginAttempt, user: str = "alice", **changes: str) -> str:
    """What the issuer's user picker does when `user` is clicked: a one-use code."""
    fields = {
        "response_type": "code",
        "client_id": "chartgate-console",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": login.state,
        "nonce": login.nonce,
        "code_challenge": code_challenge(login.code_verifier),
        "code_challenge_method": "S256",
        "user": user,
        **changes,
    }
    answer = httpx.post(f"{provider.url}/authorize", data=fields)
    assert answer.status_code == 303, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def test_a_completed_sign_in_yields_the_reviewer_and_the_access_token(provider: Provider) -> None:
    login = attempt()
    url = urlsplit(provider.oidc.authorization_url(login))
    query = parse_qs(url.query)
    assert query["code_challenge"] == [code_challenge(login.code_verifier)]
    assert (query["state"], query["nonce"]) == ([login.state], [login.nonce])
    signed_in = provider.oidc.complete(login, code_for(provider, login, "carol"), provider.url)
    reviewer = signed_in.reviewer
    assert (reviewer.issuer, reviewer.subject) == (provider.url, "carol")
    assert reviewer.roles == ("prescriber",)
    assert reviewer.tenants == ("st-mary",)
    assert reviewer.fhir_user == "Practitioner/carol"
    assert signed_in.name == "Carol"
    assert 0 < signed_in.expires_in <= 300
    assert signed_in.access_token.count(".") == 2


def test_a_code_is_good_once_and_only_with_its_verifier(provider: Provider) -> None:
    login = attempt()
    code = code_for(provider, login)
    provider.oidc.complete(login, code, provider.url)
    with pytest.raises(SignInError, match="refused the sign-in"):
        provider.oidc.complete(login, code, provider.url)
    other = code_for(provider, login)
    with pytest.raises(SignInError, match="refused the sign-in"):
        provider.oidc.complete(replace(login, code_verifier="w" * 64), other, provider.url)


def test_an_id_token_for_another_sign_in_or_client_is_refused(provider: Provider) -> None:
    login = attempt()
    # The issuer echoes whatever nonce the request carried: here another browser's.
    replayed = code_for(provider, login, nonce="x" * 43)
    with pytest.raises(SignInError, match="nonce"):
        provider.oidc.complete(login, replayed, provider.url)
    # A code issued to another client cannot be redeemed by this one.
    foreign = code_for(provider, login, client_id="other-app")
    with pytest.raises(SignInError, match="refused the sign-in"):
        provider.oidc.complete(login, foreign, provider.url)


def test_an_authorization_response_from_another_issuer_is_refused(provider: Provider) -> None:
    login = attempt()
    code = code_for(provider, login)
    with pytest.raises(SignInError, match="another issuer"):
        provider.oidc.complete(login, code, "https://mix-up.example")
    # The dev issuer announces RFC 9207 support, so a response without `iss` is refused too.
    with pytest.raises(SignInError, match="RFC 9207"):
        provider.oidc.complete(login, code, None)


def test_a_discovery_document_naming_another_issuer_is_not_used(provider: Provider) -> None:
    # The served issuer has no trailing slash; OIDC Discovery §4.3 compares exactly.
    config = ConsoleConfig(issuer=provider.url + "/", review_target="127.0.0.1:1")
    with pytest.raises(SignInError, match="names another issuer"):
        OidcClient(config).metadata()
