"""The adapter's SMART Backend Services client against the real dev store over HTTP, and its parts alone."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from pydantic import ValidationError

from adapters.smart import (
    AssertionSigner,
    BackendServicesAuth,
    SigningKey,
    SigningKeyError,
    SmartSettings,
    TokenEndpointError,
    generate_signing_key,
    load_signing_key,
)
from adapters.smart.dev import provision_dev_client
from adapters.smart.keys import write_signing_key
from chartgate.stack import free_port
from tests.devstore.conftest import FHIR_JSON, StoreProcess

CLIENT_ID = "chartgate-adapter"
SCOPE = "system/Observation.crus"
SYSTEM = "urn:chartgate:test:smart"


@dataclass
class Ehr:
    """The dev store with SMART on, and this adapter's registered keys."""

    store: StoreProcess
    rsa_jwk: Path
    ec_pem: Path
    rsa: SigningKey
    ec: SigningKey

    @property
    def token_url(self) -> str:
        return f"{self.store.base}/auth/token"

    def settings(self, **changes: Any) -> SmartSettings:
        values: dict[str, Any] = {
            "token_url": self.token_url,
            "client_id": CLIENT_ID,
            "private_key_path": self.rsa_jwk,
            "alg": "RS384",
            "scope": SCOPE,
            **changes,
        }
        return SmartSettings(**values)

    def auth(self, **changes: Any) -> BackendServicesAuth:
        return BackendServicesAuth.from_settings(self.settings(**changes))

    def fhir(self, auth: httpx.Auth) -> httpx.Client:
        """How the adapter's FhirClient is meant to carry it: `httpx.Client(auth=...)`."""
        return httpx.Client(
            base_url=self.store.base + "/", auth=auth, headers={"Accept": FHIR_JSON}, timeout=10.0
        )

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.store.origin}{path}", timeout=10.0, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ehr]:
    tmp = tmp_path_factory.mktemp("ehr")
    rsa = generate_signing_key("RS384")
    write_signing_key(rsa, tmp / "adapter-rsa.jwk", tmp / "adapter-rsa.jwks.json")
    ec = generate_signing_key("ES384")
    (tmp / "adapter-ec.pem").write_bytes(ec.key.as_pem(private=True))
    jwks = {"keys": [*rsa.public_jwks()["keys"], *ec.public_jwks()["keys"]]}
    (tmp / "adapter.jwks.json").write_text(json.dumps(jwks))
    clients = {
        "clients": [
            {
                "client_id": CLIENT_ID,
                "jwks_path": "adapter.jwks.json",
                "scopes": ["system/Observation.cruds"],
            }
        ]
    }
    (tmp / "clients.json").write_text(json.dumps(clients))
    store = StoreProcess(
        db=tmp / "fhir.sqlite3",
        log_path=tmp / "store.log",
        args=["--clients", str(tmp / "clients.json"), "--allow-fault-control"],
    )
    store.start()
    yield Ehr(store, tmp / "adapter-rsa.jwk", tmp / "adapter-ec.pem", rsa, ec)
    store.stop()


def observation(tag: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": SYSTEM, "value": tag}],
    }


def create(fhir: httpx.Client, tag: str) -> httpx.Response:
    return fhir.post(
        "Observation",
        json=observation(tag),
        headers={
            "Content-Type": FHIR_JSON,
            "If-None-Exist": f"identifier={SYSTEM}|{tag}",
        },
    )


# -- against the real store ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_an_authorized_write_succeeds_end_to_end(ehr: Ehr, alg: str) -> None:
    key_path = ehr.rsa_jwk if alg == "RS384" else ehr.ec_pem
    kid = None if alg == "RS384" else ehr.ec.kid  # a PEM has no kid: the registered one is given
    auth = ehr.auth(alg=alg, private_key_path=key_path, kid=kid)
    with ehr.fhir(auth) as fhir:
        tag = uuid.uuid4().hex
        created = create(fhir, tag)
        assert created.status_code == 201, created.text
        assert create(fhir, tag).status_code == 200  # the conditional create found it
        read = fhir.get(f"Observation/{created.json()['id']}")
        assert read.status_code == 200
        found = fhir.get("Observation", params={"identifier": f"{SYSTEM}|{tag}"})
        assert found.json()["total"] == 1
    assert auth.token_requests == 1
    # And without the auth the same store says 401: the write above really was authorized.
    with httpx.Client(base_url=ehr.store.base + "/", timeout=10.0) as bare:
        assert bare.post("Observation", json=observation("x")).status_code == 401


def test_100_token_requests_each_with_a_fresh_short_assertion(ehr: Ehr) -> None:
    auth = ehr.auth(assertion_lifetime_seconds=300)
    before = ehr.control("GET", "/_auth/log")["token_requests"]
    tokens = {auth.fetch_token().value for _ in range(100)}
    assert len(tokens) == 100
    log = ehr.control("GET", "/_auth/log")
    assert log["token_requests"] - before == 100
    seen = log["assertions"][-100:]  # what the server received, decoded there
    assert all(a["outcome"] == "accepted" and a["client_id"] == CLIENT_ID for a in seen)
    assert len({a["jti"] for a in seen}) == 100
    assert all(a["exp"] - a["iat"] <= 300 for a in seen)
    assert all(a["exp"] - a["received_at"] <= 300 for a in seen)
    assert all(a["alg"] == "RS384" and a["kid"] == ehr.rsa.kid for a in seen)


def test_the_token_is_cached_across_many_writes(ehr: Ehr) -> None:
    auth = ehr.auth()
    issued = ehr.control("GET", "/_auth/log")["issued"]
    with ehr.fhir(auth) as fhir:
        for _ in range(20):
            assert create(fhir, uuid.uuid4().hex).status_code == 201
    assert auth.token_requests == 1
    assert ehr.control("GET", "/_auth/log")["issued"] == issued + 1


def test_a_revoked_token_is_refreshed_once_and_the_write_goes_through(ehr: Ehr) -> None:
    auth = ehr.auth()
    with ehr.fhir(auth) as fhir:
        assert create(fhir, uuid.uuid4().hex).status_code == 201
        first = auth.token()
        ehr.control("POST", "/_auth/revoke", json={"client_id": CLIENT_ID})
        tag = uuid.uuid4().hex
        assert create(fhir, tag).status_code == 201  # 401, new token, the same request again
        assert (
            fhir.get("Observation", params={"identifier": f"{SYSTEM}|{tag}"}).json()["total"] == 1
        )
    assert auth.token_requests == 2
    assert auth.token().value != first.value


def test_a_second_401_is_the_answer_never_a_loop(ehr: Ehr) -> None:
    seen: list[str] = []

    def always_401(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    auth = ehr.auth()  # the real token endpoint
    with httpx.Client(auth=auth, transport=httpx.MockTransport(always_401)) as fhir:
        response = fhir.post("http://ehr.invalid/fhir/Observation", json=observation("loop"))
    assert response.status_code == 401
    assert len(seen) == 2  # the request, and its one retry with a new token
    assert seen[0] != seen[1]
    assert auth.token_requests == 2


def test_threads_share_one_token_fetch_and_one_refresh(ehr: Ehr) -> None:
    auth = ehr.auth()
    failures: list[BaseException] = []

    def burst() -> None:
        barrier = threading.Barrier(8)

        def work() -> None:
            try:
                with ehr.fhir(auth) as fhir:
                    barrier.wait()
                    for _ in range(5):
                        assert fhir.get("Observation", params={"_count": "0"}).status_code == 200
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    burst()
    assert not failures
    assert auth.token_requests == 1
    ehr.control("POST", "/_auth/revoke", json={"client_id": CLIENT_ID})
    burst()  # every thread meets a 401 with the same stale token: one refresh for all
    assert not failures
    assert auth.token_requests == 2


class _FixedJti(AssertionSigner):
    def _new_jti(self) -> str:
        return "the-same-jti-every-time"


def _refusals(ehr: Ehr) -> list[tuple[str, Callable[[], BackendServicesAuth], str, str]]:
    def signer(**kwargs: Any) -> AssertionSigner:
        values: dict[str, Any] = {"client_id": CLIENT_ID, "token_url": ehr.token_url, **kwargs}
        return AssertionSigner(ehr.rsa, **values)

    def auth(made: AssertionSigner, scope: str = SCOPE) -> BackendServicesAuth:
        return BackendServicesAuth(made, token_url=ehr.token_url, scope=scope)

    return [
        ("unknown kid", lambda: ehr.auth(kid="not-registered"),
         "invalid_client", "kid 'not-registered' names no RS384 key"),
        ("unregistered client", lambda: ehr.auth(client_id="nobody"),
         "invalid_client", "client 'nobody' is not registered"),
        ("wrong aud", lambda: auth(signer(token_url="https://ehr.example/token")),
         "invalid_client", "aud must be the token URL"),
        ("expired", lambda: auth(signer(clock=lambda: time.time() - 600)),
         "invalid_client", "assertion has expired"),
        ("scope beyond registration", lambda: ehr.auth(scope="system/Patient.r"),
         "invalid_scope", "exceeds what client 'chartgate-adapter' is registered for"),
    ]  # fmt: skip


def test_refusals_reach_the_caller_as_typed_errors(ehr: Ehr) -> None:
    failures = []
    for name, make, error, words in _refusals(ehr):
        auth = make()
        try:
            with ehr.fhir(auth) as fhir, pytest.raises(TokenEndpointError) as caught:
                fhir.get("Observation")
            exc = caught.value
            assert not isinstance(exc, httpx.HTTPError)  # never mistaken for "sent, no answer"
            assert (exc.error, exc.http_status, exc.retryable) == (error, 400, False)
            assert words in exc.description
            assert str(exc).startswith(f"SMART token endpoint: {error}: ")
            assert "eyJ" not in str(exc)  # neither the assertion nor a token
        except AssertionError as failure:
            failures.append(f"{name}: {failure}")
    assert not failures, "\n".join(failures)


def test_a_replayed_assertion_is_refused(ehr: Ehr) -> None:
    fixed = _FixedJti(ehr.rsa, client_id=CLIENT_ID, token_url=ehr.token_url)
    auth = BackendServicesAuth(fixed, token_url=ehr.token_url, scope=SCOPE)
    auth.fetch_token()
    with pytest.raises(TokenEndpointError) as caught:
        auth.fetch_token()
    assert caught.value.error == "invalid_client"
    assert "already used" in caught.value.description


# -- the parts alone -----------------------------------------------------------------------------


def test_the_assertion_is_what_smart_asks_for() -> None:
    key = generate_signing_key("ES384", kid="k1")
    signer = AssertionSigner(
        key, client_id="c1", token_url="https://ehr/token", lifetime_seconds=90
    )
    minted = [jwt.decode(signer.mint(), key.key, algorithms=["ES384"]) for _ in range(100)]
    first = minted[0]
    assert first.header == {"alg": "ES384", "kid": "k1", "typ": "JWT"}
    claims = first.claims
    assert claims["iss"] == claims["sub"] == "c1"
    assert claims["aud"] == "https://ehr/token"
    assert claims["exp"] - claims["iat"] == 90
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 5
    assert len({m.claims["jti"] for m in minted}) == 100
    assert len(claims["jti"]) >= 43  # 256 random bits


def test_an_assertion_lifetime_over_300_s_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    key = generate_signing_key("RS384")
    with pytest.raises(ValueError, match=r"1\.\.300"):
        AssertionSigner(key, client_id="c", token_url="https://t", lifetime_seconds=301)
    with pytest.raises(ValidationError):
        SmartSettings(
            token_url="https://t",
            client_id="c",
            private_key_path=tmp_path / "k",
            scope="system/Observation.c",
            assertion_lifetime_seconds=301,
        )


def test_the_token_is_reused_until_shortly_before_it_expires() -> None:
    now = [1000.0]
    answers = [300, 10]

    def endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "access_token": uuid.uuid4().hex,
                "token_type": "Bearer",
                "expires_in": answers[0],
                "scope": SCOPE,
            },
        )

    signer = AssertionSigner(generate_signing_key("ES384"), client_id="c", token_url="https://t")
    auth = BackendServicesAuth(
        signer,
        token_url="https://t",
        scope=SCOPE,
        refresh_margin_seconds=30,
        transport=httpx.MockTransport(endpoint),
        clock=lambda: now[0],
    )
    token = auth.token()
    now[0] += 269
    assert auth.token() is token
    now[0] += 1  # 270 s: inside the 30 s margin
    assert auth.token() is not token
    assert auth.token_requests == 2
    answers[0] = 10  # a short token: refreshed after half its life, not on every request
    short = auth.fetch_token()
    now[0] += 4
    assert auth.token() is short
    now[0] += 1
    assert auth.token() is not short
    assert "value" not in repr(short)


@pytest.mark.parametrize(
    ("answer", "error", "retryable"),
    [
        (httpx.Response(503, text="<html>busy</html>"), "http_error", True),
        (httpx.Response(429, json={"error": "slow_down"}), "slow_down", True),
        (httpx.Response(401, json={"error": "invalid_client"}), "invalid_client", False),
        (httpx.Response(200, json={"access_token": "a", "token_type": "bearer"}), "invalid_response", False),
        (httpx.Response(200, json={"access_token": "a", "token_type": "mac", "expires_in": 5}),
         "invalid_response", False),
        (httpx.Response(200, text="not json"), "invalid_response", False),
    ],
)  # fmt: skip
def test_token_endpoint_answers_become_typed_errors(
    answer: httpx.Response, error: str, retryable: bool
) -> None:
    signer = AssertionSigner(generate_signing_key("ES384"), client_id="c", token_url="https://t")
    auth = BackendServicesAuth(
        signer, token_url="https://t", scope=SCOPE, transport=httpx.MockTransport(lambda _: answer)
    )
    with pytest.raises(TokenEndpointError) as caught:
        auth.token()
    assert (caught.value.error, caught.value.retryable) == (error, retryable)
    assert caught.value.http_status == answer.status_code


def test_what_the_ehr_says_is_bounded_and_printable() -> None:
    said = {"error": "invalid_client\n" + "x" * 500, "error_description": "\x1b[31m" + "y" * 5000}
    signer = AssertionSigner(generate_signing_key("ES384"), client_id="c", token_url="https://t")
    auth = BackendServicesAuth(
        signer,
        token_url="https://t",
        scope=SCOPE,
        transport=httpx.MockTransport(lambda _: httpx.Response(400, json=said)),
    )
    with pytest.raises(TokenEndpointError) as caught:
        auth.token()
    exc = caught.value
    assert len(exc.error) <= 64
    assert len(exc.description) <= 300
    assert all(" " <= ch <= "~" for ch in str(exc))


def test_an_unreachable_token_endpoint_is_retryable_and_not_an_httpx_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    signer = AssertionSigner(generate_signing_key("ES384"), client_id="c", token_url="https://t")
    auth = BackendServicesAuth(
        signer, token_url="https://t", scope=SCOPE, transport=httpx.MockTransport(refuse)
    )
    fhir = httpx.MockTransport(lambda _: httpx.Response(200))
    with httpx.Client(auth=auth, transport=fhir) as c, pytest.raises(TokenEndpointError) as caught:
        c.post("https://ehr/fhir/Observation", json={})
    assert (caught.value.error, caught.value.retryable) == ("unreachable", True)
    assert caught.value.http_status is None
    assert not isinstance(caught.value, httpx.TransportError)


def test_keys_load_from_pem_or_jwk_and_never_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rsa = generate_signing_key("RS384", kid="r1")
    write_signing_key(rsa, tmp_path / "r.jwk", tmp_path / "r.jwks.json")
    loaded = load_signing_key(tmp_path / "r.jwk", "RS384")
    assert loaded.kid == "r1"  # the JWK's own kid
    assert load_signing_key(tmp_path / "r.jwk", "RS384", "other").kid == "other"
    assert (tmp_path / "r.jwk").stat().st_mode & 0o077 == 0
    (tmp_path / "r.pem").write_bytes(rsa.key.as_pem(private=True))
    from_pem = load_signing_key(tmp_path / "r.pem", "RS384")
    assert from_pem.kid == rsa.key.thumbprint()  # no kid in a PEM: the RFC 7638 thumbprint
    secret = str(rsa.key.as_dict(private=True)["d"])
    assert secret not in repr(loaded)
    assert "d" not in rsa.public_jwks()["keys"][0]

    with pytest.raises(SigningKeyError, match="not a private ES384 key"):
        load_signing_key(tmp_path / "r.pem", "ES384")
    (tmp_path / "pub.json").write_text(json.dumps(rsa.public_jwks()["keys"][0]))
    with pytest.raises(SigningKeyError, match="public key"):
        load_signing_key(tmp_path / "pub.json", "RS384")
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_key(tmp_path / "absent.pem", "RS384")
    small = tmp_path / "small.pem"
    from joserfc.jwk import ECKey

    small.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    with pytest.raises(SigningKeyError, match="P-384"):
        load_signing_key(small, "ES384")

    settings_file = tmp_path / "smart.json"
    settings_file.write_text(
        json.dumps(
            {
                "token_url": "https://ehr/token",
                "client_id": "c",
                "private_key_path": "r.jwk",
                "scope": "system/Observation.cru",
            }
        )
    )
    settings = SmartSettings.load(settings_file)
    assert settings.private_key_path == tmp_path / "r.jwk"
    auth = BackendServicesAuth.from_settings(settings)
    assert secret not in repr(settings) + repr(auth)
    assert secret not in caplog.text


def test_a_dev_registration_connects_adapter_and_store(tmp_path: Path) -> None:
    """What the demo does: provision, start the store with --clients, load --smart-config."""
    port = free_port()
    registration = provision_dev_client(
        tmp_path / "smart", f"http://127.0.0.1:{port}/fhir/auth/token"
    )
    store = StoreProcess(
        db=tmp_path / "fhir.sqlite3",
        log_path=tmp_path / "store.log",
        args=["--clients", str(registration.clients_path)],
    )
    store.start(port)
    try:
        auth = BackendServicesAuth.from_settings(SmartSettings.load(registration.settings_path))
        with httpx.Client(base_url=store.base + "/", auth=auth, timeout=10.0) as fhir:
            assert create(fhir, uuid.uuid4().hex).status_code == 201
            assert fhir.delete("Observation/x").status_code == 403  # no delete in the scope
        again = provision_dev_client(tmp_path / "smart", registration.settings.token_url)
        assert again.settings.kid == registration.settings.kid  # the key is kept
    finally:
        store.stop()
