"""The production path on real services (issue: performance and scale): the Dagster instance on the local PostgreSQL
and steps spread over Celery workers on the local Redis. Nothing here is mocked."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
from celery import Celery
from dagster._core.events import DagsterEventType

from sync_pipelines.assets.core import golden_key, staged_key
from sync_pipelines.assets.extract import extraction_key
from sync_pipelines.definitions import build_definitions
from sync_pipelines.executors import executor_from_env
from sync_pipelines.pipeline import entity_streams
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.stack import load_stack
from sync_pipelines_tests.conftest import POSTGRES_URL

REPO = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")
REDIS_SERVER = os.environ.get("SYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
WORKERS = 2


def celery_sync_job() -> dg.JobDefinition:
    """The code location's nightly job, rebuilt by each Celery worker (which runs with SYNC_EXECUTOR=celery)."""
    return build_definitions(load_stack()).resolve_job_def("nightly_sync")


@contextmanager
def _fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped (with its connections) afterwards."""
    admin = sa.make_url(POSTGRES_URL).set(drivername="postgresql", database="postgres")
    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class Deployment:
    """The production layout on one machine: the instance (dagster.postgres.yaml) and the warehouse in a fresh
    PostgreSQL database, the sandbox standing in for the tools; workers inherit this process's environment."""

    def __init__(self, home: Path, database: str) -> None:
        self.home, self.database = home, database
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.stack = load_stack()

    def contacts_subset(self) -> list[dg.AssetKey]:
        """Every contacts extraction (one per tool, each in its own pool), then staged and golden contacts."""
        return [*(extraction_key(t, s) for t, s in entity_streams(self.stack, "contacts")),
                staged_key("contacts"), golden_key("contacts")]

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Read the instance's own tables directly, to show the data is in PostgreSQL and not elsewhere."""
        url = sa.make_url(POSTGRES_URL).set(drivername="postgresql", database=self.database)
        with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def deployment(tmp_path, monkeypatch) -> Iterator[Deployment]:
    server = sa.make_url(POSTGRES_URL)
    with _fresh_database() as database, running_sandbox(csv_dir=tmp_path / "csv") as box:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
        warehouse = server.set(database=database).render_as_string(hide_password=False)
        env = {
            **sandbox_env(box.url, tmp_path / "csv"),
            "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": server.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(server.port or 5432), "DAGSTER_PG_USER": server.username or "postgres",
            "DAGSTER_PG_PASSWORD": server.password or "", "DAGSTER_PG_DB": database,
            "SYNC_WAREHOUSE_URL": warehouse,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        deployed = Deployment(home, database)
        try:
            yield deployed
        finally:
            deployed.instance.dispose()


def test_the_instance_on_postgresql_records_the_run_its_events_and_materializations(deployment):
    job = build_definitions(deployment.stack).resolve_job_def("nightly_sync")
    result = job.execute_in_process(instance=deployment.instance, partition_key=TODAY)
    assert result.success

    with dg.DagsterInstance.from_config(str(deployment.home)) as reopened:  # a new connection reads it all back
        run = reopened.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == TODAY
        stored = {e.step_key for e in reopened.all_logs(result.run_id, of_type=DagsterEventType.STEP_SUCCESS)}
        assert stored == {e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_SUCCESS}
        assert len(stored) > len(deployment.contacts_subset())
        golden = reopened.get_latest_materialization_event(golden_key("contacts"))
        assert golden is not None and golden.run_id == result.run_id
        assert golden.asset_materialization.partition is None
        extraction = reopened.get_latest_materialization_event(extraction_key("salesforce", "Contact"))
        assert extraction.asset_materialization.partition == TODAY
        assert extraction.asset_materialization.metadata["rows_landed"].value > 0

    [[status]] = deployment.sql("SELECT status FROM runs WHERE run_id = %s", result.run_id)
    assert status == "SUCCESS"
    [[materialized]] = deployment.sql(
        "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        result.run_id)
    assert materialized == len(result.get_asset_materialization_events()) > 0
    assert not (deployment.home / "storage" / "runs.db").exists()  # nothing fell back to SQLite


@contextmanager
def _celery_worker(name: str, config: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """One `dagster-celery worker start` (one process for steps), in its own process group, always killed on exit."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config),
             "-n", name, "--loglevel", "INFO",
             "--", "--concurrency=1", "--without-gossip", "--without-mingle"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(worker.pid, sig)
                worker.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def _wait_for_workers(app: Celery, names: list[str], logs: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {host for reply in app.control.ping(timeout=1) for host in reply}
        if all(any(host.startswith(f"{name}@") for host in answered) for name in names):
            return
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    pytest.fail(f"Celery workers {names} did not answer within {timeout:.0f} s:\n{tails}")


@pytest.fixture
def celery_workers(deployment, tmp_path, monkeypatch) -> Iterator[str]:
    """Two Celery workers on the local Redis; yields their name prefix. Each test takes a Redis database of its own
    (Dagster's steps all go to the queue `dagster`) and purges that queue afterwards, so no step outlives it."""
    from dagster_celery.make_app import make_app

    broker = f"{REDIS_SERVER}/{random.randint(1, 15)}"
    monkeypatch.setenv("SYNC_EXECUTOR", "celery")
    monkeypatch.setenv("SYNC_CELERY_BROKER", broker)
    config = tmp_path / "celery.yaml"
    config.write_text(f"execution:\n  config:\n    broker: {broker}\n    backend: {broker}\n"
                      "    config_source:\n      result_expires: 60\n")  # step results leave Redis soon after
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    prefix = f"sync-test-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{i}" for i in range(WORKERS)]
    logs = [tmp_path / f"{name}.log" for name in names]
    app = make_app({"broker": broker, "backend": broker})
    with ExitStack() as workers:
        workers.callback(app.close)
        workers.callback(app.control.purge)
        for name, log in zip(names, logs):
            workers.enter_context(_celery_worker(name, config, env, log))
        _wait_for_workers(app, names, logs)
        yield prefix


@pytest.mark.timeout(150)
def test_the_sync_runs_on_celery_workers_with_steps_in_several_worker_processes(deployment, celery_workers):
    subset = deployment.contacts_subset()
    result = dg.execute_job(dg.reconstructable(celery_sync_job), deployment.instance, asset_selection=subset,
                            tags={"dagster/partition": TODAY})
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == set(subset)

    logs = deployment.instance.all_logs(result.run_id)
    delegated = [e for e in logs if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
                 and "Celery worker" in e.dagster_event.engine_event_data.metadata]
    hosts = {e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value for e in delegated}
    assert set(hosts) == {e.step_key for e in logs if e.dagster_event_type == DagsterEventType.STEP_SUCCESS}
    assert len(set(hosts.values())) == WORKERS and all(h.startswith(celery_workers) for h in hosts.values())
    step_pids = {e.dagster_event.pid for e in logs if e.dagster_event_type == DagsterEventType.STEP_START}
    assert len(step_pids) >= WORKERS and os.getpid() not in step_pids


def test_executor_from_env_names_each_executor_and_rejects_an_unknown_one(monkeypatch):
    monkeypatch.delenv("SYNC_EXECUTOR", raising=False)
    assert executor_from_env() is dg.in_process_executor
    monkeypatch.setenv("SYNC_EXECUTOR", "multiprocess")
    assert executor_from_env() is dg.multiprocess_executor
    monkeypatch.setenv("SYNC_EXECUTOR", "celery")
    assert executor_from_env().name == "celery"
    monkeypatch.setenv("SYNC_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="SYNC_EXECUTOR: unknown executor 'kubernetes'; allowed: in_process"):
        executor_from_env()


def test_the_code_location_uses_the_executor_from_env(monkeypatch):
    monkeypatch.setenv("SYNC_EXECUTOR", "multiprocess")
    job = build_definitions(load_stack()).resolve_job_def("nightly_sync")
    assert job.executor_def is dg.multiprocess_executor
