"""Reviewer authentication against real issuers: the dev issuer's keys on disk and its JWKS over loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from chartgate.devissuer.app import create_app
from chartgate.devissuer.background import BackgroundServer
from chartgate.devissuer.issuer import DevIssuer
from sidecar.review.auth import (
    IssuerConfig,
    Reviewer,
    ReviewerAuthenticator,
    ReviewerAuthError,
)

AUDIENCE = "chartgate-review"
MARKER = "EVIL-MARKER-7f3a"  # planted in hostile tokens: must never come back in an error or log


class Clock:
    """Wall time that a test can move forward; shared by the issuer and the authenticator."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(tmp_path: Path, clock: Clock) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer", "https://idp.example.org/realms/st-mary", clock=clock)


@pytest.fixture
def auth(issuer: DevIssuer, clock: Clock) -> ReviewerAuthenticator:
    return ReviewerAuthenticator([file_config(issuer)], clock=clock)


def file_config(issuer: DevIssuer, **overrides: Any) -> IssuerConfig:
    return IssuerConfig(
        issuer=issuer.issuer, audience=AUDIENCE, jwks_file=issuer.jwks_path, **overrides
    )


def alice(issuer: DevIssuer, **extra: Any) -> str:
    return issuer.mint(
        "alice",
        roles=["clinician"],
        tenants=["st-mary"],
        fhir_user="Practitioner/alice",
        extra_claims=extra or None,
    )


def claims(issuer: DevIssuer, **changes: Any) -> dict[str, Any]:
    """Valid claims for alice; a change of None removes that claim."""
    base = issuer.claims(
        "alice",
        roles=["clinician"],
        tenants=["st-mary"],
        fhir_user="Practitioner/alice",
        audience=AUDIENCE,
        lifetime_seconds=300,
    )
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def forge(header: dict[str, Any], body: dict[str, Any], key: Any) -> str:
    """Sign with joserfc's algorithm under any header the test chooses (joserfc's own encoder
    refuses to write some of the headers these tests need, such as an unknown `crit`)."""
    signing_input = f"{b64json(header)}.{b64json(body)}"
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def refused(auth: ReviewerAuthenticator, header: str) -> ReviewerAuthError:
    with pytest.raises(ReviewerAuthError) as caught:
        auth.authenticate(header)
    error = caught.value
    assert MARKER not in error.message
    assert MARKER not in str(error)
    return error


# --- accepted -------------------------------------------------------------------------------------


def test_valid_token_names_the_reviewer(
    auth: ReviewerAuthenticator, issuer: DevIssuer, clock: Clock
) -> None:
    token = alice(issuer)
    reviewer = auth.authenticate(f"Bearer {token}")
    body = jwt.decode(token, issuer.keys.signing_key()).claims
    assert reviewer == Reviewer(
        issuer="https://idp.example.org/realms/st-mary",
        subject="alice",
        roles=("clinician",),
        tenants=("st-mary",),
        fhir_user="Practitioner/alice",
        token_id=body["jti"],
        expires_at=int(clock.now) + 300,
    )


def test_scheme_is_case_insensitive_and_roles_may_be_a_space_separated_string(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    token = alice(issuer, roles="clinician  prescriber clinician", tenant="st-mary")
    reviewer = auth.authenticate(f"bearer {token}")
    assert reviewer.roles == ("clinician", "prescriber")
    assert reviewer.tenants == ("st-mary",)


def test_absent_reviewer_claims_grant_nothing(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    token = issuer.sign(claims(issuer, roles=None, tenant=None, fhirUser=None, jti=None))
    reviewer = auth.authenticate(f"Bearer {token}")
    assert (reviewer.roles, reviewer.tenants, reviewer.fhir_user, reviewer.token_id) == (
        (),
        (),
        "",
        "",
    )


def test_configured_claim_names_are_read(issuer: DevIssuer, clock: Clock) -> None:
    config = file_config(
        issuer, roles_claim="groups", tenants_claim="hospitals", fhir_user_claim="profile"
    )
    auth = ReviewerAuthenticator([config], clock=clock)
    token = alice(issuer, groups=["prescriber"], hospitals=["st-jude"], profile="Practitioner/a-1")
    reviewer = auth.authenticate(f"Bearer {token}")
    assert (reviewer.roles, reviewer.tenants, reviewer.fhir_user) == (
        ("prescriber",),
        ("st-jude",),
        "Practitioner/a-1",
    )


def test_audience_may_be_an_array_containing_ours(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    token = alice(issuer, aud=["chartgate-console", AUDIENCE])
    assert auth.authenticate(f"Bearer {token}").subject == "alice"


def test_clock_skew_within_leeway_is_accepted(
    auth: ReviewerAuthenticator, issuer: DevIssuer, clock: Clock
) -> None:
    now = int(clock.now)
    token = alice(issuer, exp=now - 20, nbf=now + 20, iat=now + 20)  # default leeway 30 s
    assert auth.authenticate(f"Bearer {token}").expires_at == now - 20


def test_rsa_issuer_is_accepted(tmp_path: Path, clock: Clock) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})
    jwks = tmp_path / "rsa.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    auth = ReviewerAuthenticator(
        [IssuerConfig(issuer="https://rsa.example", audience=AUDIENCE, jwks_file=jwks)],
        clock=clock,
    )
    now = int(clock.now)
    body = {"iss": "https://rsa.example", "sub": "bob", "aud": AUDIENCE, "iat": now}
    token = forge({"alg": "RS256", "kid": "rsa-1"}, {**body, "exp": now + 60}, key)
    assert auth.authenticate(f"Bearer {token}").subject == "bob"


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_eddsa_issuer_is_accepted(tmp_path: Path, clock: Clock, alg: str) -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
    jwks = tmp_path / "ed.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    config = IssuerConfig(
        issuer="https://ed.example", audience=AUDIENCE, jwks_file=jwks, algorithms=(alg,)
    )
    auth = ReviewerAuthenticator([config], clock=clock)
    now = int(clock.now)
    body = {"iss": "https://ed.example", "sub": "dave", "aud": AUDIENCE, "iat": now}
    token = forge({"alg": alg, "kid": "ed-1"}, {**body, "exp": now + 60}, key)
    assert auth.authenticate(f"Bearer {token}").subject == "dave"


# --- refused: algorithm, key, signature -----------------------------------------------------------


def test_alg_none_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": issuer.keys.kid}
    unsigned = f"{b64json(header)}.{b64json(claims(issuer))}."
    assert refused(auth, f"Bearer {unsigned}").reason == "reviewer.alg_refused"
    # Some libraries accept "None" or "NONE" too.
    for spelling in ("None", "NONE", "nOnE"):
        token = f"{b64json({**header, 'alg': spelling})}.{b64json(claims(issuer))}."
        assert refused(auth, f"Bearer {token}").reason == "reviewer.alg_refused"


def _hs256(header: dict[str, Any], body: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(body)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_hs256_signed_with_the_issuers_public_key_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    """The classic confusion attack: HMAC keyed with bytes the issuer publishes."""
    public = issuer.keys.signing_key()
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.keys.kid}
    secrets = [
        public.as_pem(private=False),
        json.dumps(public.as_dict(private=False)).encode(),
        issuer.jwks_path.read_bytes(),
    ]
    for secret in secrets:
        token = _hs256(header, claims(issuer), secret)
        assert refused(auth, f"Bearer {token}").reason == "reviewer.alg_refused"


def test_hs256_with_an_rsa_public_key_pem_is_refused(tmp_path: Path, clock: Clock) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    jwks = tmp_path / "rsa.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    config = IssuerConfig(
        issuer="https://rsa.example", audience=AUDIENCE, jwks_file=jwks, algorithms=("RS256",)
    )
    auth = ReviewerAuthenticator([config], clock=clock)
    now = int(clock.now)
    body = {"iss": "https://rsa.example", "sub": "x", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    token = _hs256({"alg": "HS256", "kid": "rsa-1"}, body, key.as_pem(private=False))
    assert refused(auth, f"Bearer {token}").reason == "reviewer.alg_refused"


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none", "RS1", "ES256K"])
def test_an_issuer_cannot_be_configured_with_an_unsafe_alg(issuer: DevIssuer, alg: str) -> None:
    with pytest.raises(ValidationError, match="not accepted"):
        file_config(issuer, algorithms=(alg,))


def test_an_alg_the_issuer_does_not_allow_is_refused(issuer: DevIssuer, clock: Clock) -> None:
    auth = ReviewerAuthenticator([file_config(issuer, algorithms=("RS256",))], clock=clock)
    assert refused(auth, f"Bearer {alice(issuer)}").reason == "reviewer.alg_refused"


def test_unknown_kid_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    token = forge(
        {"alg": "ES256", "kid": f"{MARKER}-kid"}, claims(issuer), issuer.keys.signing_key()
    )
    assert refused(auth, f"Bearer {token}").reason == "reviewer.kid_unknown"


def test_missing_kid_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    token = forge({"alg": "ES256"}, claims(issuer), issuer.keys.signing_key())
    assert refused(auth, f"Bearer {token}").reason == "reviewer.kid_unknown"


def test_another_key_under_the_right_kid_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    other = ECKey.generate_key("P-256", private=True)
    token = forge({"alg": "ES256", "kid": issuer.keys.kid}, claims(issuer), other)
    assert refused(auth, f"Bearer {token}").reason == "reviewer.signature_invalid"


def test_a_tampered_payload_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    header, _, signature = alice(issuer).split(".")
    promoted = b64json(claims(issuer, roles=["prescriber"]))
    token = f"{header}.{promoted}.{signature}"
    assert refused(auth, f"Bearer {token}").reason == "reviewer.signature_invalid"


def test_an_unknown_critical_header_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    header = {"alg": "ES256", "kid": issuer.keys.kid, "crit": ["exp-v2"], "exp-v2": 1}
    token = forge(header, claims(issuer), issuer.keys.signing_key())
    assert refused(auth, f"Bearer {token}").reason == "reviewer.token_malformed"


# --- refused: issuer, audience, time --------------------------------------------------------------


def test_another_issuers_token_is_refused(
    auth: ReviewerAuthenticator, tmp_path: Path, clock: Clock
) -> None:
    stranger = DevIssuer(tmp_path / "stranger", f"https://{MARKER}.example", clock=clock)
    assert refused(auth, f"Bearer {alice(stranger)}").reason == "reviewer.issuer_unknown"


def test_the_signature_is_checked_only_against_the_named_issuers_keys(
    issuer: DevIssuer, tmp_path: Path, clock: Clock
) -> None:
    """Two trusted issuers: B's key cannot vouch for a token that claims to come from A."""
    other = DevIssuer(tmp_path / "b", "https://b.example", clock=clock)
    auth = ReviewerAuthenticator([file_config(issuer), file_config(other)], clock=clock)
    assert auth.authenticate(f"Bearer {alice(other)}").issuer == "https://b.example"
    # iss says A, signed by B under B's kid: B's kid is not in A's JWKS.
    as_a = forge({"alg": "ES256", "kid": other.keys.kid}, claims(issuer), other.keys.signing_key())
    assert refused(auth, f"Bearer {as_a}").reason == "reviewer.kid_unknown"
    # iss says A, signed by B under A's kid.
    as_a = forge({"alg": "ES256", "kid": issuer.keys.kid}, claims(issuer), other.keys.signing_key())
    assert refused(auth, f"Bearer {as_a}").reason == "reviewer.signature_invalid"


def test_another_audience_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    for aud in (f"{MARKER}-api", [f"{MARKER}-api", "chartgate-console"], []):
        token = alice(issuer, aud=aud)
        assert refused(auth, f"Bearer {token}").reason == "reviewer.audience_mismatch"


def test_expired_past_leeway_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer, clock: Clock
) -> None:
    token = alice(issuer)
    clock.advance(300 + 31)
    assert refused(auth, f"Bearer {token}").reason == "reviewer.expired"


def test_nbf_in_the_future_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer, clock: Clock
) -> None:
    token = alice(issuer, nbf=int(clock.now) + 31 + 1)
    error = refused(auth, f"Bearer {token}")
    assert (error.reason, error.message) == (
        "reviewer.not_yet_valid",
        "the token's nbf is in the future",
    )


def test_iat_in_the_future_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer, clock: Clock
) -> None:
    token = alice(issuer, iat=int(clock.now) + 120)
    assert refused(auth, f"Bearer {token}").reason == "reviewer.not_yet_valid"


@pytest.mark.parametrize("missing", ["exp", "sub", "iat", "aud"])
def test_a_missing_required_claim_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer, missing: str
) -> None:
    token = issuer.sign(claims(issuer, **{missing: None}))
    error = refused(auth, f"Bearer {token}")
    assert error.reason == "reviewer.claims_invalid"
    assert missing in error.message


def test_a_missing_iss_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    token = issuer.sign(claims(issuer, iss=None))
    assert refused(auth, f"Bearer {token}").reason == "reviewer.claims_invalid"


@pytest.mark.parametrize(
    "change",
    [
        {"roles": 5},
        {"roles": {"clinician": True}},
        {"roles": ["clinician", 7]},
        {"roles": ["clinician", ""]},
        {"roles": ["clinician\nprescriber"]},
        {"roles": ["r"] * 65},
        {"roles": ["r" * 129]},
        {"tenant": 5},
        {"tenant": ["st-mary", None]},
        {"tenant": "st mary"},
        {"fhirUser": 123},
        {"fhirUser": ["Practitioner/alice"]},
        {"fhirUser": f"{MARKER}:not-a-reference"},
        {"fhirUser": "Organization/st-mary"},
        {"sub": 123},
        {"sub": ""},
        {"sub": "a" * 256},
        {"sub": "alice\u0000admin"},
        {"sub": "alice "},
        {"sub": "älice"},
        {"exp": "tomorrow"},
        {"exp": True},
        {"exp": 2**64},
        {"nbf": "now"},
        {"iat": [1]},
        {"jti": 5},
        {"jti": "j" * 256},
        {"aud": 5},
        {"iss": ["https://idp.example.org/realms/st-mary"]},
    ],
    ids=lambda change: "-".join(f"{k}={str(v)[:20]}" for k, v in change.items()),
)
def test_a_claim_of_the_wrong_type_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer, change: dict[str, Any]
) -> None:
    token = issuer.sign(claims(issuer, **change))
    assert refused(auth, f"Bearer {token}").reason == "reviewer.claims_invalid"


# --- refused: the header itself -------------------------------------------------------------------


def test_a_one_megabyte_header_is_refused_without_parsing(
    auth: ReviewerAuthenticator, issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = "Bearer " + alice(issuer) + "A" * (1024 * 1024)

    def parsed(token: str) -> None:
        raise AssertionError("an oversized header reached the token parser")

    monkeypatch.setattr("sidecar.review.auth._parse_unverified", parsed)
    assert refused(auth, huge).reason == "reviewer.token_malformed"


def test_a_claim_named_twice_is_refused(auth: ReviewerAuthenticator, issuer: DevIssuer) -> None:
    # With plain json.loads the last `roles` would win: a signed token read as another reviewer.
    body = b64(json.dumps(claims(issuer)).encode()[:-1] + b', "roles": ["prescriber"]}')
    header = b64json({"alg": "ES256", "kid": issuer.keys.kid, "typ": "JWT"})
    signing_input = f"{header}.{body}"
    signature = JWSRegistry.algorithms["ES256"].sign(
        signing_input.encode(), issuer.keys.signing_key()
    )
    token = f"{signing_input}.{b64(signature)}"
    assert refused(auth, f"Bearer {token}").reason == "reviewer.token_malformed"


def test_a_large_but_bounded_token_payload_is_refused(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    token = issuer.sign(claims(issuer, padding="x" * 20_000))
    assert refused(auth, f"Bearer {token}").reason == "reviewer.token_malformed"


ES256_HEADER = b64json({"alg": "ES256"})
NAN_CLAIMS = b'{"exp": NaN}'


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "reviewer.token_missing"),
        ("   ", "reviewer.token_missing"),
        ("Bearer", "reviewer.token_missing"),
        ("Bearer    ", "reviewer.token_missing"),
        ("Basic YWxpY2U6cGFzc3dvcmQ=", "reviewer.token_malformed"),
        (f"{MARKER} abc.def.ghi", "reviewer.token_malformed"),
        (f"Bearer {MARKER}", "reviewer.token_malformed"),
        ("Bearer a.b", "reviewer.token_malformed"),
        ("Bearer a.b.c.d.e", "reviewer.token_malformed"),
        ("Bearer a.b.c", "reviewer.token_malformed"),
        ("Bearer ...", "reviewer.token_malformed"),
        ("Bearer eyJ!.eyJ.sig", "reviewer.token_malformed"),
        ("Bearer \u00e9\u00e9.\u00e9.\u00e9", "reviewer.token_malformed"),
        (f"Bearer {b64json(['alg', 'ES256'])}.{b64json({})}.c2ln", "reviewer.token_malformed"),
        (f"Bearer {b64json('alg')}.{b64json({})}.c2ln", "reviewer.token_malformed"),
        (f"Bearer {b64json({'alg': ['ES256']})}.{b64json({})}.c2ln", "reviewer.alg_refused"),
        (f"Bearer {b64json({'kid': 'k'})}.{b64json({})}.c2ln", "reviewer.token_malformed"),
        (f"Bearer {ES256_HEADER}.{b64json([1, 2])}.c2ln", "reviewer.token_malformed"),
        (f"Bearer {ES256_HEADER}.{b64(NAN_CLAIMS)}.c2ln", "reviewer.token_malformed"),
        (f"Bearer {ES256_HEADER}.{b64(b'[' * 5000)}.c2ln", "reviewer.token_malformed"),
        (f"Bearer {b64(b'[' * 2500)}.{b64json({})}.c2ln", "reviewer.token_malformed"),
        (
            f"Bearer {b64json({'alg': 'ES256', 'b64': False, 'crit': ['b64']})}.eyJ.c2ln",
            "reviewer.token_malformed",
        ),
    ],
)
def test_garbage_is_refused(auth: ReviewerAuthenticator, header: str, reason: str) -> None:
    assert refused(auth, header).reason == reason


def test_every_corruption_of_a_token_is_a_typed_refusal(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    """Each character of a valid token replaced, dropped or doubled: refused with a reason,
    never another exception, never accepted (the signature covers every byte but the last
    few bits of the final base64url character, which decode to the same signature)."""
    token = alice(issuer)
    accepted, reasons = [], set()
    for i in range(len(token)):
        for variant in (
            token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :],
            token[:i] + token[i + 1 :],
            token[:i] + token[i] + token[i:],
        ):
            try:
                auth.authenticate(f"Bearer {variant}")
                accepted.append(variant)
            except ReviewerAuthError as exc:
                reasons.add(exc.reason)
    assert all(reason.startswith("reviewer.") for reason in reasons)
    for variant in accepted:
        assert variant[:-1] == token[:-1]
        assert base64.urlsafe_b64decode(variant.split(".")[2] + "==") == base64.urlsafe_b64decode(
            token.split(".")[2] + "=="
        )


def test_no_token_content_reaches_errors_or_logs(
    auth: ReviewerAuthenticator,
    issuer: DevIssuer,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every refusal, with the marker planted in each field an attacker controls."""
    caplog.set_level(logging.DEBUG)
    stranger = DevIssuer(tmp_path / "s", f"https://{MARKER}", clock=clock)
    key = issuer.keys.signing_key()
    tokens = [
        alice(stranger, sub=MARKER),
        alice(issuer, aud=MARKER, sub=MARKER),
        alice(issuer, roles=[f"{MARKER} x\n"]),
        alice(issuer, fhirUser=MARKER),
        alice(issuer, exp=int(clock.now) - 100, sub=MARKER),
        forge({"alg": "ES256", "kid": MARKER}, claims(issuer, sub=MARKER), key),
        forge(
            {"alg": "ES256", "kid": issuer.keys.kid, "x": MARKER},
            claims(issuer),
            ECKey.generate_key(),
        ),
        f"{b64json({'alg': MARKER})}.{b64json({'iss': MARKER})}.",
    ]
    for token in tokens:
        with pytest.raises(ReviewerAuthError) as caught:
            auth.authenticate(f"Bearer {token}")
        assert MARKER not in repr(caught.value.args) + caught.value.message
        assert token not in caplog.text
    assert MARKER not in caplog.text


# --- configuration --------------------------------------------------------------------------------


def test_issuer_config_is_strict(issuer: DevIssuer, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        IssuerConfig(issuer="i", audience="a")
    with pytest.raises(ValidationError, match="exactly one"):
        IssuerConfig(
            issuer="i", audience="a", jwks_file=issuer.jwks_path, jwks_url="https://x/jwks"
        )
    with pytest.raises(ValidationError, match="https"):
        IssuerConfig(issuer="i", audience="a", jwks_url="http://idp.example.org/jwks")
    with pytest.raises(ValidationError, match="https"):
        IssuerConfig(issuer="i", audience="a", jwks_url="file:///etc/jwks.json")
    with pytest.raises(ValidationError):
        file_config(issuer, leeway_seconds=121)
    with pytest.raises(ValidationError):
        file_config(issuer, algorithms=())
    with pytest.raises(ValidationError, match="Extra inputs"):
        IssuerConfig.model_validate(
            {"issuer": "i", "audience": "a", "jwks_file": "x", "accept_unsigned": True}
        )
    for loopback in ("http://127.0.0.1:8090/jwks", "http://localhost/jwks", "http://[::1]/j"):
        assert IssuerConfig(issuer="i", audience="a", jwks_url=loopback).jwks_url == loopback
    config = file_config(issuer)
    with pytest.raises(ValidationError):
        config.audience = "other"


def test_authenticator_refuses_no_or_duplicate_issuers(issuer: DevIssuer) -> None:
    with pytest.raises(ValueError, match="at least one"):
        ReviewerAuthenticator([])
    with pytest.raises(ValueError, match="twice"):
        ReviewerAuthenticator([file_config(issuer), file_config(issuer)])


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        json.dumps({"keys": "x"}),
        json.dumps([{"kty": "EC"}]),
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}),
        json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "k"}]}),
    ],
)
def test_an_unusable_jwks_file_fails_at_startup(tmp_path: Path, document: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(ValueError, match="reviewer issuer"):
        ReviewerAuthenticator([IssuerConfig(issuer="i", audience="a", jwks_file=path)])


def test_a_jwks_file_holding_a_private_key_is_refused(issuer: DevIssuer, tmp_path: Path) -> None:
    path = tmp_path / "leaked.jwks.json"
    private = issuer.keys.signing_key().as_dict(private=True)
    path.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(ValueError, match="private"):
        ReviewerAuthenticator([IssuerConfig(issuer="i", audience="a", jwks_file=path)])


def test_a_jwks_file_is_reread_for_a_rotated_key(
    auth: ReviewerAuthenticator, issuer: DevIssuer
) -> None:
    auth.authenticate(f"Bearer {alice(issuer)}")
    issuer.keys.rotate()
    assert auth.authenticate(f"Bearer {alice(issuer)}").subject == "alice"


# --- JWKS over HTTP -------------------------------------------------------------------------------


class CountingApp:
    """Wraps an ASGI app and counts the requests for each path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hits: dict[str, int] = {}

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            self.hits[scope["path"]] = self.hits.get(scope["path"], 0) + 1
        await self.app(scope, receive, send)


@pytest.fixture
def served(tmp_path: Path, clock: Clock) -> Iterator[tuple[DevIssuer, CountingApp, str]]:
    """The dev issuer's HTTP server on a loopback port: (issuer, request counter, base URL)."""
    server = BackgroundServer()
    issuer = DevIssuer(tmp_path / "served", server.url, clock=clock)
    app = CountingApp(create_app(issuer))
    with server.serving(app):
        yield issuer, app, server.url


def url_config(issuer: DevIssuer, url: str, **overrides: Any) -> IssuerConfig:
    return IssuerConfig(
        issuer=issuer.issuer, audience=AUDIENCE, jwks_url=f"{url}/jwks", **overrides
    )


def test_jwks_url_issuer_fetches_once_and_caches(
    served: tuple[DevIssuer, CountingApp, str], clock: Clock
) -> None:
    issuer, app, url = served
    with httpx.Client() as http:
        auth = ReviewerAuthenticator([url_config(issuer, url)], clock=clock, http=http)
        assert app.hits.get("/jwks", 0) == 0  # fetched on first use, not at startup
        for _ in range(5):
            assert auth.authenticate(f"Bearer {alice(issuer)}").subject == "alice"
        assert app.hits["/jwks"] == 1
        clock.advance(300)  # jwks_refresh_seconds: the cache is stale, refreshed on next use
        auth.authenticate(f"Bearer {alice(issuer)}")
        assert app.hits["/jwks"] == 2


def test_unknown_kid_after_rotation_refetches_at_most_once_per_interval(
    served: tuple[DevIssuer, CountingApp, str], clock: Clock
) -> None:
    issuer, app, url = served
    auth = ReviewerAuthenticator([url_config(issuer, url, jwks_refresh_seconds=60)], clock=clock)
    auth.authenticate(f"Bearer {alice(issuer)}")
    assert app.hits["/jwks"] == 1

    issuer.keys.rotate()
    clock.advance(1)
    assert auth.authenticate(f"Bearer {alice(issuer)}").subject == "alice"  # refetched
    assert app.hits["/jwks"] == 2

    # A second rotation inside the same interval: the early refetch is spent.
    issuer.keys.rotate()
    clock.advance(1)
    rotated = alice(issuer)
    sprayed = [
        forge({"alg": "ES256", "kid": f"made-up-{i}"}, claims(issuer), issuer.keys.signing_key())
        for i in range(20)
    ]
    for token in [rotated, *sprayed]:
        assert refused(auth, f"Bearer {token}").reason == "reviewer.kid_unknown"
    assert app.hits["/jwks"] == 2

    clock.advance(59)  # 60 s after the last fetch: the keys are refreshed
    assert auth.authenticate(f"Bearer {rotated}").subject == "alice"
    assert app.hits["/jwks"] == 3


def test_jwks_server_down_is_jwks_unavailable(tmp_path: Path, clock: Clock) -> None:
    down = BackgroundServer()  # bound, never started, closed: the port refuses connections
    down.stop()
    issuer = DevIssuer(tmp_path / "i", down.url, clock=clock)
    auth = ReviewerAuthenticator([url_config(issuer, down.url)], clock=clock)
    error = refused(auth, f"Bearer {alice(issuer)}")
    assert error.reason == "reviewer.jwks_unavailable"


def test_jwks_fetch_failures_are_rate_limited(tmp_path: Path, clock: Clock) -> None:
    hits = {"n": 0}

    async def broken(_: Any) -> PlainTextResponse:
        hits["n"] += 1
        return PlainTextResponse("upstream trouble", 503)

    server = BackgroundServer()
    with server.serving(Starlette(routes=[Route("/jwks", broken)])):
        issuer = DevIssuer(tmp_path / "i", server.url, clock=clock)
        auth = ReviewerAuthenticator([url_config(issuer, server.url)], clock=clock)
        for _ in range(10):
            assert refused(auth, f"Bearer {alice(issuer)}").reason == "reviewer.jwks_unavailable"
        assert hits["n"] == 1
        clock.advance(5)
        refused(auth, f"Bearer {alice(issuer)}")
        assert hits["n"] == 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html>login</html>",
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}).encode(),
        b'{"keys": [' + b'{"kty":"EC"},' * 30_000 + b"{}]}",
    ],
    ids=["not-json", "symmetric-key", "oversized"],
)
def test_an_unusable_jwks_response_is_jwks_unavailable(
    tmp_path: Path, clock: Clock, body: bytes
) -> None:
    async def jwks(_: Any) -> PlainTextResponse:
        return PlainTextResponse(body.decode(), 200, media_type="application/json")

    server = BackgroundServer()
    with server.serving(Starlette(routes=[Route("/jwks", jwks)])):
        issuer = DevIssuer(tmp_path / "i", server.url, clock=clock)
        auth = ReviewerAuthenticator([url_config(issuer, server.url)], clock=clock)
        assert refused(auth, f"Bearer {alice(issuer)}").reason == "reviewer.jwks_unavailable"


def test_cached_keys_survive_the_jwks_server_going_down(tmp_path: Path, clock: Clock) -> None:
    server = BackgroundServer()
    issuer = DevIssuer(tmp_path / "i", server.url, clock=clock)
    auth = ReviewerAuthenticator([url_config(issuer, server.url)], clock=clock)
    with server.serving(create_app(issuer)):
        auth.authenticate(f"Bearer {alice(issuer)}")
    clock.advance(301)  # stale; the refresh fails; the keys already fetched still verify
    assert auth.authenticate(f"Bearer {alice(issuer)}").subject == "alice"
