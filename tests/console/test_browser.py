"""The console in a real browser (headless Chromium): sign in at the OIDC issuer, review, decide, and check the chart.

Every step goes through the real processes: the dev issuer's sign-in page, the console, the
sidecar's Review API, the adapter and the FHIR store, where each written resource is counted by
the identifier the adapter stamps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from console.devsite import OBS
from tests.console.browser import fresh_profile, page_text, screenshot, start_chromium
from tests.console.support import Site, lab_draft, medication_order

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = fresh_profile()
    driver = start_chromium(profile)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, css: str, timeout: float = 15.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def sign_in(driver: WebDriver, site: Site, user: str) -> None:
    """Sign out whoever was signed in, then sign in as `user` on the issuer's page (a click)."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{site.console_url}/queue")
    # The console sent the browser to the issuer, which asks who is signing in.
    wait_for(driver, f'button[name="user"][value="{user}"]')
    assert driver.current_url.startswith(f"{site.issuer_url}/authorize?")
    driver.find_element(By.CSS_SELECTOR, f'button[name="user"][value="{user}"]').click()
    wait_for(driver, "table#yours")
    assert driver.current_url == f"{site.console_url}/queue"
    assert f"({user})" in driver.find_element(By.CSS_SELECTOR, ".who").text


def open_proposal(driver: WebDriver, site: Site, pid: str, table: str) -> None:
    """Find the proposal in one of the queue's two tables and follow its link."""
    from selenium.webdriver.common.by import By

    driver.get(f"{site.console_url}/queue")
    wait_for(driver, f"table#{table}")
    link = driver.find_element(By.CSS_SELECTOR, f'table#{table} a[href="/proposals/{pid}"]')
    link.click()
    wait_for(driver, "table#diff")


def test_a_reviewer_signs_in_reviews_a_held_lab_draft_and_approves_it_into_the_chart(
    site: Site, browser: WebDriver, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    pid = site.propose(
        lab_draft(97), encounter_id="enc-2026-11-30", evidence_refs=["DocumentReference/lab-7"]
    ).proposal_id
    # A few more waiting, so the queue shows both kinds of rows.
    site.propose(medication_order())
    site.propose(lab_draft(112))
    sign_in(browser, site, "alice")
    queue = browser.find_element(By.CSS_SELECTOR, "table#yours").text
    assert pid in queue
    others = browser.find_element(By.CSS_SELECTOR, "table#others").text
    assert "Only others may approve (needs role: prescriber)" in others
    assert screenshot(browser, "console-queue", tmp_path).stat().st_size > 10_000

    open_proposal(browser, site, pid, "yours")
    text = page_text(browser)
    assert "New resource: the chart has no current version" in text
    value_row = browser.find_element(By.XPATH, '//tr[th[text()="valueQuantity.value"]]')
    assert "written" in (value_row.get_attribute("class") or "")
    assert value_row.text.split() == [
        "valueQuantity.value",
        "(new",
        "resource)",
        "97",
        "✎",
        "written",
        "added",
    ]
    assert "DocumentReference/lab-7" in text
    assert "scribe-2026-10" in text
    assert "p-41" in text
    assert "Approval (one reviewer)" in text
    assert "tier.approval" in text  # the policy's reason code
    assert "No one has approved it yet." in text
    assert screenshot(browser, "console-proposal", tmp_path).stat().st_size > 10_000

    assert site.written("Observation", pid) == 0
    browser.find_element(By.ID, "approve").click()
    wait_for(browser, ".flash-ok")
    assert (
        "Written to the chart as Observation/"
        in browser.find_element(By.CSS_SELECTOR, ".flash").text
    )
    assert site.written("Observation", pid) == 1
    assert browser.find_elements(By.ID, "approve") == []  # decided: nothing left to approve
    # Its history: every phase of its life so far, and the steps recorded.
    browser.find_element(By.LINK_TEXT, "Full history of this proposal").click()
    wait_for(browser, "table#history")
    phases = browser.find_element(By.ID, "phases").text
    assert "Approval\n1 approval(s) of 1 required" in phases
    assert "EHR delivery\nstored in the EHR as Observation/" in phases
    steps = browser.find_element(By.ID, "history").text
    assert "alice" in steps
    screenshot(browser, "console-history", tmp_path)


def test_a_second_reviewer_completes_a_dual_approval(site: Site, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    pid = site.propose(medication_order()).proposal_id
    sign_in(browser, site, "carol")
    open_proposal(browser, site, pid, "yours")
    assert "Dual approval (two reviewers)" in page_text(browser)
    browser.find_element(By.ID, "approve").click()
    wait_for(browser, ".flash-ok")
    assert (
        "Your approval is recorded (1 of 2)" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    )
    assert browser.find_elements(By.ID, "approve") == []
    assert "You approved; waiting for another reviewer" in page_text(browser)
    assert site.written("MedicationRequest", pid) == 0

    sign_in(browser, site, "erin")
    open_proposal(browser, site, pid, "yours")
    approvals = browser.find_element(By.CSS_SELECTOR, "table.approvals").text
    assert "carol" in approvals
    browser.find_element(By.ID, "approve").click()
    wait_for(browser, ".flash-ok")
    assert "Written to the chart as MedicationRequest/" in page_text(browser)
    assert site.written("MedicationRequest", pid) == 1
    approvals = browser.find_element(By.CSS_SELECTOR, "table.approvals").text
    assert "carol" in approvals
    assert "erin" in approvals


def test_a_reviewer_without_the_role_sees_no_approve_button_and_a_forged_post_is_refused(
    site: Site, browser: WebDriver
) -> None:
    from selenium.webdriver.common.by import By

    pid = site.propose(lab_draft(99)).proposal_id
    sign_in(browser, site, "dave")  # a registrar; policy names clinicians for a lab draft
    open_proposal(browser, site, pid, "others")
    assert browser.find_elements(By.ID, "approve") == []
    assert "Only others may approve (needs role: clinician)" in page_text(browser)
    # Forge the approve form the page does not offer, with dave's own valid CSRF token and the
    # payload hash shown on the page: the Review API, not the console, refuses it.
    csrf = browser.find_element(By.CSS_SELECTOR, 'input[name="csrf_token"]').get_attribute("value")
    browser.execute_script(
        """
        const form = document.createElement("form");
        form.method = "post";
        form.action = arguments[0];
        for (const [name, value] of [["csrf_token", arguments[1]], ["payload_sha256", arguments[2]]]) {
          const input = document.createElement("input");
          input.type = "hidden"; input.name = name; input.value = value;
          form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
        """,
        f"/proposals/{pid}/approve",
        csrf,
        browser.find_element(By.CSS_SELECTOR, "details code.mono").get_attribute("textContent"),
    )
    wait_for(browser, ".problem")
    text = page_text(browser)
    assert "Not allowed" in text
    assert "review.forbidden" in text
    assert site.written("Observation", pid) == 0
    # Still waiting for a clinician.
    open_proposal(browser, site, pid, "others")
    assert "Approvals: 0 of 1" in page_text(browser)


def test_an_amendment_is_decided_again_and_shows_its_new_tier(
    site: Site, browser: WebDriver
) -> None:
    from selenium.webdriver.common.by import By

    pid = site.propose(lab_draft(77), confidence=0.97).proposal_id
    sign_in(browser, site, "alice")
    open_proposal(browser, site, pid, "yours")
    browser.find_element(By.ID, "amend-link").click()
    wait_for(browser, "textarea#resource-json")
    edited = lab_draft(77)
    edited["category"] = [{"coding": [{"system": OBS, "code": "vital-signs"}]}]
    edited["status"] = "final"
    area = browser.find_element(By.ID, "resource-json")
    area.clear()
    area.send_keys(json.dumps(edited))
    browser.find_element(By.ID, "submit-amendment").click()
    wait_for(browser, ".flash-ok")
    flash = browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert "tier Autonomous (no review), now accepted" in flash
    assert "/proposals/" in browser.current_url
    assert pid not in browser.current_url
    text = page_text(browser)
    assert f"This is an amendment of {pid}" in text
    assert "Tier: Autonomous (no review)" in text
    amendment = browser.current_url.rsplit("/", 1)[1]
    assert site.written("Observation", amendment) == 1
    assert site.written("Observation", pid) == 0
    browser.get(f"{site.console_url}/proposals/{pid}")
    wait_for(browser, "table#diff")
    assert f"Replaced by the amendment {amendment}" in page_text(browser)


def test_a_proposal_carrying_html_renders_as_text_and_runs_no_script(
    site: Site, browser: WebDriver
) -> None:
    from selenium.webdriver.common.by import By

    hostile = (
        "<script>window.__chartgatePwned = 1</script>"
        '<img src="x" onerror="window.__chartgatePwned = 2"><b>bold</b>'
    )
    pid = site.propose(lab_draft(101, text=hostile)).proposal_id
    sign_in(browser, site, "alice")
    open_proposal(browser, site, pid, "yours")
    row = browser.find_element(By.XPATH, '//tr[th[text()="code.text"]]')
    assert hostile in row.text  # the markup, shown as the characters it is
    assert browser.execute_script("return window.__chartgatePwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main b") == []
    # The whole document has exactly one script: the console's own file.
    sources = [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script")]
    assert sources == [f"{site.console_url}/static/console.js"]
