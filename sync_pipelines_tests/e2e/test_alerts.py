"""A run that fails for real (the tool's API errors on every call) posts exactly one Slack alert linking the run."""

from __future__ import annotations

import time

import pytest
import requests

from sync_pipelines_tests.e2e.conftest import Services, today, wait_for

pytestmark = pytest.mark.e2e

ALERT_BUDGET_S = 60  # the failure sensor ticks every 30 s


def _slack_messages(services: Services) -> list[str]:
    response = requests.get(f"{services.box.url}/_sandbox/slack/messages", timeout=30)
    response.raise_for_status()
    return [message.get("text", "") for message in response.json()]


def _set_faults(services: Services, faults: dict) -> None:
    requests.post(f"{services.box.url}/_sandbox/faults", json=faults, timeout=30).raise_for_status()


def test_a_failed_run_posts_exactly_one_slack_alert_with_its_link(services: Services):
    services.settle()  # no other run may meet the fault
    _set_faults(services, {"hubspot": {"error_rate": 1.0}})
    try:
        run_id = services.dagster.launch_run([["hubspot", "contacts"]], today())
        run = services.dagster.wait_for_run(run_id)
    finally:
        _set_faults(services, {"reset": True})
    assert run["status"] == "FAILURE", run
    link = f"{services.web_url}/runs/{run_id}"
    failed_at = time.monotonic()

    def alerts() -> list[str]:
        return [text for text in _slack_messages(services) if link in text]

    [alert] = wait_for(alerts, ALERT_BUDGET_S, f"a Slack alert linking {link}", interval=1)
    seconds = time.monotonic() - failed_at
    # A duplicate would come from a later evaluation: let the failure sensor tick once more, then count again.
    posted_at = time.time()
    wait_for(lambda: any(t["timestamp"] > posted_at for t in services.dagster.sensor_ticks("slack_on_run_failure")),
             ALERT_BUDGET_S, "another tick of slack_on_run_failure", interval=1)
    assert alerts() == [alert]
    assert "hubspot" in alert and "nightly_sync" in alert
    print(f"\nfailure alert: run {run_id} failed in {run['endTime'] - run['startTime']:.1f} s; "
          f"1 Slack message {seconds:.1f} s after the failure, still 1 after the next sensor tick:\n{alert}")
