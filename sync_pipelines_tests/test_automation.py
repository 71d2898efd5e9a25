"""The webhook inbox sensor: every accepted event triggers a run, even one committed out of id order, and events
are marked processed only once the run request for them is submitted."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
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
            "received_at": datetime.now(timezone.utc), "payload": json.dumps({})}


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
