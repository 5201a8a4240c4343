"""The console's parts alone: the diff, sessions and CSRF, configuration, headers, escaping, who may do what."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from chartgate.devissuer.background import BackgroundServer
from chartgate.stack import free_port
from chartgate.v1 import gateway_pb2, review_pb2
from console.app import create_app
from console.config import ConsoleConfig
from console.diff import flatten, resource_diff, under
from console.oidc import code_challenge
from console.pages import ReviewPages
from console.present import duration, item_view
from console.security import CONTENT_SECURITY_POLICY, cross_origin, local_path
from console.sessions import Session, SessionStore, csrf_matches
from console.web import Web, templates
from sidecar.review.auth import Reviewer

ALICE = Reviewer(
    issuer="http://127.0.0.1:8090",
    subject="alice",
    roles=("clinician",),
    tenants=("st-mary",),
    fhir_user="Practitioner/alice",
    token_id="t1",
    expires_at=0,
)
CONFIG = ConsoleConfig(issuer="http://127.0.0.1:8090", review_target="127.0.0.1:50053")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- the diff ----------------------------------------------------------------------------------


def test_a_create_is_compared_with_nothing_and_every_element_is_written() -> None:
    resource = {
        "resourceType": "Observation",
        "status": "preliminary",
        "valueQuantity": {"value": 98, "unit": "mg/dL"},
    }
    diff = resource_diff(
        operation="create",
        resource_json=json.dumps(resource),
        fields=("status", "valueQuantity"),
    )
    assert diff.kind == "create"
    assert diff.note == ""
    rows = {r.path: r for r in diff.rows}
    assert next(r.path for r in diff.rows) == "resourceType"
    assert rows["valueQuantity.value"].proposed == "98"
    assert rows["valueQuantity.value"].current is None
    assert rows["valueQuantity.unit"].proposed == "mg/dL"
    assert {r.status for r in diff.rows} == {"added"}
    assert rows["status"].written
    assert not rows["resourceType"].written


def test_an_update_keeps_the_charts_other_elements_and_marks_what_it_writes() -> None:
    current = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "3"},
        "active": True,
        "telecom": [
            {"system": "phone", "value": "+1-555-0199", "use": "home"},
            {"system": "email", "value": "old@example.org"},
        ],
    }
    update = {
        "resourceType": "Patient",
        "id": "p1",
        "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "mobile"}],
        "gender": "female",
    }
    diff = resource_diff(
        operation="update",
        resource_json=json.dumps(update),
        current_json=json.dumps(current),
        fields=("gender", "telecom"),
    )
    assert diff.kind == "update"
    rows = {r.path: r for r in diff.rows}
    assert (rows["telecom[0].value"].current, rows["telecom[0].value"].proposed) == (
        "+1-555-0199",
        "+1-555-0100",
    )
    assert rows["telecom[0].value"].status == "changed"
    assert rows["telecom[0].value"].written
    assert rows["telecom[0].system"].status == "unchanged"
    assert rows["telecom[0].system"].written
    assert rows["telecom[1].value"].status == "removed"
    assert rows["telecom[1].value"].written
    assert rows["gender"].status == "added"
    assert rows["gender"].written
    # Elements the update does not name keep the chart's values, and are not written.
    assert (rows["active"].current, rows["active"].proposed, rows["active"].written) == (
        "true",
        "true",
        False,
    )
    assert rows["meta.versionId"].status == "unchanged"
    assert rows["id"].status == "unchanged"
    assert not rows["id"].written
    assert diff.changed == 5  # telecom[0].value, .use; telecom[1].system, .value; gender


def test_an_update_whose_current_version_could_not_be_read_says_so() -> None:
    diff = resource_diff(
        operation="update",
        resource_json=json.dumps({"resourceType": "Patient", "id": "p1", "gender": "male"}),
        current_json="",
        current_note="the EHR could not be read",
        fields=("gender",),
    )
    assert diff.kind == "update_unread"
    assert diff.note == "the EHR could not be read"
    assert [(r.path, r.current, r.proposed, r.written) for r in diff.rows] == [
        ("resourceType", None, "Patient", False),
        ("id", None, "p1", False),
        ("gender", None, "male", True),
    ]
    bare = resource_diff(
        operation="update", resource_json='{"resourceType": "Patient", "id": "p1"}'
    )
    assert bare.kind == "update_unread"
    assert "could not be read" in bare.note


def test_flattening_and_field_matching() -> None:
    assert flatten({"a": [], "b": {}, "c": [{"d": None}], "e": "x"}) == {
        "a": "[]",
        "b": "{}",
        "c[0].d": "null",
        "e": "x",
    }
    assert under("meta.tag[0].code", "meta.tag")
    assert under("meta.tag", "meta.tag")
    assert not under("meta.tags", "meta.tag")
    assert not under("meta.security[0]", "meta.tag")


# --- sessions and CSRF -------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> SessionStore:
    return SessionStore(idle_seconds=600, max_seconds=3600, max_sessions=3, clock=clock)


def test_a_session_is_found_only_by_its_cookie_and_ends_with_its_token_idle_time_or_age(
    store: SessionStore, clock: Clock
) -> None:
    made = store.create(ALICE, "Alice", "access-token", clock.now + 300)
    assert made is not None
    cookie, session = made
    assert store.get(cookie) is session
    assert store.get("") is None
    assert store.get(cookie + "x") is None
    assert len(cookie) >= 43
    assert len(session.csrf_token) >= 43
    clock.now += 299
    assert store.get(cookie) is session
    clock.now += 1  # the access token's expiry ends the session
    assert store.get(cookie) is None
    cookie, _ = store.create(ALICE, "Alice", "t", clock.now + 10_000) or ("", None)
    clock.now += 599
    assert store.get(cookie) is not None  # touched: the idle clock restarts
    clock.now += 600
    assert store.get(cookie) is None  # idle too long


def test_sessions_are_bounded_and_deleted_sessions_are_gone(
    store: SessionStore, clock: Clock
) -> None:
    cookies = [store.create(ALICE, "A", "t", clock.now + 100) for _ in range(3)]
    assert all(cookies)
    assert store.create(ALICE, "A", "t", clock.now + 100) is None  # full of live sessions
    clock.now += 200  # all expired: room again
    assert store.create(ALICE, "A", "t", clock.now + 100) is not None
    made = store.create(ALICE, "A", "t", clock.now + 100)
    assert made is not None
    store.delete(made[0])
    assert store.get(made[0]) is None


def test_a_sign_in_attempt_is_bound_to_its_cookie_and_state_and_spent_once(
    store: SessionStore, clock: Clock
) -> None:
    started = store.begin_login("/queue")
    assert started is not None
    cookie, attempt = started
    assert len({attempt.state, attempt.nonce, attempt.code_verifier}) == 3
    assert 43 <= len(attempt.code_verifier) <= 128
    assert store.finish_login(cookie, "another-state") is None
    assert store.finish_login(cookie, attempt.state) is None  # the failed try spent it
    cookie, attempt = store.begin_login("/queue") or ("", attempt)
    assert store.finish_login("other-cookie", attempt.state) is None
    assert store.finish_login(cookie, attempt.state) == attempt
    assert store.finish_login(cookie, attempt.state) is None
    cookie, attempt = store.begin_login("/queue") or ("", attempt)
    clock.now += 601
    assert store.finish_login(cookie, attempt.state) is None  # older than ten minutes


def test_csrf_tokens_compare_exactly() -> None:
    session = Session(ALICE, "A", "t", "token-123", 0, 1, 0)
    assert csrf_matches(session, "token-123")
    assert not csrf_matches(session, "")
    assert not csrf_matches(session, "token-12")
    assert not csrf_matches(session, "token-123 ")
    assert not csrf_matches(session, "tökén")


def test_flashes_are_shown_once() -> None:
    session = Session(ALICE, "A", "t", "c", 0, 1, 0)
    session.flash("ok", "done")
    assert [f.text for f in session.take_flashes()] == ["done"]
    assert session.take_flashes() == []


# --- configuration ----------------------------------------------------------------------------


def test_cookies_are_secure_except_for_plain_http_on_loopback() -> None:
    assert not CONFIG.secure_cookies
    assert CONFIG.public_origin == "http://127.0.0.1:8091"
    assert CONFIG.hosts == ("127.0.0.1",)
    public = ConsoleConfig(
        issuer="https://login.example",
        redirect_uri="https://review.example/callback",
        review_target="sidecar:50053",
        listen="0.0.0.0:8091",
    )
    assert public.secure_cookies
    assert public.public_origin == "https://review.example"
    assert Web(public).session_cookie == "__Host-chartgate-session"
    assert Web(CONFIG).session_cookie == "chartgate-session"


@pytest.mark.parametrize(
    "change",
    [
        {"issuer": "http://login.example"},  # plaintext issuer off this machine
        {"redirect_uri": "http://review.example/callback"},
        {"redirect_uri": "https://review.example/elsewhere"},
        {"review_target": "no-port"},
        {"listen": "127.0.0.1:99999"},
        {"session_idle_seconds": 7200, "session_max_seconds": 3600},
        {"surprise": True},
    ],
)
def test_unsafe_or_malformed_settings_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConsoleConfig.model_validate(
            {"issuer": "http://127.0.0.1:8090", "review_target": "127.0.0.1:1", **change}
        )


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "console.json"
    path.write_text(json.dumps({"issuer": "https://login.example", "review_target": "a:1"}))
    config = ConsoleConfig.load(path, review_target="b:2")
    assert (config.issuer, config.review_target) == ("https://login.example", "b:2")
    assert ConsoleConfig.load(None, issuer="https://x.example", review_target="c:3").issuer


# --- request checks ---------------------------------------------------------------------------


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def test_cross_origin_posts_are_recognised() -> None:
    origin = "http://127.0.0.1:8091"
    assert not cross_origin(_request({}), origin)  # a tool: the CSRF token decides
    assert not cross_origin(_request({"Sec-Fetch-Site": "same-origin", "Origin": origin}), origin)
    assert not cross_origin(_request({"Sec-Fetch-Site": "same-origin", "Origin": "null"}), origin)
    assert cross_origin(_request({"Sec-Fetch-Site": "cross-site"}), origin)
    assert cross_origin(_request({"Sec-Fetch-Site": "same-site"}), origin)
    assert cross_origin(_request({"Origin": "http://127.0.0.1:9999"}), origin)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/proposals/p1?x=1", "/proposals/p1?x=1"),
        ("", "/queue"),
        ("https://evil.example/", "/queue"),
        ("//evil.example/x", "/queue"),
        ("/\\evil.example", "/queue"),
        ("/ok\r\nSet-Cookie: x", "/queue"),
    ],
)
def test_after_sign_in_the_browser_only_goes_to_a_local_path(value: str, expected: str) -> None:
    assert local_path(value) == expected


def test_pkce_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


# --- the app's own answers (no Review API needed) ----------------------------------------------


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """The console app on a real loopback socket in this process (no Review API behind it)."""
    server = BackgroundServer()
    # An issuer where nothing listens (a port the kernel just reported free).
    config = CONFIG.model_copy(update={"issuer": f"http://127.0.0.1:{free_port()}"})
    with server.serving(create_app(config)), httpx.Client(base_url=server.url) as http:
        yield http


def test_every_answer_carries_the_headers_and_signed_out_pages_redirect(
    client: httpx.Client,
) -> None:
    for path in ("/healthz", "/queue", "/static/console.css", "/nowhere"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path
    assert client.get("/queue").headers["location"] == ("/login?next=%2Fqueue")
    assert client.get("/healthz").headers["cache-control"] == "no-store"
    assert client.get("/static/console.css").headers["cache-control"] == "public, max-age=300"
    assert (
        client.get("/static/console.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )


def test_sign_in_says_so_when_the_issuer_cannot_be_reached(client: httpx.Client) -> None:
    # Nothing listens on the configured issuer in this test.
    response = client.get("/login")
    assert response.status_code == 503
    assert "cannot be reached" in response.text


# --- pages rendered from a ReviewItem ------------------------------------------------------------


def _item(**changes: Any) -> review_pb2.ReviewItem:
    fields: dict[str, Any] = {
        "proposal": gateway_pb2.Proposal(
            proposal_id="pr-1",
            state=gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL,
            tier=gateway_pb2.TIER_DUAL_APPROVAL,
            resource_type="Patient",
            payload_sha256="a" * 64,
            created_at="2026-11-30T10:00:00+00:00",
            approvals_required=2,
            reasons=[gateway_pb2.Reason(code="tier.dual", message="<b>why</b>", rule="r")],
        ),
        "operation": "update",
        "patient_id": "p1",
        "agent_id": "scribe-agent",
        "approver_roles": ["prescriber"],
        "seconds_to_expiry": 600,
        "resource_json": json.dumps(
            {"resourceType": "Patient", "id": "p1", "name": [{"text": "<script>x()</script>"}]}
        ),
        "fields": ["name"],
        "evidence_refs": ["DocumentReference/<i>e</i>"],
        "current_resource_json": json.dumps(
            {"resourceType": "Patient", "id": "p1", "name": [{"text": "Jane Roe"}], "active": True}
        ),
    }
    fields.update(changes)
    return review_pb2.ReviewItem(**fields)


def _render(item: review_pb2.ReviewItem, reviewer: Reviewer = ALICE) -> str:
    pages = ReviewPages(Web(CONFIG))
    session = Session(reviewer, "Alice <Admin>", "t", "csrf-1", 0, 1e12, 0)
    return bytes(pages.proposal_page(session, item).body).decode()


def test_a_proposal_page_escapes_everything_from_the_proposal() -> None:
    page = _render(_item())
    assert "<script>x()</script>" not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page
    assert "<i>e</i>" not in page
    assert "&lt;i&gt;e&lt;/i&gt;" in page
    assert "<b>why</b>" not in page
    assert "&lt;b&gt;why&lt;/b&gt;" in page
    assert "Alice &lt;Admin&gt;" in page


def test_an_update_page_shows_the_charts_current_values_beside_the_proposed_ones() -> None:
    page = _render(_item())
    assert "Jane Roe" in page
    assert "The chart's current version beside" in page
    unread = _render(_item(current_resource_json="", current_resource_note="EHR timeout"))
    assert "could not be read (EHR timeout)" in unread
    assert "Jane Roe" not in unread
    create = _render(_item(operation="create", current_resource_json=""))
    assert "New resource: the chart has no current version" in create


def test_the_approve_button_follows_the_review_apis_answer() -> None:
    assert 'id="approve"' in _render(_item(may_approve=True))
    refused = _render(_item(may_approve=False))
    assert 'id="approve"' not in refused
    assert "Only others may approve (needs role: prescriber)" in refused


def test_what_a_reviewer_may_do_is_explained() -> None:
    now = datetime(2026, 11, 30, 10, 5, tzinfo=UTC)
    mine = review_pb2.Approval(issuer=ALICE.issuer, subject="alice", roles=["clinician"])
    cases = {
        "You may approve": _item(may_approve=True),
        "You approved; waiting for another reviewer": _item(
            approver_roles=["clinician"], approvals=[mine]
        ),
        "Only others may approve (needs role: prescriber)": _item(),
        "Its approval window has ended": _item(approver_roles=["clinician"], seconds_to_expiry=0),
    }
    for standing, item in cases.items():
        view = item_view(item, ALICE, now)
        assert view.standing == standing
        assert view.age == "5 min 0 s"
    decided = _item()
    decided.proposal.state = gateway_pb2.PROPOSAL_STATE_ACCEPTED
    assert item_view(decided, ALICE, now).standing == "Decided: accepted"


def test_durations_read_plainly() -> None:
    assert [duration(s) for s in (0, 59, 61, 3600, 90061, -5)] == [
        "0 s",
        "59 s",
        "1 min 1 s",
        "1 h 0 min",
        "1 d 1 h",
        "0 s",
    ]


def test_every_template_compiles_with_autoescaping_on() -> None:
    env = templates()
    assert env.autoescape is True
    for name in env.list_templates():
        env.get_template(name)


def test_without_the_browser_the_browser_tests_skip_and_say_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.console import browser

    monkeypatch.setattr(browser, "_executable", lambda names, fallback: None)
    with pytest.raises(pytest.skip.Exception, match="chromium and chromium-driver are not"):
        browser.start_chromium(tmp_path)
