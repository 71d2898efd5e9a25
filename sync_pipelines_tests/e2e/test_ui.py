"""The Dagster UI in headless Chromium (Debian's, never a downloaded browser), as a first visit sees it: the global
asset lineage reads as data flow with whole labels, and a failed quality check renders. Their screenshots go to a
temporary folder, or, with SYNC_UPDATE_SCREENSHOTS=1, to docs/screenshots/ for the README (a test run leaves the work
tree as it found it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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
                  "--window-size=1920,1600")
README_SCREENSHOTS = REPO / "docs" / "screenshots"
RENDER_TIMEOUT_S = 30
# Upstream to downstream: each tool's extraction, then core, then what goes back to the tools.
FLOW = ({"extract_"}, {"core"}, {"writeback", "actions"})
# The graph's nodes (groups, assets) as drawn: the label shown, the name its tooltip holds and its box on screen.
GRAPH_NODES_JS = """return Array.from(document.querySelectorAll('svg foreignObject')).map(node => {
  const box = node.getBoundingClientRect(), named = node.querySelector('[data-tooltip]');
  return {label: named ? named.textContent.trim() : '', name: named ? named.getAttribute('data-tooltip') : '',
          x: box.x, width: box.width};
}).filter(node => node.width > 0 && node.label);"""


@pytest.fixture(scope="module")
def browser(services: Services, synced: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Chromium on the UI, past its first-visit community dialog, with the UI's default preferences."""
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
        try:  # the dialog opens a second after the first page has loaded, which can take a while on a busy machine
            WebDriverWait(driver, RENDER_TIMEOUT_S).until(expected_conditions.element_to_be_clickable(
                (By.XPATH, "//button[normalize-space()='Skip']"))).click()
        except TimeoutException:
            pass  # this instance has already been greeted
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


def _flow_rank(group: str) -> int | None:
    return next((rank for rank, names in enumerate(FLOW) if any(group.startswith(name) for name in names)), None)


def _label(node: dict) -> str:
    return node["label"]


def _truncated(nodes: list[dict]) -> list[str]:
    """The labels drawn cut short of the name they stand for."""
    return [f"{node['label']} ({node['name']})" for node in nodes
            if "…" in node["label"] or node["label"] != node["name"]]


def _graph_nodes(browser: WebDriver, ready: Callable[[set[str]], object], what: str) -> list[dict]:
    """The graph's nodes once their labels are ``ready`` (anything true)."""
    try:
        return WebDriverWait(browser, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
            lambda driver: (nodes := driver.execute_script(GRAPH_NODES_JS)) and ready(set(map(_label, nodes)))
            and nodes)
    except TimeoutException:
        raise AssertionError(f"{browser.current_url} never drew {what}; it drew "
                             f"{sorted(map(_label, browser.execute_script(GRAPH_NODES_JS)))}") from None


def test_the_default_lineage_reads_left_to_right_from_extraction_to_core_to_write_back(services: Services,
                                                                                      browser: WebDriver,
                                                                                      screenshots: Path):
    nodes = services.dagster.query("{ assetNodes { groupName } }")["assetNodes"]
    groups = {node["groupName"] for node in nodes}
    assert {"core", "writeback", "actions"} <= groups and all(_flow_rank(group) is not None for group in groups)
    browser.get(f"{services.web_url}/asset-groups")  # what the Lineage link opens: every group collapsed
    drawn = _graph_nodes(browser, lambda labels: groups <= labels, f"every group {sorted(groups)}")
    left = {node["label"]: node["x"] for node in drawn if node["label"] in groups}
    right = {node["label"]: node["x"] + node["width"] for node in drawn if node["label"] in groups}
    for upstream in groups:
        for downstream in (g for g in groups if _flow_rank(g) > _flow_rank(upstream)):
            assert right[upstream] < left[downstream], f"{upstream} is not left of {downstream}: {left}"
    assert not _truncated(drawn), f"truncated labels: {_truncated(drawn)}"
    WebDriverWait(browser, RENDER_TIMEOUT_S, poll_frequency=0.5).until(  # the groups' statuses, for the screenshot
        lambda driver: "fetching statuses" not in driver.find_element(By.TAG_NAME, "body").text)
    path = _screenshot(browser, screenshots, "asset-graph.png")
    print(f"\ndefault lineage: {len(groups)} groups, left to right "
          f"{' → '.join(sorted(left, key=left.get))}; saved {path} ({path.stat().st_size} bytes)")


def test_each_group_expanded_shows_its_assets_with_whole_labels(services: Services, browser: WebDriver):
    nodes = services.dagster.query("{ assetNodes { groupName assetKey { path } } }")["assetNodes"]
    by_group: dict[str, set[str]] = {}
    for node in nodes:
        by_group.setdefault(node["groupName"], set()).add(node["assetKey"]["path"][-1])
    longest = max((label for labels in by_group.values() for label in labels), key=len)
    seen: set[str] = set()
    for group in sorted(by_group, key=_flow_rank):
        browser.get(f"{services.web_url}/asset-groups?{urlencode({'expanded': f'global@global:{group}'})}")
        # nodes are drawn once in view: a big group's farthest ones may be off screen
        drawn = _graph_nodes(browser, by_group[group].intersection, f"an asset of {group}")
        assert not _truncated(drawn), f"{group}: truncated labels {_truncated(drawn)}"
        seen |= set(map(_label, drawn)) & by_group[group]
    print(f"\n{len(by_group)} groups expanded one by one: {len(seen)} asset labels drawn, none truncated (the "
          f"longest label: {longest!r}, {len(longest)} characters)")


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
