"""The webhook inbox sensor: every accepted event triggers a run, even one committed out of id order, and events
are marked processed only once the run request for them is submitted."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import dagster as dg
import pytest
from sqlalchemy.engine import Engine

from sync_pipelines.definitions import build_definitions
from sync_pipelines.stack import load_stack
from sync_pipelines.webhooks import _insert_ignoring_duplicates, _make_engine, inbox, read_inbox

STRIPE_CUSTOMERS = dg.AssetKey(["stripe", "customers"])  # the extraction a Stripe event makes the sensor run


@pytest.fixture
def sensor(warehouse_url, monkeypatch) -> Iterator[tuple[dg.Definitions, dg.SensorDefinition, Engine]]:
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", warehouse_url)
    defs = build_definitions(load_stack())
    engine = _make_engine(warehouse_url)
    inbox.create(engine, checkfirst=True)
    yield defs, defs.get_sensor_def("webhook_inbox_sensor"), engine
    engine.dispose()


def event(tool: str, event_id: str) -> dict[str, Any]:
    return {"tool": tool, "event_id": event_id, "object_type": "customer", "object_id": "1",
            "received_at": datetime.now(timezone.utc) - timedelta(minutes=1), "payload": json.dumps({})}


def tick(sensor, cursor: str | None) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    """One evaluation, as the daemon runs it: the result and the cursor it leaves."""
    defs, definition, _ = sensor
    context = dg.build_sensor_context(cursor=cursor, definitions=defs)
    return definition(context), context.cursor


@contextmanager
def committed_late(engine: Engine, row: dict[str, Any]) -> Iterator[None]:
    """Land `row` as inbox id 1, committed only after the block: on PostgreSQL its INSERT takes id 1 from the
    sequence and its transaction stays open; SQLite has one writer at a time, so it is inserted after the block."""
    if engine.dialect.name == "sqlite":
        yield
        with engine.begin() as conn:
            conn.execute(inbox.insert().values(id=1, **row))
        return
    with engine.connect() as conn, conn.begin():
        conn.execute(inbox.insert().values(row))
        yield


def test_an_event_committed_after_a_higher_id_was_read_still_triggers_a_run(sensor):
    engine = sensor[2]
    with committed_late(engine, event("stripe", "evt_late")):
        _insert_ignoring_duplicates(engine, [{**event("hubspot", "1"), "id": 2}])  # PostgreSQL would give 2 too
        first, cursor = tick(sensor, None)
    assert isinstance(first, dg.RunRequest) and first.tags["sync_pipelines/events"] == "1"
    assert STRIPE_CUSTOMERS not in first.asset_selection

    second, cursor = tick(sensor, cursor)
    assert isinstance(second, dg.RunRequest) and second.tags["sync_pipelines/events"] == "1"
    assert STRIPE_CUSTOMERS in second.asset_selection
    assert second.run_key != first.run_key

    third, _ = tick(sensor, cursor)
    assert isinstance(third, dg.SkipReason) and read_inbox(engine) == []


def test_events_stay_unprocessed_until_their_run_request_is_submitted(sensor):
    """A tick whose request is not submitted leaves no cursor: the same events are requested again under the same
    run key (so Dagster launches them once), and the tick after a submitted one marks them processed."""
    engine = sensor[2]
    _insert_ignoring_duplicates(engine, [event("stripe", "evt_1"), event("zendesk", "zd_1")])
    lost, _ = tick(sensor, None)
    assert len(read_inbox(engine)) == 2
    submitted, cursor = tick(sensor, None)
    assert isinstance(submitted, dg.RunRequest) and submitted.run_key == lost.run_key
    assert submitted.tags["sync_pipelines/events"] == "2"

    after, _ = tick(sensor, cursor)
    assert isinstance(after, dg.SkipReason) and read_inbox(engine) == []
    assert len(read_inbox(engine, include_processed=True)) == 2


def test_events_of_a_tool_the_stack_does_not_read_start_no_run(sensor):
    """An empty asset selection would run the whole job (every write-back and action): skip, and let them go."""
    engine = sensor[2]
    _insert_ignoring_duplicates(engine, [event("shopify", "sh_1")])
    skipped, cursor = tick(sensor, None)
    assert isinstance(skipped, dg.SkipReason) and "shopify" in skipped.skip_message
    after, _ = tick(sensor, cursor)
    assert isinstance(after, dg.SkipReason) and read_inbox(engine) == []


@dg.op
def _breaks() -> None:
    raise RuntimeError("hubspot: GET /crm/v3/objects/contacts failed (HTTP 500)")


@dg.job
def _failing_job() -> None:
    _breaks()


def test_a_failure_alert_waits_out_a_slack_outage_and_is_posted_once_when_slack_is_back(tmp_path, monkeypatch,
                                                                                         capfd):
    """Issue 11, item 9: with Slack unreachable (closed port, then answering 503) each tick tries a few times, then
    fails naming the run, and its cursor stays; the first tick after Slack is back posts the alert, exactly once."""
    import socket

    from sync_pipelines import automation
    from sync_pipelines.sandbox import running_sandbox, sandbox_env

    monkeypatch.setattr(automation, "ALERT_BACKOFF_S", 0.01)
    with running_sandbox(scale=0.05, csv_dir=tmp_path / "csv") as box, dg.instance_for_test() as instance:
        for key, value in sandbox_env(box.url, tmp_path / "csv").items():
            monkeypatch.setenv(key, value)
        webhook = os.environ["SLACK_WEBHOOK_URL"]
        sensor = automation.failure_alert_sensor(load_stack())
        slack = box.state.vendors["slack"]

        def tick(cursor):
            """One evaluation as the daemon runs it: the cursor it stores (none when the tick fails) and the error."""
            context = dg.build_sensor_context(instance=instance, cursor=cursor)
            try:
                return sensor.evaluate_tick(context).cursor, None
            except automation.AlertNotDelivered as exc:
                return cursor, exc

        cursor, _ = tick(None)  # the first tick starts the cursor at the newest run event
        run_id = _failing_job.execute_in_process(instance=instance, raise_on_error=False).run_id

        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{closed.getsockname()[1]}/slack/services/"
                                                    + webhook.split("/services/", 1)[1])
            after, refused = tick(cursor)
        monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook)
        box.set_faults(slack={"error_rate": 1.0})
        box.stats(reset=True)
        after_503, server_errors = tick(after)
        attempts = box.stats()["slack"]["requests"]
        box.set_faults(reset=True)
        delivered, ok = tick(after_503)
        again, _ = tick(delivered)
        tick(cursor)  # a tick whose stored cursor was lost sees the run again
        tags = instance.get_run_by_id(run_id).tags

    for error in (refused, server_errors):
        assert error is not None and run_id in str(error) and "not delivered after 3 attempts" in str(error)
        assert "sandbox-slack-secret" not in str(error)
    assert "ConnectionError" in str(refused) and "(HTTP 50" in str(server_errors)
    assert after == cursor and after_503 == cursor  # the run is not passed while its alert is undelivered
    assert attempts == 3
    logged = [line for line in capfd.readouterr().err.splitlines() if f"alert for run {run_id} was not" in line]
    assert len(logged) == 2 and not any("sandbox-slack-secret" in line for line in logged)  # in the tick's log
    assert ok is None and delivered != cursor and again == delivered
    posted = [m["text"] for m in slack.messages if run_id in m["text"]]
    assert len(posted) == 1 and "_failing_job" in posted[0]
    assert tags[automation.ALERTED_TAG] == "posted"
    print(f"\nalert for run {run_id}: tick 1 (port closed) failed, tick 2 (Slack 503) failed after {attempts} "
          f"posts, tick 3 delivered it; {len(posted)} message after 2 more ticks")
