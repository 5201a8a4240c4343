"""The store's SMART Backend Services token endpoint and bearer checks, over real HTTP, with hand-made assertions."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from tests.devstore.conftest import FHIR_JSON, StoreProcess

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA = RSAKey.generate_key(2048, private=True)
EC = ECKey.generate_key("P-384", private=True)
OTHER_RSA = RSAKey.generate_key(2048, private=True)
WRITER_SCOPE = "system/Observation.cru"


def public(key: RSAKey | ECKey, kid: str) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": kid}


@pytest.fixture(scope="module")
def auth_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    tmp = tmp_path_factory.mktemp("smart")
    (tmp / "reader.jwks.json").write_text(json.dumps({"keys": [public(EC, "reader-ec")]}))
    clients = {
        "clients": [
            {
                "client_id": "adapter",
                "jwks": {"keys": [public(RSA, "rsa-1"), public(EC, "ec-1")]},
                "scopes": ["system/Observation.cruds", "system/Patient.rs"],
            },
            {"client_id": "reader", "jwks_path": "reader.jwks.json", "scopes": ["system/*.rs"]},
            {
                "client_id": "brief",
                "jwks": {"keys": [public(RSA, "brief-1")]},
                "scopes": ["system/*.cruds"],
                "access_token_lifetime_seconds": 1,
            },
        ]
    }
    (tmp / "clients.json").write_text(json.dumps(clients))
    running = StoreProcess(
        db=tmp / "fhir.sqlite3",
        log_path=tmp / "store.log",
        args=["--clients", str(tmp / "clients.json"), "--allow-fault-control"],
    )
    running.start()
    yield running
    running.stop()


@dataclass
class Smart:
    """The store and helpers to mint assertions and request tokens against it."""

    store: StoreProcess
    http: httpx.Client

    @property
    def token_url(self) -> str:
        return f"{self.store.base}/auth/token"

    def assertion(
        self,
        key: RSAKey | ECKey | OctKey = RSA,
        *,
        alg: str = "RS384",
        kid: str = "rsa-1",
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": "adapter",
            "sub": "adapter",
            "aud": self.token_url,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}  # None: leave the claim out
        head = {"alg": alg, "kid": kid, "typ": "JWT", **(header or {})}
        return jwt.encode(head, body, key, algorithms=[alg])

    def request(
        self, assertion: str | None = None, *, scope: str | None = WRITER_SCOPE, **form: str
    ) -> httpx.Response:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion if assertion is not None else self.assertion(),
            **form,
        }
        if scope is not None:
            data["scope"] = scope
        return self.http.post(self.token_url, data={k: v for k, v in data.items() if v != "-"})

    def token(self, **kwargs: Any) -> str:
        response = self.request(**kwargs)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture
def smart(auth_store: StoreProcess) -> Iterator[Smart]:
    with httpx.Client(timeout=10.0) as http:
        yield Smart(auth_store, http)


def nested_payload(depth: int) -> str:
    """A JWS-shaped token whose payload is `depth` nested JSON arrays."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = json.dumps({"alg": "RS384", "typ": "JWT", "kid": "rsa-1"}).encode()
    return f"{part(header)}.{part(b'[' * depth + b']' * depth)}.{part(b'x' * 256)}"


def unsigned(claims: dict[str, Any]) -> str:
    """An `alg: none` JWT (RFC 7519 section 6): no signature at all."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{part(claims)}."


def test_discovery_names_the_token_endpoint_and_the_rules(smart: Smart) -> None:
    response = smart.http.get(f"{smart.store.base}/.well-known/smart-configuration")
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == smart.token_url
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["grant_types_supported"] == ["client_credentials"]
    assert "client-confidential-asymmetric" in config["capabilities"]
    assert smart.http.get(f"{smart.store.base}/metadata").status_code == 200  # open


@pytest.mark.parametrize(("key", "alg", "kid"), [(RSA, "RS384", "rsa-1"), (EC, "ES384", "ec-1")])
def test_a_good_assertion_gets_a_short_lived_token(
    smart: Smart, key: RSAKey | ECKey, alg: str, kid: str
) -> None:
    response = smart.request(smart.assertion(key, alg=alg, kid=kid))
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == WRITER_SCOPE
    assert "refresh_token" not in body
    assert len(body["access_token"]) >= 32


def _cases(smart: Smart) -> list[tuple[str, Callable[[], httpx.Response], str, str]]:
    """(name, request, expected error, words the description must contain)."""
    now = int(time.time())
    hs_key = OctKey.import_key(b"0123456789abcdef0123456789abcdef")
    return [
        ("wrong aud", lambda: smart.request(smart.assertion(aud="https://elsewhere/token")),
         "invalid_client", "aud must be the token URL"),
        ("expired", lambda: smart.request(smart.assertion(iat=now - 120, exp=now - 60)),
         "invalid_client", "expired"),
        ("lifetime 301 s", lambda: smart.request(smart.assertion(iat=now, exp=now + 301)),
         "invalid_client", "at most 300 s"),
        ("exp 400 s ahead", lambda: smart.request(smart.assertion(iat=None, exp=now + 400)),
         "invalid_client", "at most 300 s"),
        ("no exp", lambda: smart.request(smart.assertion(exp=None)),
         "invalid_client", "exp is required"),
        ("no jti", lambda: smart.request(smart.assertion(jti=None)),
         "invalid_client", "jti is required"),
        ("iat ahead", lambda: smart.request(smart.assertion(iat=now + 60, exp=now + 120)),
         "invalid_client", "iat is in the future"),
        ("HS256", lambda: smart.request(smart.assertion(hs_key, alg="HS256")),
         "invalid_client", "'HS256' is not accepted"),
        ("RS256", lambda: smart.request(smart.assertion(alg="RS256")),
         "invalid_client", "'RS256' is not accepted"),
        ("alg none", lambda: smart.request(unsigned({"iss": "adapter", "sub": "adapter"})),
         "invalid_client", "'none' is not accepted"),
        ("unknown kid", lambda: smart.request(smart.assertion(kid="rsa-9")),
         "invalid_client", "kid 'rsa-9' names no RS384 key"),
        ("EC kid, RSA alg", lambda: smart.request(smart.assertion(kid="ec-1")),
         "invalid_client", "kid 'ec-1' names no RS384 key"),
        ("unregistered", lambda: smart.request(smart.assertion(iss="nobody", sub="nobody")),
         "invalid_client", "'nobody' is not registered"),
        ("iss != sub", lambda: smart.request(smart.assertion(sub="someone")),
         "invalid_client", "sub must equal iss"),
        ("forged signature", lambda: smart.request(smart.assertion(OTHER_RSA)),
         "invalid_client", "signature does not verify"),
        ("typ at+jwt", lambda: smart.request(smart.assertion(header={"typ": "at+jwt"})),
         "invalid_client", "typ must be JWT"),
        ("not a JWT", lambda: smart.request("not-a-jwt"),
         "invalid_client", "not a signed JWT"),
        # Nested arrays within the size limit: refused, never a 500 from the JSON parser.
        ("nested payload", lambda: smart.request(nested_payload(2500)),
         "invalid_client", "not a signed JWT"),
        ("exp NaN", lambda: smart.request(smart.assertion(exp=float("nan"))),
         "invalid_client", "exp"),
        ("exp Infinity", lambda: smart.request(smart.assertion(exp=float("inf"))),
         "invalid_client", "exp"),
        ("client_id differs", lambda: smart.request(client_id="reader"),
         "invalid_client", "client_id does not match"),
        ("no assertion", lambda: smart.request(client_assertion="-", client_assertion_type="-"),
         "invalid_client", "no client authentication"),
        ("other assertion type", lambda: smart.request(client_assertion_type="urn:x"),
         "invalid_client", "client_assertion_type must be"),
        ("password grant", lambda: smart.request(grant_type="password"),
         "unsupported_grant_type", "client_credentials"),
        ("no grant_type", lambda: smart.request(grant_type="-"),
         "invalid_request", "grant_type is required"),
        ("no scope", lambda: smart.request(scope=None), "invalid_request", "scope is required"),
        ("scope beyond", lambda: smart.request(scope="system/Patient.c"),
         "invalid_scope", "exceeds what client 'adapter' is registered for"),
        ("patient scope", lambda: smart.request(scope="patient/Observation.c"),
         "invalid_scope", "system/ scopes"),
        ("v1 scope", lambda: smart.request(scope="system/Observation.write"),
         "invalid_scope", "not a SMART v2 resource scope"),
        ("JSON body", lambda: smart.http.post(smart.token_url, json={"grant_type": "x"}),
         "invalid_request", "x-www-form-urlencoded"),
        ("repeated parameter", lambda: smart.http.post(
            smart.token_url,
            content="grant_type=client_credentials&grant_type=client_credentials",
            headers={"Content-Type": "application/x-www-form-urlencoded"}),
         "invalid_request", "'grant_type' is repeated"),
    ]  # fmt: skip


def test_each_refused_request_is_answered_clearly(smart: Smart) -> None:
    """One store for every case; each must be RFC 6749 section 5.2 with a telling description."""
    failures = []
    for name, send, error, words in _cases(smart):
        response = send()
        try:
            assert response.status_code == 400, response.text
            assert response.headers["Cache-Control"] == "no-store"
            body = response.json()
            assert body["error"] == error, body
            assert words in body["error_description"], body
            assert "eyJ" not in response.text  # no JWT echoed back
        except (AssertionError, ValueError, KeyError) as exc:
            failures.append(f"{name}: {exc!r}")
    assert not failures, "\n".join(failures)


def test_a_replayed_assertion_is_refused(smart: Smart) -> None:
    assertion = smart.assertion()
    assert smart.request(assertion).status_code == 200
    replayed = smart.request(assertion)
    assert replayed.status_code == 400
    assert replayed.json() == {
        "error": "invalid_client",
        "error_description": "assertion jti was already used (replay refused)",
    }
    # The same jti under another client is that client's own (the check is per iss).
    jti = uuid.uuid4().hex
    assert smart.request(smart.assertion(jti=jti)).status_code == 200
    reader = smart.assertion(EC, alg="ES384", kid="reader-ec", iss="reader", sub="reader", jti=jti)
    assert smart.request(reader, scope="system/Observation.rs").status_code == 200


def test_fhir_interactions_need_a_token_whose_scopes_cover_them(smart: Smart) -> None:
    base = smart.store.base
    headers = {"Content-Type": FHIR_JSON}
    body = json.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})

    missing = smart.http.post(f"{base}/Observation", content=body, headers=headers)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="chartgate-devstore"'
    assert missing.json()["issue"][0]["code"] == "login"

    bogus = smart.http.get(f"{base}/Observation", headers={"Authorization": "Bearer nope"})
    assert bogus.status_code == 401
    assert 'error="invalid_token"' in bogus.headers["WWW-Authenticate"]

    writer = {"Authorization": f"Bearer {smart.token()}", **headers}
    created = smart.http.post(f"{base}/Observation", content=body, headers=writer)
    assert created.status_code == 201, created.text
    url = f"{base}/Observation/{created.json()['id']}"
    assert smart.http.get(url, headers=writer).status_code == 200
    patient = json.dumps({"resourceType": "Patient", "active": True})
    refused = smart.http.post(f"{base}/Patient", content=patient, headers=writer)
    assert refused.status_code == 403
    challenge = refused.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="system/Patient.c"' in challenge
    assert refused.json()["issue"][0]["code"] == "forbidden"

    reader_assertion = smart.assertion(EC, alg="ES384", kid="reader-ec", iss="reader", sub="reader")
    reader = {
        "Authorization": f"Bearer {smart.token(assertion=reader_assertion, scope='system/*.rs')}"
    }
    assert smart.http.get(url, headers=reader).status_code == 200
    assert smart.http.get(f"{base}/Patient", headers=reader).status_code == 200
    assert smart.http.put(url, content=body, headers={**reader, **headers}).status_code == 403
    assert smart.http.delete(url, headers=reader).status_code == 403
    # A request no route serves still needs a token before it is told so.
    assert smart.http.patch(url, content=b"{}").status_code == 401
    assert smart.http.patch(url, content=b"{}", headers=reader).status_code == 405


def test_an_expired_or_revoked_token_is_refused(smart: Smart) -> None:
    base = smart.store.base
    brief = smart.assertion(kid="brief-1", iss="brief", sub="brief")
    response = smart.request(brief, scope="system/Observation.rs")
    assert response.json()["expires_in"] == 1
    auth = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert smart.http.get(f"{base}/Observation", headers=auth).status_code == 200
    time.sleep(1.1)
    expired = smart.http.get(f"{base}/Observation", headers=auth)
    assert expired.status_code == 401
    assert "expired" in expired.headers["WWW-Authenticate"]

    auth = {"Authorization": f"Bearer {smart.token(scope='system/Observation.rs')}"}
    assert smart.http.get(f"{base}/Observation", headers=auth).status_code == 200
    revoked = smart.http.post(f"{smart.store.origin}/_auth/revoke", json={"client_id": "adapter"})
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] >= 1
    refused = smart.http.get(f"{base}/Observation", headers=auth)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_the_log_records_each_assertion_without_the_jwt(smart: Smart) -> None:
    jti = uuid.uuid4().hex
    smart.request(smart.assertion(jti=jti))
    smart.request(smart.assertion(jti=jti))
    report = smart.http.get(f"{smart.store.origin}/_auth/log").json()
    mine = [a for a in report["assertions"] if a.get("jti") == jti]
    assert [a["outcome"] for a in mine] == ["accepted", "invalid_client"]
    assert mine[0]["client_id"] == "adapter"
    assert mine[0]["exp"] - mine[0]["iat"] == 60
    assert "eyJ" not in json.dumps(report)
    assert report["issued"] >= 1


def test_used_jtis_survive_a_restart_and_tokens_do_not(smart: Smart) -> None:
    assertion = smart.assertion()
    token = smart.token(assertion=assertion)
    smart.store.restart()
    assert smart.request(assertion).json()["error"] == "invalid_client"
    with httpx.Client(timeout=10.0) as http:
        stale = http.get(
            f"{smart.store.base}/Observation", headers={"Authorization": f"Bearer {token}"}
        )
    assert stale.status_code == 401


def test_without_clients_the_store_is_open_as_before(tmp_path: Path) -> None:
    running = StoreProcess(db=tmp_path / "fhir.sqlite3", log_path=tmp_path / "store.log")
    running.start()
    try:
        with httpx.Client(timeout=10.0) as http:
            body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
            assert http.post(f"{running.base}/Observation", json=body).status_code == 201
            assert http.get(f"{running.base}/Observation").status_code == 200
            discovery = http.get(f"{running.base}/.well-known/smart-configuration")
            assert discovery.status_code == 404
            assert "--clients" in discovery.text
            assert http.post(f"{running.base}/auth/token", data={}).status_code == 404
            assert http.get(f"{running.origin}/_auth/log").status_code == 403  # control off
    finally:
        running.stop()


def test_a_bad_clients_file_stops_the_store_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "clients.json"
    bad.write_text(json.dumps({"clients": [{"client_id": "x", "scopes": ["patient/*.r"]}]}))
    running = StoreProcess(
        db=tmp_path / "fhir.sqlite3", log_path=tmp_path / "store.log", args=["--clients", str(bad)]
    )
    with pytest.raises(RuntimeError, match="exited with 2"):
        running.start()
    assert "backend services use system/ scopes" in running.log()
    private = {"keys": [{**RSA.as_dict(private=True), "kid": "k"}]}
    bad.write_text(
        json.dumps({"clients": [{"client_id": "x", "jwks": private, "scopes": ["system/*.r"]}]})
    )
    with pytest.raises(RuntimeError, match="exited with 2"):
        running.start()
    assert "register public keys only" in running.log()
