"""Reliability under faults (issue: performance and scale, item 5): one test per scenario, against the sandbox.

Each test turns one fault on (through the sandbox's `/_sandbox/faults` knobs, a revoked credential, a real
`requests` adapter that drops connections, or SIGKILL of a real process), then checks against the sandbox's ground
truth that the run either completed or failed with an error naming the tool, that a rerun without the fault
converges, and that every record landed exactly once with the cursor at the newest landed change. The outcomes are
tabled in docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from sync_pipelines.connectors import AuthError, ConnectorError, ResponseError, connect
from sync_pipelines.definitions import build_definitions
from sync_pipelines.extract import Extraction, extract_stream
from sync_pipelines.sandbox import RunningSandbox, running_sandbox, sandbox_env
from sync_pipelines.stack import Stack, load_stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

SCALE = 0.3  # about 240 HubSpot contacts: dozens of pages at the small page sizes below, in well under a second
TOOL, STREAM = "hubspot", "contacts"
TOKEN_ENV = "HUBSPOT_ACCESS_TOKEN"
TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")
FAST_BACKOFF = 0.01  # retries back off from 10 ms instead of 500 ms; Retry-After is still obeyed as sent
# Stripe's list endpoints omit deleted objects, and a Jira search never finds a deleted issue: a full read cannot see
# them
LISTS_HIDE_DELETED = {"stripe", "jira"}


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A sandbox at a small scale, with its credentials and URLs in the environment like a real deployment."""
    with running_sandbox(scale=SCALE, csv_dir=tmp_path / "csv") as sandbox:
        for key, value in sandbox_env(sandbox.url, tmp_path / "csv").items():
            monkeypatch.setenv(key, value)
        yield sandbox


@pytest.fixture
def stack(box: RunningSandbox) -> Stack:
    return load_stack()


@pytest.fixture
def warehouse(stack: Stack, tmp_path: Path) -> Warehouse:
    return Warehouse(stack, f"sqlite:///{tmp_path / 'warehouse.db'}")


def hubspot(box: RunningSandbox, stack: Stack, **options: Any):
    """The HubSpot connector the Dagster resource would build (token from the environment, the stack's rate
    limit), with a short backoff so that retries cost milliseconds."""
    return connect("hubspot", box.base_url(TOOL), {"access_token": os.environ[TOKEN_ENV]}, name=TOOL,
                   credential_env={"access_token": TOKEN_ENV}, rate_limit=stack.tools[TOOL].rate_limit.model_dump(),
                   backoff_base=FAST_BACKOFF, **options)


def extract(box: RunningSandbox, stack: Stack, warehouse: Warehouse, **options: Any) -> Extraction:
    return extract_stream(stack, warehouse, hubspot(box, stack, **options), TOOL, STREAM)


def landed(warehouse: Warehouse, tool: str = TOOL, stream: str = STREAM) -> pd.DataFrame:
    return warehouse.read_table(landing_table_name(tool, stream))


def assert_exactly_once(box: RunningSandbox, warehouse: Warehouse, tool: str = TOOL, stream: str = STREAM) -> None:
    """Every record the tool holds landed once (none lost, none twice) and the cursor sits on the newest change."""
    truth = {str(r["id"]) for r in box.truth("records", tool=tool, stream=stream)
             if r["id"] is not None and not (r["deleted"] and tool in LISTS_HIDE_DELETED)}
    rows = landed(warehouse, tool, stream)
    assert rows["_source_id"].is_unique, "a record landed twice"
    assert set(rows["_source_id"]) == truth, (f"lost {sorted(truth - set(rows['_source_id']))[:5]}, "
                                              f"unknown {sorted(set(rows['_source_id']) - truth)[:5]}")
    assert warehouse.cursor(tool, stream) == rows["_updated_at"].max().to_pydatetime()


def total(box: RunningSandbox, tool: str = TOOL, stream: str = STREAM) -> int:
    return box.truth()["streams"][f"{tool}/{stream}"]["total"]


def after_responses(count: int, action) -> dict[str, Any]:
    """Connector options whose real `requests.Session` runs `action` once, after `count` responses: a fault
    that starts in the middle of a run."""
    session = requests.Session()
    seen = {"n": 0}

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        seen["n"] += 1
        if seen["n"] == count:
            action()
        return response

    session.hooks["response"].append(hook)
    return {"session": session}


class DroppingAdapter(requests.adapters.HTTPAdapter):
    """A transport that resets every `every`-th connection before sending, as a flaky proxy or NAT would."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every, self.sent, self.dropped = every, 0, 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent += 1
        if self.sent % self.every == 0:
            self.dropped += 1
            raise requests.ConnectionError("Connection reset by peer (injected)")
        return super().send(request, **kwargs)


# 1. 429 storm -------------------------------------------------------------------------------------------------

def test_429_storm_is_ridden_out_by_obeying_retry_after(box, stack, warehouse):
    box.set_faults({TOOL: {"rate_limits": {"requests": 3, "per_seconds": 1}, "page_size": 25}})
    waits: list[float] = []

    def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    result = extract(box, stack, warehouse, sleep=recorded_sleep)
    server = box.stats()[TOOL]
    assert server["throttled"] > 0 and result.stats["throttled"] == server["throttled"]
    assert result.stats["retries"] == server["throttled"]  # each 429 retried once, after waiting
    assert sum(w >= 1 for w in waits) >= server["throttled"]  # Retry-After: 1, not the 10 ms backoff
    assert_exactly_once(box, warehouse)


# 2. 5xx burst ---------------------------------------------------------------------------------------------------

def test_burst_of_server_errors_is_retried_and_lands_every_record_once(box, stack, warehouse):
    box.set_faults({TOOL: {"error_rate": 0.3, "page_size": 10}})
    result = extract(box, stack, warehouse, max_retries=8)
    server_errors = box.stats()[TOOL]["server_errors"]
    assert server_errors >= 5 and result.stats["retries"] == server_errors
    assert_exactly_once(box, warehouse)


def test_nightly_sync_survives_server_errors_on_three_tools(box, stack, tmp_path, monkeypatch):
    """The whole job with the product's own retry settings: 30% of HubSpot, Salesforce and Stripe calls fail."""
    url = f"sqlite:///{tmp_path / 'job.db'}"
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", url)
    box.set_faults({tool: {"error_rate": 0.3, "page_size": 10} for tool in ("hubspot", "salesforce", "stripe")})
    job = build_definitions(load_stack()).resolve_job_def("nightly_sync")
    assert job.execute_in_process(partition_key=TODAY, raise_on_error=False).success
    stats = box.stats()
    assert all(stats[tool]["server_errors"] > 0 for tool in ("hubspot", "salesforce", "stripe"))
    warehouse = Warehouse(stack, url)
    for tool, stream in (("hubspot", "contacts"), ("salesforce", "Contact"), ("stripe", "customers")):
        assert_exactly_once(box, warehouse, tool, stream)


# 3. Timeouts ----------------------------------------------------------------------------------------------------

def test_tool_slower_than_the_timeout_fails_naming_the_tool_and_a_rerun_converges(box, stack, warehouse,
                                                                                  monkeypatch):
    monkeypatch.setattr("sync_pipelines.extract.CHUNK_RECORDS", 50)
    box.set_faults({TOOL: {"page_size": 10}})
    slow_down = after_responses(12, lambda: box.set_faults({TOOL: {"latency_ms": 600}}))
    with pytest.raises(ConnectorError, match=r"^hubspot: .*ReadTimeout") as failure:
        extract(box, stack, warehouse, timeout=0.3, max_retries=2, **slow_down)
    assert failure.value.tool == TOOL
    partial = landed(warehouse)
    assert 0 < len(partial) < total(box) and partial["_source_id"].is_unique  # whole chunks, committed before the stall
    assert warehouse.cursor(TOOL, STREAM) is None  # the cursor did not move past what was never read

    box.set_faults({TOOL: {"latency_ms": None}})
    assert extract(box, stack, warehouse).mode == "full"
    assert_exactly_once(box, warehouse)


# 4. Reset connections --------------------------------------------------------------------------------------------

def test_connections_reset_mid_read_are_retried_without_loss_or_duplicates(box, stack, warehouse):
    box.set_faults({TOOL: {"page_size": 10}})
    session = requests.Session()
    adapter = DroppingAdapter(every=4)
    session.mount("http://", adapter)
    result = extract(box, stack, warehouse, session=session)
    assert adapter.dropped >= 5 and result.stats["retries"] == adapter.dropped
    assert_exactly_once(box, warehouse)


# 5. Malformed pages ----------------------------------------------------------------------------------------------

def test_malformed_pages_are_refetched_or_fail_naming_the_tool_and_a_rerun_converges(box, stack, warehouse):
    box.set_faults({TOOL: {"malformed_page_rate": 0.3, "page_size": 10}})
    try:
        result = extract(box, stack, warehouse)
    except ResponseError as exc:  # three truncated bodies in a row for one page: give up, clearly
        assert str(exc).startswith("hubspot: ") and "not JSON" in str(exc)
        assert warehouse.cursor(TOOL, STREAM) is None
    else:
        assert result.stats["retries"] > 0
    box.set_faults({TOOL: {"malformed_page_rate": None}})
    extract(box, stack, warehouse)
    assert_exactly_once(box, warehouse)


# 6. Schema drift -------------------------------------------------------------------------------------------------

def test_schema_drift_add_drop_retype_does_not_crash_the_extraction(box, stack, warehouse):
    box.set_faults({TOOL: {"schema_drift": ["add", "drop", "retype"], "page_size": 50}})
    extract(box, stack, warehouse)
    assert_exactly_once(box, warehouse)
    raw = landed(warehouse)["_raw"]
    assert raw.str.contains('"sandbox_drift_field":"surprise"').all()  # the payload is kept whole for audit


def _phones_after_drift(box: RunningSandbox, tmp_path: Path, monkeypatch, drift: dict[str, Any]):
    """A clean nightly run, then drift on and a few records edited so the next incremental run reads them.
    Returns the golden phones before and after, by source record, and the edited records."""
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", url)
    stack = load_stack()
    job = build_definitions(stack).resolve_job_def("nightly_sync")
    assert job.execute_in_process(partition_key=TODAY, raise_on_error=False).success
    warehouse = Warehouse(stack, url)

    def golden_phone_by_record() -> pd.Series:
        crosswalk = warehouse.read_table("crosswalk_contacts")
        golden = warehouse.read_table("golden_contacts")[["entity_id", "phone"]]
        return crosswalk.merge(golden, on="entity_id").set_index(["_source", "_source_id"])["phone"]

    before = golden_phone_by_record()
    box.set_faults(drift)
    edited = []
    for tool, stream, field in (("hubspot", "contacts", "jobtitle"), ("salesforce", "Contact", "Title")):
        rows = landed(warehouse, tool, stream)
        for source_id in rows.loc[~rows["_deleted"], "_source_id"].head(20):
            box.mutate(tool, stream, source_id if tool == "salesforce" else int(source_id), {field: "Drift Tester"})
            edited.append((tool, source_id))
    result = job.execute_in_process(partition_key=TODAY, raise_on_error=False)
    return result, before, golden_phone_by_record(), edited, warehouse


def test_a_field_dropped_by_the_api_does_not_erase_golden_values(box, tmp_path, monkeypatch):
    result, before, after, edited, _ = _phones_after_drift(
        box, tmp_path, monkeypatch, {"salesforce": {"schema_drift": {"drop": "Phone"}}})
    assert result.success
    keys = [k for k in edited if k[0] == "salesforce" and pd.notna(before.get(k))]
    assert keys and all(after[k] == before[k] for k in keys)


def test_a_retyped_field_is_rejected_not_turned_into_a_golden_value(box, tmp_path, monkeypatch):
    """HubSpot sends `phone` as a number (null becomes 0): the run must go on, without a golden phone "0"."""
    url = f"sqlite:///{tmp_path / 'retype.db'}"
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", url)
    box.set_faults({"hubspot": {"schema_drift": {"retype": "phone"}}})
    stack = load_stack()
    assert build_definitions(stack).resolve_job_def("nightly_sync").execute_in_process(
        partition_key=TODAY, raise_on_error=False).success
    golden = Warehouse(stack, url).read_table("golden_contacts")
    assert not golden["phone"].isin(["0"]).any()


# 7. Expired token ------------------------------------------------------------------------------------------------

def test_token_revoked_mid_run_fails_once_naming_the_env_var_and_the_new_token_converges(box, stack, warehouse,
                                                                                         monkeypatch):
    monkeypatch.setattr("sync_pipelines.extract.CHUNK_RECORDS", 50)
    box.set_faults({TOOL: {"page_size": 10}})
    revoke = after_responses(10, lambda: box.state.credentials.update({TOOL: "rotated-hubspot-token"}))
    with pytest.raises(AuthError) as failure:
        extract(box, stack, warehouse, **revoke)
    message = str(failure.value)
    assert message.startswith("hubspot: ") and TOKEN_ENV in message and os.environ[TOKEN_ENV] not in message
    assert box.stats()[TOOL]["unauthorized"] == 1  # no retry storm against a dead token
    assert warehouse.cursor(TOOL, STREAM) is None

    monkeypatch.setenv(TOKEN_ENV, "rotated-hubspot-token")
    extract(box, stack, warehouse)
    assert_exactly_once(box, warehouse)


def test_nightly_sync_with_an_expired_token_fails_naming_the_env_var(box, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'job.db'}")
    monkeypatch.setenv(TOKEN_ENV, "expired-hubspot-token")
    job = build_definitions(load_stack()).resolve_job_def("nightly_sync")
    result = job.execute_in_process(partition_key=TODAY, raise_on_error=False)
    assert not result.success
    failures = {e.step_key: e.event_specific_data.error.message for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"}
    hubspot_failures = [m for step, m in failures.items() if step.startswith("hubspot")]
    assert hubspot_failures and all(TOKEN_ENV in m and "expired-hubspot-token" not in m for m in hubspot_failures)
    assert all(not step.startswith(("salesforce", "zendesk", "stripe")) for step in failures)
    assert box.stats()[TOOL]["unauthorized"] == len(hubspot_failures)  # one refused call per stream, no retries


# 8. kill -9 ------------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    from sync_pipelines import extract, warehouse as wh
    from sync_pipelines.connectors import connect
    from sync_pipelines.stack import load_stack
    extract.CHUNK_RECORDS = 20
    if os.environ["HOLD_IN_LOAD"] == "1":  # stall inside the second chunk's transaction, after its rows are written
        upsert, calls = wh.Warehouse._upsert, []
        def held(self, conn, table, frame):
            count = upsert(self, conn, table, frame)
            calls.append(table.name)
            if calls.count(table.name) == 2 and table.name.startswith("stg_"):
                print("loading", flush=True)
                import time; time.sleep(60)
            return count
        wh.Warehouse._upsert = held
    stack = load_stack()
    connector = connect("hubspot", os.environ["SANDBOX_URL"] + "/hubspot",
                        {"access_token": os.environ["HUBSPOT_ACCESS_TOKEN"]}, name="hubspot")
    extract.extract_stream(stack, wh.Warehouse(stack, os.environ["SYNC_WAREHOUSE_URL"]), connector,
                           "hubspot", "contacts")
""")


def _spawn(url: str, hold_in_load: bool) -> subprocess.Popen:
    env = {**os.environ, "SYNC_WAREHOUSE_URL": url, "HOLD_IN_LOAD": "1" if hold_in_load else "0"}
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])


def _kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL


def test_kill_9_during_extraction_then_rerun_lands_exactly_once(box, stack, warehouse):
    box.set_faults({TOOL: {"page_size": 5, "latency_ms": 40}})  # about 50 pages, two seconds of reading
    child = _spawn(str(warehouse.engine.url), hold_in_load=False)
    deadline = time.monotonic() + 30
    while warehouse.count(landing_table_name(TOOL, STREAM)) == 0:
        assert child.poll() is None and time.monotonic() < deadline, "the child ended before landing anything"
        time.sleep(0.05)
    _kill(child)
    partial = landed(warehouse)
    assert 0 < len(partial) < total(box) and warehouse.cursor(TOOL, STREAM) is None

    box.set_faults({TOOL: {"latency_ms": None}})
    assert extract(box, stack, warehouse).mode == "full"
    assert_exactly_once(box, warehouse)


def test_kill_9_inside_a_load_transaction_rolls_it_back_and_rerun_lands_exactly_once(box, stack, warehouse_url):
    warehouse = Warehouse(stack, warehouse_url)
    box.set_faults({TOOL: {"page_size": 10}})
    child = _spawn(warehouse_url, hold_in_load=True)
    assert child.stdout.readline().strip() == "loading"
    _kill(child)
    assert len(landed(warehouse)) == 20  # the first chunk only: the second was written but never committed
    assert warehouse.cursor(TOOL, STREAM) is None

    extract(box, stack, warehouse)
    assert_exactly_once(box, warehouse)


# 9. Overlapping runs ---------------------------------------------------------------------------------------------

def test_two_overlapping_extractions_of_one_stream_land_each_record_once(box, stack, warehouse_url, monkeypatch):
    monkeypatch.setattr("sync_pipelines.extract.CHUNK_RECORDS", 30)
    box.set_faults({TOOL: {"page_size": 10, "latency_ms": 5}})
    warehouses = [Warehouse(stack, warehouse_url) for _ in range(2)]  # two runs: an engine each
    outcomes: dict[int, Any] = {}
    start = threading.Barrier(2, timeout=30)

    def run(n: int) -> None:
        start.wait()
        try:
            outcomes[n] = extract(box, stack, warehouses[n])
        except Exception as exc:  # recorded, then judged below: a clean failure must name its cause
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(o, Extraction) for o in outcomes.values()) and len(outcomes) == 2, outcomes
    assert all(o.mode == "full" and o.records_read == total(box) for o in outcomes.values())
    assert_exactly_once(box, warehouses[0])


def test_two_runs_opening_a_fresh_sqlite_warehouse_at_once_both_succeed(stack, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    start = threading.Barrier(2, timeout=30)
    errors: list[Exception] = []

    def open_warehouse() -> None:
        start.wait()
        try:
            Warehouse(stack, url)
        except Exception as exc:  # judged below
            errors.append(exc)

    threads = [threading.Thread(target=open_warehouse) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
