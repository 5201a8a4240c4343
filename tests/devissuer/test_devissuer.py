"""The development OIDC issuer over real HTTP: discovery, JWKS, the code flow with PKCE S256, its keys and CLI."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt

from chartgate.devissuer.app import create_app
from chartgate.devissuer.background import BackgroundServer
from chartgate.devissuer.cli import main
from chartgate.devissuer.codes import s256
from chartgate.devissuer.issuer import DevClient, DevIssuer
from sidecar.review.auth import IssuerConfig, ReviewerAuthenticator, ReviewerAuthError

REPO = Path(__file__).resolve().parents[2]
CLIENT = "chartgate-console"
REDIRECT = "http://127.0.0.1:8091/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    issuer: DevIssuer
    url: str
    http: httpx.Client
    clock: Clock


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    clock = Clock()
    server = BackgroundServer()
    clients = (
        DevClient(client_id=CLIENT, redirect_uris=(REDIRECT,)),
        DevClient(client_id="other-app", redirect_uris=("http://127.0.0.1:9999/cb",)),
    )
    issuer = DevIssuer(tmp_path / "dev-issuer", server.url, clients=clients, clock=clock)
    with (
        server.serving(create_app(issuer)),
        httpx.Client(base_url=server.url, follow_redirects=False) as http,
    ):
        yield Running(issuer, server.url, http, clock)


def authorize_params(**changes: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser",
        "state": "st-123",
        "nonce": "n-456",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **changes,
    }
    return {k: v for k, v in params.items() if v is not None}


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?") or location.startswith("http://127.0.0.1:9999/cb?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def sign_in(running: Running, user: str = "alice", **changes: str | None) -> str:
    """Pick `user` on the form; the code the issuer redirects back with."""
    page = running.http.get("/authorize", params=authorize_params(**changes))
    assert page.status_code == 200, page.text
    answer = redirect_query(
        running.http.post("/authorize", data={**authorize_params(**changes), "user": user})
    )
    assert answer["state"] == "st-123"
    assert answer["iss"] == running.url  # RFC 9207
    return answer["code"]


def exchange(running: Running, code: str, **changes: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT,
        "code_verifier": VERIFIER,
        **changes,
    }
    return running.http.post("/token", data=form)


def token_error(response: httpx.Response) -> str:
    assert response.status_code in (400, 401), response.text
    assert response.headers["cache-control"] == "no-store"
    error: str = response.json()["error"]
    return error


def authenticator(running: Running, audience: str) -> ReviewerAuthenticator:
    config = IssuerConfig(issuer=running.url, audience=audience, jwks_url=f"{running.url}/jwks")
    return ReviewerAuthenticator([config], clock=running.clock)


# --- discovery and keys ---------------------------------------------------------------------------


def test_rfc7636_appendix_b_vector() -> None:
    assert s256(VERIFIER) == CHALLENGE


def test_discovery_document(running: Running) -> None:
    response = running.http.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.json()
    # OIDC Discovery §4.3: issuer is identical to the URL the document was fetched under.
    assert doc["issuer"] == running.url
    assert doc["authorization_endpoint"] == f"{running.url}/authorize"
    assert doc["token_endpoint"] == f"{running.url}/token"
    assert doc["jwks_uri"] == f"{running.url}/jwks"
    assert doc["response_types_supported"] == ["code"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    jwks = running.http.get(doc["jwks_uri"]).json()
    assert [k["kid"] for k in jwks["keys"]] == [running.issuer.keys.kid]
    assert all("d" not in k for k in jwks["keys"])


def test_key_is_created_once_with_a_private_file_mode(tmp_path: Path) -> None:
    first = DevIssuer(tmp_path / "d")
    assert stat.S_IMODE(os.stat(first.keys.private_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
    assert DevIssuer(tmp_path / "d").keys.kid == first.keys.kid  # reused, not regenerated
    public = json.loads(first.jwks_path.read_text())
    assert [k["kid"] for k in public["keys"]] == [first.keys.kid]
    assert "d" not in public["keys"][0]


def test_rotation_publishes_the_new_key_and_keeps_the_old(tmp_path: Path) -> None:
    issuer = DevIssuer(tmp_path / "d")
    before = issuer.mint("alice", roles=[], tenants=["st-mary"], fhir_user="Practitioner/a")
    old = issuer.keys.kid
    new = issuer.keys.rotate()
    assert new != old
    assert stat.S_IMODE(os.stat(issuer.keys.private_path).st_mode) == 0o600
    keys = issuer.keys.public_keyset()
    assert [k.kid for k in keys.keys] == [new, old]
    jwt.decode(before, keys)  # a token from before the rotation still verifies
    after = issuer.mint("alice", roles=[], tenants=["st-mary"], fhir_user="Practitioner/a")
    assert jwt.decode(after, keys).header["kid"] == new


def test_minted_tokens_verify_with_the_reviewer_authenticator(tmp_path: Path) -> None:
    issuer = DevIssuer(tmp_path / "d")
    config = IssuerConfig(
        issuer=issuer.issuer, audience="chartgate-review", jwks_file=issuer.jwks_path
    )
    token = issuer.mint(
        "carol", roles=["prescriber"], tenants=["st-mary"], fhir_user="Practitioner/carol"
    )
    reviewer = ReviewerAuthenticator([config]).authenticate(f"Bearer {token}")
    assert (reviewer.subject, reviewer.roles, reviewer.tenants, reviewer.fhir_user) == (
        "carol",
        ("prescriber",),
        ("st-mary",),
        "Practitioner/carol",
    )
    claims = jwt.decode(token, issuer.keys.public_keyset()).claims
    assert set(claims) >= {"iss", "sub", "aud", "exp", "iat", "nbf", "jti"}
    assert claims["exp"] - claims["iat"] == 300
    with pytest.raises(ValueError, match="lifetime"):
        issuer.mint("x", roles=[], tenants=[], fhir_user="Practitioner/x", lifetime_seconds=0)


# --- the authorization-code flow ------------------------------------------------------------------


def test_pkce_flow_end_to_end(running: Running) -> None:
    page = running.http.get("/authorize", params=authorize_params())
    assert page.status_code == 200
    assert "Development target, not a product" in page.text
    for user in ("alice", "bob", "carol", "dave", "mallory"):
        assert f'value="{user}"' in page.text
    assert page.headers["x-frame-options"] == "DENY"

    code = sign_in(running, "alice")
    response = exchange(running, code)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300

    # The ID token: for the client (OIDC Core §2), nonce echoed.
    id_reviewer = authenticator(running, CLIENT).authenticate(f"Bearer {body['id_token']}")
    assert (id_reviewer.subject, id_reviewer.roles, id_reviewer.tenants) == (
        "alice",
        ("clinician",),
        ("st-mary",),
    )
    assert id_reviewer.fhir_user == "Practitioner/alice"
    id_claims = jwt.decode(body["id_token"], running.issuer.keys.public_keyset())
    assert id_claims.claims["nonce"] == "n-456"
    assert id_claims.claims["azp"] == CLIENT

    # The access token: for the Review API (RFC 9068), the one the console sends.
    reviewer = authenticator(running, "chartgate-review").authenticate(
        f"Bearer {body['access_token']}"
    )
    assert reviewer.subject == "alice"
    access = jwt.decode(body["access_token"], running.issuer.keys.public_keyset())
    assert access.header["typ"] == "at+jwt"
    assert access.claims["client_id"] == CLIENT
    with pytest.raises(ReviewerAuthError) as caught:
        authenticator(running, "chartgate-review").authenticate(f"Bearer {body['id_token']}")
    assert caught.value.reason == "reviewer.audience_mismatch"


def test_user_without_roles_signs_in_with_none(running: Running) -> None:
    body = exchange(running, sign_in(running, "mallory")).json()
    reviewer = authenticator(running, CLIENT).authenticate(f"Bearer {body['id_token']}")
    assert (reviewer.subject, reviewer.roles) == ("mallory", ())


def test_wrong_verifier_is_refused_and_spends_the_code(running: Running) -> None:
    code = sign_in(running)
    wrong = "x" * 43
    assert token_error(exchange(running, code, code_verifier=wrong)) == "invalid_grant"
    # The code is gone: the right verifier cannot be tried after a wrong one.
    assert token_error(exchange(running, code)) == "invalid_grant"


@pytest.mark.parametrize("verifier", ["", "short", VERIFIER + "!", "a" * 129])
def test_malformed_verifier_is_refused(running: Running, verifier: str) -> None:
    code = sign_in(running)
    assert token_error(exchange(running, code, code_verifier=verifier)) == "invalid_grant"


def test_code_reuse_is_refused(running: Running) -> None:
    code = sign_in(running)
    assert exchange(running, code).status_code == 200
    assert token_error(exchange(running, code)) == "invalid_grant"


def test_expired_code_is_refused(running: Running) -> None:
    fresh = sign_in(running)
    stale = sign_in(running)
    running.clock.now += 59
    assert exchange(running, fresh).status_code == 200
    running.clock.now += 2  # 61 s after issue
    assert token_error(exchange(running, stale)) == "invalid_grant"


def test_code_is_bound_to_redirect_uri_and_client(running: Running) -> None:
    code = sign_in(running)
    other = "http://127.0.0.1:8091/callback/other"
    assert token_error(exchange(running, code, redirect_uri=other)) == "invalid_grant"
    code = sign_in(running)
    assert token_error(exchange(running, code, client_id="other-app")) == "invalid_grant"
    assert token_error(exchange(running, "no-such-code")) == "invalid_grant"
    assert token_error(exchange(running, sign_in(running), client_id="nobody")) == "invalid_client"
    wrong_grant = exchange(running, sign_in(running), grant_type="password")
    assert token_error(wrong_grant) == "unsupported_grant_type"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:6666/callback",
        REDIRECT + "/../evil",
        REDIRECT + "?next=http://evil.example",
        REDIRECT.upper(),
        "",
    ],
)
def test_unregistered_redirect_uri_is_refused_without_redirecting(
    running: Running, redirect_uri: str
) -> None:
    for response in (
        running.http.get("/authorize", params=authorize_params(redirect_uri=redirect_uri)),
        running.http.post(
            "/authorize", data={**authorize_params(redirect_uri=redirect_uri), "user": "alice"}
        ),
    ):
        assert response.status_code == 400
        assert "location" not in response.headers
        assert "redirect_uri" in response.text


def test_unknown_client_is_refused_without_redirecting(running: Running) -> None:
    response = running.http.get("/authorize", params=authorize_params(client_id="rogue"))
    assert response.status_code == 400
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge_method": "plain", "code_challenge": VERIFIER}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),  # absent means plain
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "profile"}, "invalid_scope"),
    ],
)
def test_bad_authorization_requests_are_returned_to_the_client(
    running: Running, changes: dict[str, str | None], error: str
) -> None:
    for response in (
        running.http.get("/authorize", params=authorize_params(**changes)),
        running.http.post("/authorize", data={**authorize_params(**changes), "user": "alice"}),
    ):
        answer = redirect_query(response)
        assert answer["error"] == error
        assert answer["state"] == "st-123"
        assert "code" not in answer


def test_unknown_user_gets_no_code(running: Running) -> None:
    response = running.http.post("/authorize", data={**authorize_params(), "user": "root"})
    assert response.status_code == 400
    assert "location" not in response.headers


def test_repeated_parameters_are_refused(running: Running) -> None:
    query = "&".join(f"{k}={v}" for k, v in authorize_params().items())
    response = running.http.get(f"/authorize?{query}&client_id=other-app")
    assert response.status_code == 400


def test_request_values_are_escaped_in_the_page(running: Running) -> None:
    page = running.http.get("/authorize", params=authorize_params(state='"><script>x()</script>'))
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_oversized_requests_are_refused(running: Running) -> None:
    page = running.http.get("/authorize", params=authorize_params(state="s" * 5000))
    assert page.status_code == 400
    form = running.http.post("/token", data={"code": "c" * 10_000})
    assert token_error(form) == "invalid_request"
    not_a_form = running.http.post("/token", json={"grant_type": "authorization_code"})
    assert token_error(not_a_form) == "invalid_request"


# --- the command line -----------------------------------------------------------------------------


def test_token_command_prints_a_token_for_a_dev_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--sub", "alice", "--workdir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    issuer = DevIssuer(tmp_path / "dev-issuer")
    config = IssuerConfig(
        issuer="http://127.0.0.1:8090", audience="chartgate-review", jwks_file=issuer.jwks_path
    )
    reviewer = ReviewerAuthenticator([config]).authenticate(f"Bearer {token}")
    assert (reviewer.subject, reviewer.roles, reviewer.tenants, reviewer.fhir_user) == (
        "alice",
        ("clinician",),
        ("st-mary",),
        "Practitioner/alice",
    )

    argv = ["token", "--sub", "erin", "--roles", "clinician,prescriber", "--roles", "registrar"]
    argv += ["--tenant", "st-jude", "--fhir-user", "Practitioner/e1", "--lifetime", "60"]
    assert main([*argv, "--audience", "other", "--workdir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    other = config.model_copy(update={"audience": "other"})
    reviewer = ReviewerAuthenticator([other]).authenticate(f"Bearer {token}")
    assert reviewer.roles == ("clinician", "prescriber", "registrar")
    assert (reviewer.tenants, reviewer.fhir_user) == (("st-jude",), "Practitioner/e1")
    assert reviewer.expires_at - int(time.time()) <= 60


def test_jwks_command_prints_the_public_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jwks", "--workdir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == DevIssuer(tmp_path / "dev-issuer").keys.jwks()


def test_serve_refuses_a_non_loopback_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--listen", "0.0.0.0:8090", "--workdir", str(tmp_path)]) == 2
    assert "--allow-non-loopback" in capsys.readouterr().err


def test_users_and_clients_files(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "sub": "zed",
                        "name": "Zed",
                        "roles": ["auditor"],
                        "tenants": ["st-jude"],
                        "fhir_user": "Practitioner/zed",
                    }
                ]
            }
        )
    )
    from chartgate.devissuer.issuer import load_clients, load_users

    (zed,) = load_users(users)
    assert (zed.sub, zed.roles, zed.tenants) == ("zed", ("auditor",), ("st-jude",))
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": [{"client_id": "c", "redirect_uris": []}]}))
    with pytest.raises(ValueError, match="redirect_uris"):
        load_clients(clients)


def test_serve_command_runs_the_issuer_as_a_process(tmp_path: Path) -> None:
    server = BackgroundServer()  # reserve a free port, then release it for the child
    port = server.port
    server.stop()
    log = (tmp_path / "issuer.log").open("wb")
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "chartgate.devissuer", "serve"),
            *("--listen", f"127.0.0.1:{port}", "--workdir", str(tmp_path)),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        doc: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline and not doc:
                assert child.poll() is None, (tmp_path / "issuer.log").read_text()
                try:
                    doc = http.get(f"{url}/.well-known/openid-configuration").json()
                except httpx.HTTPError:
                    time.sleep(0.05)
            assert doc["issuer"] == url
            # A token minted by the CLI with this workdir verifies against the served JWKS.
            minted = DevIssuer(tmp_path / "dev-issuer", url).mint(
                "bob", roles=["clinician"], tenants=["st-mary"], fhir_user="Practitioner/bob"
            )
            config = IssuerConfig(issuer=url, audience="chartgate-review", jwks_url=f"{url}/jwks")
            auth = ReviewerAuthenticator([config], http=http)
            assert auth.authenticate(f"Bearer {minted}").subject == "bob"
    finally:
        child.send_signal(signal.SIGTERM)
        # A clean shutdown: uvicorn stops serving, then re-raises the signal (hence -SIGTERM).
        assert child.wait(10) in (0, -signal.SIGTERM)
        log.close()
    assert "development target, not a product" in (tmp_path / "issuer.log").read_text()
