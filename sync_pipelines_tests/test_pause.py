"""Issue 12, item 6: a paused integration's schedules, webhook runs, write-backs and actions do nothing, saying why;
the pause lives in the warehouse, and the first run after resume writes what was held back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import sqlalchemy as sa
from click.testing import CliRunner

from sync_pipelines.cli import main
from sync_pipelines.definitions import build_definitions
from sync_pipelines.pause import TABLE, pause, pauses, resume
from sync_pipelines.reports import catalog_markdown
from sync_pipelines.webhooks import _insert_ignoring_duplicates, inbox, read_inbox

CONTACTS = "crm_contacts_everywhere"


def test_pause_of_an_unknown_integration_names_it_lists_the_known_ones_and_writes_nothing(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", url)
    for command in ("pause", "resume"):
        result = CliRunner().invoke(main, [command, "crm_contact", "--reason", "x"][:2 if command == "resume" else 4])
        assert result.exit_code == 2
        assert "'crm_contact'" in result.output and CONTACTS in result.output and "invoicing" in result.output
    assert not (tmp_path / "w.db").exists()


def test_a_pause_survives_restarts_and_shows_in_the_cli_and_catalog(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", url)
    result = CliRunner().invoke(main, ["pause", CONTACTS, "--reason", "clobbers hand edits", "--by", "ana"])
    assert result.exit_code == 0 and "paused by ana" in result.output and "hubspot contacts" in result.output
    with sa.create_engine(url).connect() as conn:  # in the warehouse, read back by any later process
        assert conn.execute(sa.text(f"SELECT integration, paused_by, reason FROM {TABLE}")).all() == [
            (CONTACTS, "ana", "clobbers hand edits")]
    assert "PAUSED" in CliRunner().invoke(main, ["catalog"]).output.split(f"{CONTACTS}")[1].splitlines()[0]
    result = CliRunner().invoke(main, ["resume", CONTACTS])
    assert result.exit_code == 0 and "resumed" in result.output and pauses(url) == {}
    assert "PAUSED" not in CliRunner().invoke(main, ["catalog"]).output


def _hubspot_event(object_id: str) -> dict:
    payload = {"eventId": 1, "subscriptionType": "contact.propertyChange", "objectId": int(object_id),
               "propertyName": "jobtitle", "propertyValue": "Edited By Hand"}
    return {"tool": "hubspot", "event_id": "1", "object_type": "contact", "object_id": object_id,
            "received_at": datetime.now(timezone.utc) - timedelta(minutes=1), "payload": json.dumps(payload)}


def test_a_paused_integration_writes_nothing_on_schedule_or_webhook_and_resume_catches_up(sync):
    first, written = sync.run()
    assert first.success and sum(written.values()) > 0
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    hubspot = crosswalk[crosswalk["_source"] == "hubspot"]
    entity = crosswalk[(crosswalk["_source"] == "salesforce") & crosswalk["entity_id"].isin(hubspot["entity_id"])]
    sync.box.mutate("salesforce", "Contact", entity["_source_id"].iloc[0], {"Title": "Chief Sync Officer"})
    pause(sync.url, sync.stack, CONTACTS, by="test", reason="checking a bad mapping")

    defs = build_definitions(sync.stack)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc),
                                            repository_def=defs.get_repository_def())
        [request] = defs.get_schedule_def("nightly_sync_schedule").evaluate_tick(context).run_requests
        scheduled = sync.job.execute_in_process(partition_key=request.partition_key, instance=instance)
    held = {"/".join(e.asset_key.path): e.materialization.metadata
            for e in scheduled.get_asset_materialization_events()
            if "written" in e.materialization.metadata and e.asset_key.path[-1] == "contacts_writeback"}
    assert scheduled.success and {asset: meta["written"].value for asset, meta in held.items()} == {
        f"{dest.tool}/contacts_writeback": 0 for dest in sync.stack.destinations if dest.entity == "contacts"}
    assert all("paused by test" in meta["paused"].value for meta in held.values())

    inbox.create(sync.warehouse.engine, checkfirst=True)
    _insert_ignoring_duplicates(sync.warehouse.engine, [_hubspot_event(hubspot["_source_id"].iloc[0])])
    sensor = defs.get_sensor_def("webhook_inbox_sensor")
    tick = sensor(dg.build_sensor_context(definitions=defs))
    assert isinstance(tick, dg.SkipReason) and f"paused: {CONTACTS}" in tick.skip_message
    assert [row["skipped"] for row in read_inbox(sync.url, include_processed=True)] == [f"paused: {CONTACTS}"]

    resume(sync.url, sync.stack, CONTACTS)
    caught_up, written = sync.run()
    assert caught_up.success and written["hubspot/contacts_writeback"] == 1  # the edit held back while paused


def test_an_integration_schedule_of_a_paused_integration_skips_saying_why(tmp_path, monkeypatch):
    import yaml

    from sync_pipelines.stack import DEFAULT_STACK, load_stack

    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["integrations"][0]["trigger"] = {"schedule": "*/15 * * * *"}
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    stack = load_stack(tmp_path / "stack.yaml")
    defs = build_definitions(stack)
    schedule = defs.get_schedule_def(f"{CONTACTS}_schedule")
    pause(stack.warehouse.url, stack, CONTACTS, by="ana", reason="bad mapping")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc),
                                            repository_def=defs.get_repository_def())
        skipped = schedule.evaluate_tick(context)
    assert not skipped.run_requests and "paused by ana" in skipped.skip_message and "bad mapping" in skipped.skip_message
    assert f"{CONTACTS} — score" in catalog_markdown(stack, {}) and "PAUSED" in catalog_markdown(stack)
