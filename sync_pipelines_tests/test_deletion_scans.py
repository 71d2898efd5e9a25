"""Deletion scans of the streams whose tool sends no deletion marker (Asana tasks, the ERP's CSV export): on SQLite
and on the real PostgreSQL, with a scripted connector, then through the nightly job against the sandbox."""

from datetime import datetime, timedelta, timezone

import pytest
import requests

from sync_pipelines.connectors.asana import AsanaConnector
from sync_pipelines.extract import extract_stream, scan_name
from sync_pipelines.pipeline import stage
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse

STACK = load_stack()
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class ScriptedTasks:
    """Asana-shaped tasks; ``listed`` stands for what a listing returns now (all tasks unless set)."""

    def __init__(self, count):
        self.tasks = {str(1200 + i): {"gid": str(1200 + i), "name": f"Task {i}", "completed": False,
                                      "modified_at": (T0 + timedelta(minutes=i)).isoformat()} for i in range(count)}
        self.listed, self.listings, self.stats = None, 0, {}

    def read(self, stream, since=None):
        return iter(list(self.tasks.values()))

    def list_ids(self, stream, key):
        self.listings += 1
        return list(self.tasks) if self.listed is None else self.listed


@pytest.fixture
def warehouse(warehouse_url):
    return Warehouse(STACK, warehouse_url)


def landed(warehouse):
    return warehouse.read_table("stg_asana_tasks").set_index("_source_id")


def test_a_task_no_longer_listed_is_deleted_once_the_scan_is_due(warehouse):
    tasks = ScriptedTasks(10)
    first = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0)
    assert first.scan.ran and (first.scan.listed, first.scan.deleted, tasks.listings) == (10, 0, 0)  # the read listed
    stage(STACK, warehouse, "tasks")
    del tasks.tasks["1203"]

    early = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0 + timedelta(hours=23))
    assert not early.scan.ran and tasks.listings == 0 and not landed(warehouse)["_deleted"].any()

    due = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0 + timedelta(days=1))
    assert due.scan.ran and (due.scan.listed, due.scan.landed, due.scan.deleted) == (9, 10, 1)
    rows = landed(warehouse)
    assert rows.loc["1203", "_deleted"] and rows["_deleted"].sum() == 1
    assert rows.loc["1203", "_landed_batch"] == rows["_landed_batch"].max()  # a landing of its own, for staging
    staged = stage(STACK, warehouse, "tasks")
    assert not staged.full and staged.rows == 9
    assert "1203" not in set(warehouse.read_table("staged_tasks")["_source_id"])
    assert warehouse.watermark(scan_name("asana", "tasks"))["deleted"] == 1


def test_a_scan_seeing_half_the_ids_is_refused_and_deletes_nothing(warehouse):
    tasks = ScriptedTasks(10)
    extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0)
    tasks.listed = list(tasks.tasks)[:5]  # a partial listing: half the tasks
    refused = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0 + timedelta(days=1))
    assert refused.scan.refused and (refused.scan.unlisted, refused.scan.deleted) == (5, 0)
    assert not landed(warehouse)["_deleted"].any()
    later = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0 + timedelta(days=1, hours=1))
    assert not later.scan.ran and later.scan.refused  # the check keeps failing until the next scan
    tasks.listed = None
    again = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0 + timedelta(days=2))
    assert again.scan.ran and not again.scan.refused


def test_a_task_landed_while_the_listing_runs_is_not_taken_for_a_deleted_one(warehouse):
    """Another run may land a task created after the listing started (a webhook run): the listing cannot hold it,
    and it must stay live."""
    tasks = ScriptedTasks(10)
    extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0)
    newcomer = ScriptedTasks(11)
    newcomer.tasks = {"1210": newcomer.tasks["1210"]}
    listing = tasks.list_ids

    def list_while_another_run_lands(stream, key):
        extract_stream(STACK, warehouse, newcomer, "asana", "tasks", now=T0)  # its scan is not due
        return listing(stream, key)

    tasks.list_ids = list_while_another_run_lands
    scan = extract_stream(STACK, warehouse, tasks, "asana", "tasks", now=T0 + timedelta(days=1)).scan
    assert (scan.landed, scan.deleted) == (10, 0) and not landed(warehouse).loc["1210", "_deleted"]


def _make_due(sync, *streams):
    """As if a day had passed since each stream's last scan."""
    with sync.warehouse.transaction() as conn:
        for tool, stream in streams:
            state = sync.warehouse.watermark(scan_name(tool, stream))
            at = datetime.fromisoformat(state["at"]) - timedelta(days=1)
            sync.warehouse.save_watermark(conn, scan_name(tool, stream), {**state, "at": at.isoformat()})


def _scan_results(result, tool, stream):
    [materialization] = [e.materialization for e in result.get_asset_materialization_events()
                         if e.asset_key.path == [tool, stream]]
    [check] = [e for e in result.get_asset_check_evaluations()
               if e.asset_key.path == [tool, stream] and e.check_name == "deletion_scan"]
    return {k: v.value for k, v in materialization.metadata.items() if k.startswith("scan_")}, check


def test_a_task_removed_from_asana_and_a_row_removed_from_the_csv_are_deleted_within_one_run(
        sync_on_each_warehouse, monkeypatch):
    sync = sync_on_each_warehouse
    assert sync.run()[0].success
    box, warehouse = sync.box, sync.warehouse
    erp_staged = (warehouse.read_table("staged_contacts")["_source"] == "legacy_erp").sum()
    task = next(r["id"] for r in box.truth("records", tool="asana", stream="tasks")
                if not r["deleted"] and not r["invalid"])
    provenance = warehouse.read_table("provenance_contacts")
    customer = provenance.loc[provenance["tool"] == "legacy_erp", "source_id"].iloc[0]  # a golden record's source
    response = requests.delete(f"{box.base_url('asana')}/api/1.0/tasks/{task}",
                               headers={"Authorization": "Bearer sandbox-asana-token"}, timeout=10)
    assert response.status_code == 200 and response.json() == {"data": {}}
    box.mutate("legacy_erp", "customers", customer, {"deleted": True})  # the next export leaves it out

    result, _ = sync.run()  # within a day of the first: no scan is due, nothing is deleted
    assert _scan_results(result, "asana", "tasks")[0]["scan_skipped_not_due"] == 1
    _make_due(sync, ("asana", "tasks"), ("legacy_erp", "customers"))
    result, _ = sync.run()
    assert result.success
    for tool, stream, record in (("asana", "tasks", task), ("legacy_erp", "customers", customer)):
        figures, check = _scan_results(result, tool, stream)
        assert figures["scan_marked_deleted"] == 1 and check.passed, (tool, figures)
        rows = warehouse.read_table(f"stg_{tool}_{stream}").set_index("_source_id")
        assert rows.loc[str(record), "_deleted"] and rows["_deleted"].sum() == 1
    staged = warehouse.read_table("staged_contacts")  # tasks have no golden records: their landing is the end
    assert str(customer) not in set(staged.loc[staged["_source"] == "legacy_erp", "_source_id"])
    assert (staged["_source"] == "legacy_erp").sum() == erp_staged - 1
    provenance = warehouse.read_table("provenance_contacts")
    golden = warehouse.read_table("golden_contacts").set_index("entity_id")
    held = provenance[(provenance["tool"] == "legacy_erp") & (provenance["source_id"] == str(customer))]
    # no live golden field comes from it; a golden record it was the only member of is kept, deleted
    assert golden.loc[held["entity_id"].unique(), "_deleted"].all()

    # a listing that misses half the tasks (an API returning one project of two) is refused: 0 deletions, the
    # check fails, and Slack hears of it
    listed = box.truth("records", tool="asana", stream="tasks")
    half = [r["id"] for r in listed if not r["deleted"]][::2]
    monkeypatch.setattr(AsanaConnector, "_list_ids", lambda self, stream, key: half)
    _make_due(sync, ("asana", "tasks"))
    result, _ = sync.run()
    figures, check = _scan_results(result, "asana", "tasks")
    assert result.success and not check.passed and check.severity.value == "ERROR"
    assert figures["scan_marked_deleted"] == 0 and figures["scan_ids_listed"] == len(half)
    assert warehouse.read_table("stg_asana_tasks")["_deleted"].sum() == 1
    messages = box._control("GET", "/_sandbox/slack/messages")
    assert any("deletion scan refused: asana/tasks" in str(m) for m in messages)
