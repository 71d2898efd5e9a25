"""Issue 12, item 5: the webhooks a write-back makes the tools send start no run (the inbox keeps them, marked as our
echo), and a person's edit still does. The sandbox sends signed webhooks to a receiver as in the demo."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone

import dagster as dg
import pytest

from sync_pipelines import automation
from sync_pipelines.definitions import build_definitions
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.sandbox.server import serving
from sync_pipelines.sandbox.webhooks import DEFAULT_SECRETS
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.webhooks import SECRET_ENV, build_webhook_app, read_inbox

TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")
ECHO = "the echo of our own write-back"


@contextmanager
def demo(tmp_path, monkeypatch, url: str):
    """The sandbox sending its webhooks to the receiver, as `scripts/demo.sh` runs them, and the definitions."""
    secrets = {tool: DEFAULT_SECRETS[tool] for tool in SECRET_ENV}
    with serving(build_webhook_app(url, secrets), name="receiver") as receiver, \
            running_sandbox(csv_dir=tmp_path / "csv", webhook_url=receiver) as box:
        for key, value in {**sandbox_env(box.url, tmp_path / "csv"), "SYNC_WAREHOUSE_URL": url}.items():
            monkeypatch.setenv(key, value)
        yield box, build_definitions(load_stack())


def delivered(box, url: str, at_least: int = 1, timeout: float = 60) -> list[dict]:
    """The inbox once every webhook the sandbox queued has been posted (its count steady for a second)."""
    deadline, count = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        time.sleep(1)
        rows = read_inbox(url, include_processed=True, limit=100_000)
        if len(rows) == count and len(rows) >= at_least and box.state.webhooks._queue.empty():
            return rows
        count = len(rows)
    raise AssertionError(f"webhooks still arriving after {timeout} s")


def runs_until_idle(defs: dg.Definitions, instance: dg.DagsterInstance, limit: int = 10) -> list[dg.RunRequest]:
    """Tick the inbox sensor as the daemon does, running each request it makes, until a tick requests nothing
    (a tick holding back events received a moment ago is followed by another once they are old enough)."""
    sensor, job = defs.get_sensor_def("webhook_inbox_sensor"), defs.resolve_job_def("nightly_sync")
    cursor, requested = None, []
    for _ in range(limit):
        context = dg.build_sensor_context(cursor=cursor, definitions=defs, instance=instance)
        result = sensor(context)
        cursor = context.cursor
        if isinstance(result, dg.SkipReason) and "wait a tick" in result.skip_message:
            time.sleep(automation.ECHO_SETTLE.total_seconds())
            continue
        if not isinstance(result, dg.RunRequest):
            return requested
        requested.append(result)
        assert job.execute_in_process(partition_key=result.partition_key, asset_selection=result.asset_selection,
                                      instance=instance, tags=result.tags).success
    raise AssertionError(f"the sensor still requests runs after {limit}")


@pytest.mark.parametrize("echo_detection", [True, False], ids=["echo_detection", "before"])
def test_a_write_backs_webhooks_start_no_run_and_a_real_edit_does(tmp_path, monkeypatch, echo_detection):
    """Without echo detection (as before this change) the first sync's write-backs came back as a run that wrote
    nothing; with it, none. An email edited in Zendesk afterwards still starts a run that carries it on."""
    if not echo_detection:
        monkeypatch.setattr(automation, "echoes", lambda *args: set())
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with demo(tmp_path, monkeypatch, url) as (box, defs), dg.instance_for_test() as instance:
        first = defs.resolve_job_def("nightly_sync").execute_in_process(partition_key=TODAY, instance=instance)
        written = sum(e.materialization.metadata["written"].value for e in first.get_asset_materialization_events()
                      if "written" in e.materialization.metadata)
        inbox = delivered(box, url)
        requested = runs_until_idle(defs, instance)
        rows = read_inbox(url, include_processed=True, limit=100_000)
        echoes = sum(row["skipped"] == ECHO for row in rows)
        companies = sum(row["object_type"] == "company" for row in inbox)  # HubSpot's, of our company writes
        print(f"\nfirst sync wrote {written} records; {len(inbox)} webhook events came back ({companies} about "
              f"companies); the sensor then requested {len(requested)} run(s) (echo detection "
              f"{'on' if echo_detection else 'off'}), {echoes} events marked as our echo")
        if not echo_detection:
            assert requested, "the baseline: echoes start a run"
            return
        assert requested == [] and echoes == len(inbox) > 100 and companies > 0

        warehouse = Warehouse(load_stack(), url)
        crosswalk = warehouse.read_table("crosswalk_contacts")
        zendesk = crosswalk[crosswalk["_source"] == "zendesk"]
        person = crosswalk[(crosswalk["_source"] == "hubspot") & crosswalk["entity_id"].isin(zendesk["entity_id"])]
        user = zendesk[zendesk["entity_id"] == person["entity_id"].iloc[0]]["_source_id"].iloc[0]
        box.mutate("zendesk", "users", user, {"email": "moved.by.hand@example.org"})
        edited = delivered(box, url, at_least=len(inbox) + 1)
        [run] = runs_until_idle(defs, instance)
        assert run.tags["sync_pipelines/events"] == str(len(edited) - len(inbox))
        ledger = warehouse.read_table("writeback_ledger")
        assert ((ledger["tool"] == "hubspot") & (ledger["source_id"] == person["_source_id"].iloc[0])
                & (ledger["field"] == "email") & (ledger["value"] == "moved.by.hand@example.org")).any()
        delivered(box, url, at_least=len(edited) + 1)  # HubSpot's and Salesforce's echo of that run: no run
        assert runs_until_idle(defs, instance) == []
        warehouse.engine.dispose()
