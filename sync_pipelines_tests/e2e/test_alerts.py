"""A run that fails for real (the tool's API errors on every call) posts exactly one Slack alert linking the run, also
when Slack was down at the time."""

from __future__ import annotations

import time

import pytest
import requests

from sync_pipelines_tests.e2e.conftest import LOCATION, REPOSITORY, Services, today, wait_for

pytestmark = pytest.mark.e2e

ALERT_BUDGET_S = 60  # the run-failure sensor ticks every 30 s


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

    wait_for(alerts, ALERT_BUDGET_S, f"a Slack alert linking {link}", interval=1)
    seconds = time.monotonic() - failed_at
    # The sensor posts from its tick; once that tick has ended, everything it was going to send has been sent.
    wait_for(lambda: _tick_ended(services), ALERT_BUDGET_S, "the alerting tick of slack_on_run_failure to end")
    posted = alerts()
    assert len(posted) == 1, posted
    text = posted[0]
    assert "hubspot" in text and "nightly_sync" in text
    print(f"\nfailure alert: run {run_id} failed in {run['endTime'] - run['startTime']:.1f} s; "
          f"exactly 1 Slack message, {seconds:.1f} s after the failure:\n{text}")


def test_an_alert_slack_could_not_take_fails_the_tick_and_is_posted_once_when_slack_is_back(services: Services):
    """Issue 11, item 9: the failed tick names the run in the UI, and the daemon keeps the sensor's cursor before it."""
    services.settle()
    _set_faults(services, {"hubspot": {"error_rate": 1.0}, "slack": {"error_rate": 1.0}})
    try:
        run_id = services.dagster.launch_run([["hubspot", "contacts"]], today())
        assert services.dagster.wait_for_run(run_id)["status"] == "FAILURE"
        _set_faults(services, {"hubspot": {"error_rate": None}})
        wait_for(lambda: _failed_tick_naming(services, run_id), ALERT_BUDGET_S,
                 f"a failed tick of slack_on_run_failure naming run {run_id}", interval=1)
    finally:
        _set_faults(services, {"reset": True})
    link = f"{services.web_url}/runs/{run_id}"
    wait_for(lambda: [t for t in _slack_messages(services) if link in t], ALERT_BUDGET_S,
             f"the Slack alert linking {link} once Slack is back", interval=1)
    wait_for(lambda: _tick_ended(services), ALERT_BUDGET_S, "the alerting tick of slack_on_run_failure to end")
    time.sleep(35)  # one more tick (30 s apart) must not post it again
    assert len([t for t in _slack_messages(services) if link in t]) == 1
    error = _failed_tick_naming(services, run_id)
    assert "not delivered after 3 attempts" in error and "sandbox-slack-secret" not in error
    print(f"\nfailure alert while Slack answered 5xx: the tick failed with {error!r}; posted once Slack was back")


def _failed_tick_naming(services: Services, run_id: str) -> str | None:
    """The error of the latest failed tick of the alert sensor that names the run, if any."""
    data = services.dagster.query("""
        query Ticks($selector: SensorSelector!) {
          sensorOrError(sensorSelector: $selector) {
            ... on Sensor { sensorState { ticks(limit: 20) { status error { message } } } }
          }
        }""", selector={"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                        "sensorName": "slack_on_run_failure"})["sensorOrError"]
    return next((t["error"]["message"] for t in data["sensorState"]["ticks"]
                 if t["status"] == "FAILURE" and t["error"] and run_id in t["error"]["message"]), None)


def _tick_ended(services: Services) -> bool:
    [latest] = services.dagster.sensor_ticks("slack_on_run_failure", limit=1)
    return latest["status"] != "STARTED"
