"""The console over plain HTTP against the real processes: sign-in, cookies, headers, CSRF, escaping, sign-out.

These need no browser, so they run wherever the stack runs; test_browser.py repeats the
reviewer's journeys in Chromium.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from chartgate.v1 import gateway_pb2
from console.security import CONTENT_SECURITY_POLICY
from sidecar.client import ChartgateClient
from tests.console.support import (
    Site,
    csrf_token,
    lab_draft,
    medication_order,
    sign_in,
    signed_in,
)

pytestmark = pytest.mark.timeout(120)


def test_sign_in_sets_a_strict_httponly_session_cookie_and_pages_carry_the_security_headers(
    site: Site,
) -> None:
    http = httpx.Client(base_url=site.console_url, follow_redirects=False)
    login = http.get("/login", params={"next": "/queue"})
    assert login.status_code == 303
    # The sign-in attempt's cookie is Lax: the issuer's redirect back is a cross-site navigation.
    attempt_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in attempt_cookie
    assert "SameSite=lax" in attempt_cookie
    query = parse_qs(urlsplit(login.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["nonce"][0]
    assert query["state"][0]
    assert query["redirect_uri"] == [f"{site.console_url}/callback"]

    client = sign_in(site.console_url, site.issuer_url, "alice")
    cookie = next(c for c in client.cookies.jar if c.name == "chartgate-session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert not cookie.secure  # loopback over http: a Secure cookie would never be sent back
    assert cookie.path == "/"
    page = client.get("/queue")
    assert page.status_code == 200
    for response in (page, client.get("/proposals/no-such-proposal"), client.get("/nowhere")):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
    static = client.get("/static/console.js")
    assert static.status_code == 200
    assert static.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert static.headers["x-content-type-options"] == "nosniff"
    # No inline script or style anywhere in a page: the CSP would block it anyway.
    assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
    assert "style=" not in page.text
    assert "<style" not in page.text


def test_the_session_cookie_names_the_strict_same_site_policy(site: Site) -> None:
    http = httpx.Client(base_url=site.console_url, follow_redirects=False)
    login = http.get("/login", params={"next": "/queue"})
    page = httpx.get(login.headers["location"])
    fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page.text))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    answer = httpx.post(f"{site.issuer_url}/authorize", data={**fields, "user": "bob"})
    callback = http.get(answer.headers["location"])
    assert callback.status_code == 200
    set_cookie = [v for k, v in callback.headers.multi_items() if k == "set-cookie"]
    session = next(v for v in set_cookie if v.startswith("chartgate-session="))
    assert "HttpOnly" in session
    assert "SameSite=strict" in session
    assert "Secure" not in session
    # A page, not a redirect, carries the browser on (see console/app.py, callback).
    assert '<meta http-equiv="refresh" content="0;url=/queue">' in callback.text
    # The same response cannot be used twice: the attempt and the code are spent.
    again = http.get(answer.headers["location"])
    assert again.status_code == 400


def test_a_form_post_without_the_right_csrf_token_or_from_another_origin_is_refused(
    site: Site,
) -> None:
    pid = site.propose(lab_draft(88)).proposal_id
    http = sign_in(site.console_url, site.issuer_url, "alice")
    page = http.get(f"/proposals/{pid}")
    token = csrf_token(page.text)
    payload = re.search(r'name="payload_sha256" value="([0-9a-f]{64})"', page.text)
    assert payload
    approve = f"/proposals/{pid}/approve"
    form = {"payload_sha256": payload.group(1)}
    no_token = http.post(approve, data=form)
    assert no_token.status_code == 403
    assert "security token is missing or wrong" in no_token.text
    wrong = http.post(approve, data={**form, "csrf_token": token[:-2] + "xx"})
    assert wrong.status_code == 403
    foreign = http.post(
        approve, data={**form, "csrf_token": token}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    cross_site = http.post(
        approve, data={**form, "csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    repeated = http.post(
        approve,
        content=f"csrf_token={token}&csrf_token={token}&payload_sha256={payload.group(1)}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400
    assert site.written("Observation", pid) == 0
    assert "Approvals: 0 of 1" in http.get(f"/proposals/{pid}").text
    # With the token, from this console: approved and written.
    done = http.post(approve, data={**form, "csrf_token": token})
    assert done.status_code == 303
    assert site.written("Observation", pid) == 1
    history = http.get(f"/proposals/{pid}/history").text
    assert "<dt>✓ EHR delivery</dt><dd>stored in the EHR as Observation/" in history
    assert "<dt>✓ Approval</dt><dd>1 approval(s) of 1 required</dd>" in history


def test_clinical_text_is_escaped_in_every_page_that_shows_it(site: Site) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    # Identifiers (encounter, versions, evidence references) are refused by the sidecar's
    # request validation when they hold markup; clinical text is free text and arrives as is.
    pid = site.propose(lab_draft(91, text=hostile)).proposal_id
    http = sign_in(site.console_url, site.issuer_url, "alice")
    for path in (f"/proposals/{pid}", f"/proposals/{pid}/amend"):
        text = http.get(path).text
        assert "<script>alert" not in text, path
        assert "<img src=x" not in text, path
        assert "&lt;script&gt;alert(" in text, path
        assert "&lt;img src=x" in text, path


def test_signed_out_pages_send_the_browser_to_sign_in_and_posts_do_nothing(site: Site) -> None:
    http = httpx.Client(base_url=site.console_url, follow_redirects=False)
    page = http.get("/proposals/abc", params={"x": "1"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fproposals%2Fabc%3Fx%3D1"
    post = http.post("/proposals/abc/approve", data={"csrf_token": "x", "payload_sha256": "0"})
    assert post.status_code == 401
    # A callback this browser did not start (no attempt cookie): refused, no session.
    forged = http.get("/callback", params={"code": "c", "state": "s", "iss": site.issuer_url})
    assert forged.status_code == 400
    assert "does not match a sign-in started in this browser" in forged.text
    assert "chartgate-session" not in http.cookies
    # An open redirect after sign-in is not possible: `next` must be a local path. Signed in
    # through such a link, the browser is sent to the queue, never to the other site.
    for hostile in ("//evil.example/x", "https://evil.example/x", "/\\evil.example"):
        browser = httpx.Client(base_url=site.console_url, follow_redirects=False, timeout=30.0)
        page = signed_in(browser, site.issuer_url, "alice", f"/login?next={quote(hostile)}")
        assert "evil.example" not in page.text
        assert 'url=/queue"' in page.text
        browser.close()
    # And a local path is kept, so the test above can fail.
    page = signed_in(
        httpx.Client(base_url=site.console_url, follow_redirects=False, timeout=30.0),
        site.issuer_url,
        "alice",
        f"/login?next={quote('/proposals/abc')}",
    )
    assert 'url=/proposals/abc"' in page.text


def test_a_request_for_another_host_name_is_not_served(site: Site) -> None:
    """DNS rebinding: a page on another name that resolves here gets nothing."""
    response = httpx.get(f"{site.console_url}/healthz", headers={"Host": "evil.example"})
    assert response.status_code == 400


def test_signing_out_ends_the_session(site: Site) -> None:
    http = sign_in(site.console_url, site.issuer_url, "bob")
    token = csrf_token(http.get("/queue").text)
    assert http.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    out = http.post("/logout", data={"csrf_token": token})
    assert out.status_code == 200
    assert "Signed out" in out.text
    assert http.get("/queue").status_code == 303


def test_history_shows_the_lifecycle_and_search_finds_by_patient_agent_and_reviewer(
    site: Site,
) -> None:
    pid = site.propose(lab_draft(93), encounter_id="enc-search-1").proposal_id
    carol_order = site.propose(
        {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}
                ]
            },
            "subject": {"reference": "Patient/demo-patient-1"},
        },
        encounter_id="enc-search-2",
    ).proposal_id
    carol = sign_in(site.console_url, site.issuer_url, "carol")
    page = carol.get(f"/proposals/{carol_order}").text
    sha = re.search(r'name="payload_sha256" value="([0-9a-f]{64})"', page)
    assert sha
    carol.post(
        f"/proposals/{carol_order}/approve",
        data={"csrf_token": csrf_token(page), "payload_sha256": sha.group(1)},
    )
    alice = sign_in(site.console_url, site.issuer_url, "alice")
    by_encounter = alice.get("/search", params={"encounter": "enc-search-1"}).text
    assert pid in by_encounter
    assert carol_order not in by_encounter
    # The search reads the audit index: decided proposals are found too.
    assert "Searched: every proposal in the audit log" in by_encounter
    written = site.propose(
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/demo-patient-1"},
            "valueQuantity": {"value": 61, "unit": "/min"},
        },
        encounter_id="enc-search-3",
        confidence=0.97,
    )
    assert written.state == gateway_pb2.PROPOSAL_STATE_ACCEPTED
    assert written.proposal_id in alice.get("/search", params={"encounter": "enc-search-3"}).text
    by_reviewer = alice.get("/search", params={"reviewer": "carol"}).text
    assert carol_order in by_reviewer
    assert pid not in by_reviewer
    by_agent = alice.get("/search", params={"agent": "scribe-agent", "patient": "demo-patient-1"})
    assert pid in by_agent.text
    assert carol_order in by_agent.text
    jump = alice.get("/search", params={"proposal": pid})
    assert jump.status_code == 303
    assert jump.headers["location"] == f"/proposals/{pid}/history"
    history = alice.get(jump.headers["location"]).text
    for phase in ("Suggestion", "Decision"):
        assert f"<td>{phase}</td>" in history
    assert 'id="receipt"' in history  # the decision's audit receipt, with its checkpoint
    order_history = alice.get(f"/proposals/{carol_order}/history").text
    assert "<td>Approval</td><td>approved</td>" in order_history
    assert "carol" in order_history


def test_a_rejection_needs_a_structured_reason_and_reaches_the_agent(site: Site) -> None:
    pid = site.propose(lab_draft(140)).proposal_id
    http = sign_in(site.console_url, site.issuer_url, "alice")
    token = csrf_token(http.get(f"/proposals/{pid}").text)
    reject = f"/proposals/{pid}/reject"
    no_reason = http.post(reject, data={"csrf_token": token, "code": "", "message": "x"})
    assert no_reason.status_code == 400
    done = http.post(
        reject,
        data={
            "csrf_token": token,
            "code": "not_supported_by_evidence",
            "message": "the report says 104",
        },
    )
    assert done.status_code == 303
    page = http.get(f"/proposals/{pid}").text
    assert "Rejected (Not supported by the evidence)" in page
    assert "review.not_supported_by_evidence" in page  # the reason now on the proposal
    assert 'id="reject-form"' not in page  # decided: no actions left
    with ChartgateClient(site.stack.sidecar_target) as agent:
        seen = agent.get(pid)
    assert seen.reasons[-1].message == "the report says 104"
    assert site.written("Observation", pid) == 0


def test_an_amendment_that_does_not_validate_comes_back_with_the_reasons(site: Site) -> None:
    pid = site.propose(lab_draft(66)).proposal_id
    http = sign_in(site.console_url, site.issuer_url, "alice")
    token = csrf_token(http.get(f"/proposals/{pid}/amend").text)
    bad = '{"resourceType": "Observation", "status": "not-a-status"}'
    answer = http.post(f"/proposals/{pid}/amend", data={"csrf_token": token, "resource_json": bad})
    assert answer.status_code == 400
    assert "The amendment was refused" in answer.text
    assert "&#34;not-a-status&#34;" in answer.text  # the reviewer's text, kept to fix
    assert "Approvals: 0 of 1" in http.get(f"/proposals/{pid}").text  # still pending


def test_the_queue_filters_by_tier_patient_and_resource_type(site: Site) -> None:
    lab = site.propose(lab_draft(71)).proposal_id
    order = site.propose(medication_order()).proposal_id
    http = sign_in(site.console_url, site.issuer_url, "carol")
    dual = http.get("/queue", params={"tier": "dual_approval"}).text
    assert order in dual
    assert lab not in dual
    observations = http.get("/queue", params={"resource_type": "Observation"}).text
    assert lab in observations
    assert order not in observations
    assert http.get("/queue", params={"patient": "someone-else"}).text.count("None.") == 2
    aged = http.get("/queue", params={"min_age_minutes": "60"}).text
    assert lab not in aged
    for odd in ("²", "9" * 5000, "-1", "abc"):  # ignored, never an error
        assert http.get("/queue", params={"min_age_minutes": odd}).status_code == 200
