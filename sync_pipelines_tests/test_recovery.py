"""`kill -9` of `sync-pipelines sync` as a user runs it: a real Dagster instance from the project's dagster.yaml (a
pool of one slot per tool API), the CLI in a process of its own, killed while a step holds its tool's slot. The
next `sync-pipelines sync` must recover the dead run, free its slots and converge: nothing lost, nothing twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest


from sync_pipelines.pipeline import plan_destination
from sync_pipelines.recovery import recover_dead_runs
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse, landing_table_name
from sync_pipelines_tests.test_reliability import assert_exactly_once

PROJECT = Path(__file__).parents[1]
SYNC = [sys.executable, "-c", "from sync_pipelines.cli import main; main()", "sync"]
ACTIONS = {"stripe_api": ("salesforce", "Opportunity", "StageName", "Closed Won", "stage", "closed_won",
                          "stripe/invoices"),
           "asana_api": ("hubspot", "contacts", "lifecyclestage", "customer", "lifecycle_stage", "customer",
                         "asana/tasks")}


class Home:
    """A DAGSTER_HOME holding the project's own dagster.yaml, the sandbox and a warehouse: where a user runs."""

    def __init__(self, path: Path, box, warehouse_url: str):
        self.path, self.box, self.url = path, box, warehouse_url
        shutil.copy(PROJECT / "dagster.yaml", path / "dagster.yaml")
        self.env = {**os.environ, **sandbox_env(box.url, path / "csv"), "SYNC_WAREHOUSE_URL": warehouse_url,
                    "DAGSTER_HOME": str(path)}
        self.stack = load_stack()
        self.warehouse = Warehouse(self.stack, warehouse_url)

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(SYNC, env=self.env, cwd=self.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    def sync(self, timeout: float = 240) -> str:
        process = self.start()
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"sync-pipelines sync did not finish in {timeout:.0f} s (waiting for a slot?):\n{output}")
        assert process.returncode == 0, output
        return output

    def kill_when_held(self, process: subprocess.Popen, pool: str, step: str, ready=lambda: True,
                       timeout: float = 180) -> tuple[str, str]:
        """SIGKILL the sync the moment ``step`` holds a slot of ``pool`` (and ``ready()``): the run it left, and
        what the sync had printed."""
        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + timeout
            while True:
                assert process.poll() is None, f"the sync ended before {step} held {pool}:\n{process.stdout.read()}"
                assert time.monotonic() < deadline, f"{step} never held {pool}"
                claims = instance.event_log_storage.get_concurrency_info(pool).claimed_slots
                held = [claim.run_id for claim in claims if claim.step_key == step]
                if held and ready():
                    break
                time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return held[0], process.stdout.read()

    def totals(self) -> dict[str, int]:
        return {name: stream["total"] for name, stream in self.box.truth()["streams"].items()}


@pytest.fixture
def home(tmp_path, monkeypatch, warehouse_url):
    monkeypatch.chdir(tmp_path)  # dagster.yaml's storage folders are relative, as the scripts run it
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with running_sandbox(csv_dir=tmp_path / "csv") as box:
        for key, value in sandbox_env(box.url, tmp_path / "csv").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("SYNC_WAREHOUSE_URL", warehouse_url)
        yield Home(tmp_path, box, warehouse_url)


def _assert_recovered(output: str, run_id: str) -> None:
    assert f"recovered run {run_id}" in output and "marked failed" in output, output
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def _assert_no_slot_held() -> None:
    with dg.DagsterInstance.get() as instance:
        for pool in instance.event_log_storage.get_concurrency_keys():
            assert not instance.event_log_storage.get_concurrency_info(pool).claimed_slots, pool


def _assert_converged(home: Home) -> None:
    """Every record of every stream landed exactly once, and no destination has anything left to write."""
    for tool, _, stream, _ in home.stack.streams():
        assert_exactly_once(home.box, home.warehouse, tool, stream)
    for dest in home.stack.destinations:
        planned, _ = plan_destination(home.stack, home.warehouse, dest)
        assert (planned["action"] == "update").sum() == 0, (dest.tool, dest.stream)


def _start_transitions(home: Home, pool: str) -> list[str]:
    """Move four records of the action's entity into the state it watches: four records it must create."""
    tool, stream, field, value, canonical, state, _ = ACTIONS[pool]
    landed = home.warehouse.read_table(landing_table_name(tool, stream))
    movers = list(landed.loc[(landed[canonical] != state) & ~landed["_deleted"].astype(bool), "_source_id"][:4])
    for record_id in movers:
        home.box.mutate(tool, stream, record_id, {field: value})
    return movers


@pytest.mark.timeout(900)  # seven whole syncs through the CLI: on a slow or busy machine past the default
def test_syncs_killed_at_every_moment_are_recovered_by_the_next_sync_and_converge(home):
    """kill -9 during an extraction, a write-back and each action, each time while the step holds its tool's slot;
    every next `sync-pipelines sync` recovers the run killed before it, unaided."""
    home.box.set_faults({"hubspot": {"latency_ms": 30, "page_size": 20}})  # the kill lands inside the extraction
    extraction_run, _ = home.kill_when_held(home.start(), "hubspot_api", "hubspot__contacts")
    home.box.set_faults({"hubspot": {"latency_ms": None, "page_size": None}})
    records_before = home.totals()
    writeback_run, output = home.kill_when_held(home.start(), "hubspot_api", "hubspot__contacts_writeback")
    _assert_recovered(output, extraction_run)
    _assert_recovered(home.sync(), writeback_run)
    _assert_no_slot_held()
    _assert_converged(home)
    # a write-back that only updates gave no tool a record; one that creates (the audience) gave its stream one per
    # golden record it takes, once
    creating = {f"{dest.tool}/{dest.stream}" for dest in home.stack.destinations if dest.creates}
    assert {k: v for k, v in home.totals().items() if k not in creating} == {
        k: v for k, v in records_before.items() if k not in creating}

    created = {pool: ACTIONS[pool][-1] for pool in ACTIONS}
    for pool in ACTIONS:  # a slow target, so that the kill lands between two creates
        home.box.set_faults({pool.removesuffix("_api"): {"latency_ms": 300}})
    actions = {f"{a.create.tool}_api": a for a in home.stack.actions if f"{a.create.tool}_api" in ACTIONS}
    movers, runs, output = {}, [], ""
    for pool in sorted(ACTIONS):
        movers[pool] = _start_transitions(home, pool)
        before = home.totals()[created[pool]]
        run, printed = home.kill_when_held(home.start(), pool, f"{actions[pool].create.tool}__{actions[pool].name}",
                                           ready=lambda: home.totals()[created[pool]] > before)
        if runs:
            _assert_recovered(printed, runs[-1])
        runs.append(run)
    for pool in ACTIONS:
        home.box.set_faults({pool.removesuffix("_api"): {"latency_ms": None}})
    _assert_recovered(home.sync(), runs[-1])
    _assert_no_slot_held()
    for pool, action in actions.items():
        assert home.totals()[created[pool]] == records_before[created[pool]] + len(movers[pool]), pool
        ledger = home.warehouse.read_table("action_ledger")
        assert sorted(ledger.loc[ledger["action"] == action.name, "_source_id"]) == sorted(movers[pool])


def test_slots_of_a_run_already_marked_failed_are_freed(tmp_path, monkeypatch):
    """Marking a dead run failed by hand (the UI's "terminate") leaves its slots held: the next sync frees them."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"concurrency": {"pools": {"default_limit": 1}}}) as i:
        run = i.create_run_for_job(dg.GraphDefinition("noop").to_job())
        i.event_log_storage.initialize_concurrency_limit_to_default("hubspot_api")  # as a step's first claim does
        claim = i.event_log_storage.claim_concurrency_slot("hubspot_api", run.run_id, "hubspot__contacts")
        assert claim.is_claimed
        i.report_run_failed(run)
        [recovered] = recover_dead_runs(i)
        assert (recovered.run_id, recovered.pid, recovered.slots_freed) == (run.run_id, None, 1)
        assert not i.event_log_storage.get_concurrency_info("hubspot_api").claimed_slots
        assert recover_dead_runs(i) == []
