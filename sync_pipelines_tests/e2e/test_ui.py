"""The Dagster UI in headless Chromium (Debian's, never a downloaded browser): the global asset lineage and a failed
quality check render. Their screenshots go to a temporary folder, or, with SYNC_UPDATE_SCREENSHOTS=1, to
docs/screenshots/ for the README (a test run leaves the work tree as it found it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from sync_pipelines_tests.e2e.conftest import REPO, Services

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--window-size=1920,1080")
README_SCREENSHOTS = REPO / "docs" / "screenshots"
RENDER_TIMEOUT_S = 30
# The UI keeps these preferences in local storage: a top-down graph fits a landscape screenshot, and a collapsed
# navigation leaves the page to the content.
UI_PREFERENCES = {"asset-graph-direction": json.dumps("vertical"), "dagster-nav-collapsed": "true"}


@pytest.fixture(scope="module")
def browser(services: Services, synced: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Chromium on the UI, past its first-visit community dialog, with the preferences above."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install chromium chromium-driver (scripts/test.sh does)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(services.web_url + "/asset-groups")
        try:  # the dialog opens a second after the first page loads
            WebDriverWait(driver, 5).until(expected_conditions.element_to_be_clickable(
                (By.XPATH, "//button[normalize-space()='Skip']"))).click()
        except TimeoutException:
            pass  # this instance has already been greeted
        for key, value in UI_PREFERENCES.items():
            driver.execute_script("window.localStorage.setItem(arguments[0], arguments[1])", key, value)
        yield driver
    finally:
        driver.quit()


def _wait_for_text(browser: WebDriver, expected: set[str]) -> str:
    """The page's text once it shows every expected string; fails naming the ones that never appeared."""
    def shown(driver: WebDriver) -> str | None:
        text = driver.find_element(By.TAG_NAME, "body").text
        return text if all(item in text for item in expected) else None

    try:
        return WebDriverWait(browser, RENDER_TIMEOUT_S, poll_frequency=0.5).until(shown)
    except TimeoutException:
        text = browser.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{browser.current_url} never showed {sorted(i for i in expected if i not in text)}; "
                             f"it shows:\n{text[:2000]}") from None


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("SYNC_UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return README_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def _screenshot(browser: WebDriver, folder: Path, name: str) -> Path:
    path = folder / name
    assert browser.save_screenshot(str(path)), f"could not save {path}"
    return path


def test_the_global_asset_lineage_shows_every_group_and_the_golden_path(services: Services, browser: WebDriver,
                                                                       screenshots: Path):
    nodes = services.dagster.query("{ assetNodes { groupName } }")["assetNodes"]
    groups = sorted({node["groupName"] for node in nodes})
    expanded = ",".join(f"global@global:{group}" for group in groups)  # the UI's own query parameter
    browser.get(f"{services.web_url}/asset-groups?{urlencode({'expanded': expanded})}")
    _wait_for_text(browser, {"Global asset lineage", *groups, "staged_contacts", "golden_contacts",
                             "contacts_writeback"})
    write_backs = browser.find_elements(By.XPATH, "//*[normalize-space()='contacts_writeback']")
    assert len(write_backs) >= 3, "a write-back node per destination tool"
    # Nodes are drawn before their status arrives; a materialized node turns green once it has.
    WebDriverWait(browser, RENDER_TIMEOUT_S, poll_frequency=0.5).until(expected_conditions.presence_of_element_located(
        (By.XPATH, "//*[contains(@style, '--minimal-bg') and contains(@style, 'green')]"
                   "[.//*[normalize-space()='golden_contacts']]")))
    path = _screenshot(browser, screenshots, "asset-graph.png")
    print(f"\nasset graph: {len(groups)} groups expanded, saved {path} ({path.stat().st_size} bytes)")


def test_the_staged_contacts_checks_tab_shows_the_failed_quality_checks(services: Services, browser: WebDriver,
                                                                       screenshots: Path):
    checks = services.dagster.query("""
        { assetNodeOrError(assetKey: {path: ["staged_contacts"]}) {
            ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name } } } } } }"""
    )["assetNodeOrError"]["assetChecksOrError"]["checks"]
    names = {check["name"] for check in checks}
    assert "hubspot_quality" in names
    browser.get(f"{services.web_url}/assets/staged_contacts?view=checks")
    text = _wait_for_text(browser, {"staged_contacts", "Checks", *names, "Failed", "Evaluation result",
                                    "failure_rate"})
    path = _screenshot(browser, screenshots, "failed-check.png")
    print(f"\nchecks tab: {len(names)} checks, {text.count('Failed')} 'Failed' labels, "
          f"saved {path} ({path.stat().st_size} bytes)")
