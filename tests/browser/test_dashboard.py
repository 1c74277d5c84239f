"""The release dashboard rendered by Chromium while the pipeline runs on the local stack."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.browser.conftest import APP, REPO_ROOT, Shop, copy_to, keep_screenshot, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def text_of(driver: Any, selector: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, selector).text)
    except (NoSuchElementException, StaleElementReferenceException):  # not (yet) on the page, or just swapped
        return ""


def attribute_of(driver: Any, selector: str, name: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name)
    except (NoSuchElementException, StaleElementReferenceException):  # not (yet) on the page, or just swapped
        return None


def live_version(driver: Any, environment: str) -> str | None:
    return attribute_of(driver, f"#live-{APP}-{environment} .live-version", "data-version")


def test_the_page_follows_a_release_phase_by_phase_until_it_is_live(shop: Shop, browser: Any) -> None:
    first = shop.publish("staging", "feat: the first release")
    assert shop.wait_status(first, "live", "failed") == "live"

    browser.get(shop.dashboard_url)
    assert live_version(browser, "staging") == "1.0.0"

    second = shop.publish("staging", "feat: a second release")
    in_flight = f'#inflight-{APP}-staging article[data-deployment="{second}"]'
    seen: list[str] = []

    def went_live() -> bool:
        # No reload: the page's own script swaps the parts in as the records change.
        phase = attribute_of(browser, in_flight, "data-phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
            if phase == "cooling_down":
                keep_screenshot(browser, "dashboard-in-flight.png")
        return live_version(browser, "staging") == "1.1.0"

    wait_for(went_live, 120, "the page to show 1.1.0 live", interval=0.05)
    assert seen, "the page never showed the release in flight"
    # Live and still baking (where the environment has a bake window) is still in flight.
    wait_for(
        lambda: text_of(browser, f"#inflight-{APP}-staging").endswith("Nothing in flight."),
        60,
        "the release to leave the in-flight list",
    )
    order = ["queued", "provisioning", "cooling_down", "switching", "bake"]
    assert all(phase in order for phase in seen), seen
    assert [order.index(phase) for phase in seen] == sorted(order.index(phase) for phase in seen), seen
    assert "cooling_down" in seen, f"the cool-down (seconds long) was never shown: {seen}"
    # Both builds said their commit was made 10 minutes before publishing.
    lead_time = text_of(browser, f'#keys-{APP}-staging dd[data-key="Lead time for changes"]')
    assert lead_time.startswith("10 min") and lead_time.endswith("elite"), lead_time


def test_the_page_shows_the_four_keys_history_and_actions_with_labels(shop: Shop, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(shop.dashboard_url)
    keys = text_of(browser, f"#keys-{APP}-staging")
    for label in ("Deployment frequency", "Lead time for changes", "Change failure rate", "Time to restore"):
        assert label in keys
    assert browser.find_element(By.CSS_SELECTOR, f"#keys-{APP}-staging svg.chart").is_displayed()
    history = text_of(browser, f"#history-{APP}-staging")
    assert "feat: the first release" in history and "live" in history
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input:not([type=hidden]), select')]"
        ".filter(e => e.labels.length === 0).map(e => e.outerHTML);"
    )
    assert unlabelled == []
    # Every action is reachable from the keyboard: Tab reaches the rollback button.
    target = browser.find_element(By.CSS_SELECTOR, f"#rollback-{APP}-staging button")
    body = browser.find_element(By.TAG_NAME, "body")
    reached = False
    for _ in range(80):
        body.send_keys("\ue004")  # Tab
        if browser.switch_to.active_element == target:
            reached = True
            break
    assert reached, "the rollback button is not reachable with Tab"


def test_a_rollback_through_the_page_with_a_local_identity_goes_live(shop: Shop, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(shop.dashboard_url)
    current = live_version(browser, "staging")
    assert current, "nothing live on staging: the test before this one publishes two releases"
    browser.find_element(By.CSS_SELECTOR, "#identity-title").click()  # opens the identity panel
    browser.find_element(By.CSS_SELECTOR, "#local-sign-in button").click()
    wait_for(lambda: "Acting as" in text_of(browser, "#identity-status"), 10, "the local sign-in")
    form = f"#rollback-{APP}-staging form"
    Select(browser.find_element(By.CSS_SELECTOR, f"{form} select")).select_by_value("")
    browser.find_element(By.CSS_SELECTOR, f"{form} input[name=reason]").send_keys("browser test")
    browser.find_element(By.CSS_SELECTOR, f"{form} button").click()
    wait_for(lambda: "Rollback accepted" in text_of(browser, "#action-result"), 20, "the rollback's 202")
    wait_for(lambda: live_version(browser, "staging") not in (None, current), 120, "the rollback to go live")
    keep_screenshot(browser, "dashboard-after-rollback.png")


def test_without_javascript_the_page_is_readable(shop: Shop, browser_without_javascript: Any) -> None:
    browser_without_javascript.get(shop.dashboard_url)
    assert live_version(browser_without_javascript, "staging")
    assert "Change failure rate" in text_of(browser_without_javascript, f"#keys-{APP}-staging")
    # Without the script the token field of each action form is shown, to paste a token into.
    field = f"#rollback-{APP}-staging .token-field"
    assert text_of(browser_without_javascript, field).startswith("Identity token")


def test_approving_a_waiting_deployment_through_the_page_takes_it_live(shop: Shop, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    production = shop.stack.config.environment(APP, "production") if shop.stack.config else None
    # The local pipeline file makes production wait for an approver: this test relies on it.
    assert production is not None and not production.auto_deploy and production.approvers
    waiting = shop.publish("production", "feat: needs a second pair of eyes")
    assert shop.wait_status(waiting, "awaiting_approval", "live", "failed") == "awaiting_approval"

    browser.get(shop.dashboard_url)
    awaiting = f'#approvals-{APP}-production article[data-deployment="{waiting}"]'
    wait_for(lambda: text_of(browser, awaiting), 10, "the waiting deployment on the page")
    # The README's picture: staging after a release, a rollback and their metrics; production waiting.
    screenshot = keep_screenshot(browser, "dashboard-awaiting-approval.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        copy_to(screenshot, REPO_ROOT / "docs" / "dashboard.png")
    browser.find_element(By.CSS_SELECTOR, "#identity-title").click()
    email = browser.find_element(By.CSS_SELECTOR, "#sign-in-email")
    email.clear()
    email.send_keys("approver@hello.local")
    browser.find_element(By.CSS_SELECTOR, "#local-sign-in button").click()
    wait_for(lambda: "approver@hello.local" in text_of(browser, "#identity-status"), 10, "the local sign-in")
    browser.find_element(By.CSS_SELECTOR, f"{awaiting} input[name=reason]").send_keys("looks good")
    browser.find_element(By.CSS_SELECTOR, f"{awaiting} button.approve").click()
    outcome = wait_for(lambda: text_of(browser, "#action-result"), 20, "the approval's answer")
    assert outcome.startswith("Approved"), outcome
    # The page follows it from the approval to live, without a reload.
    wait_for(lambda: live_version(browser, "production"), 120, "the approved deployment to go live")
    assert shop.status(waiting) == "live"
    history = text_of(browser, f"#history-{APP}-production")
    assert "approver@hello.local" in history, history
    # The rollback form appears now that something is live, without a reload.
    wait_for(lambda: text_of(browser, f"#rollback-{APP}-production button"), 10, "production's rollback form")
    keep_screenshot(browser, "dashboard-after-approval.png")
