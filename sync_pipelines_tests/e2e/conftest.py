"""One running stack shared by every end-to-end test: the sandbox and the webhook receiver served from this process,
`dagster-webserver` and `dagster-daemon` as subprocesses in a temporary DAGSTER_HOME, all on free ports and all
stopped after the last e2e test (package scope: the rest of the suite runs without them). Nothing is mocked: runs go
through the daemon's queue, sensors and run workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa

from sync_pipelines.sandbox import RunningSandbox, running_sandbox, sandbox_env
from sync_pipelines.sandbox.server import serving
from sync_pipelines.sandbox.webhooks import DEFAULT_SECRETS
from sync_pipelines.stack import DEFAULT_STACK, load_stack
from sync_pipelines.webhooks import SECRET_ENV, build_webhook_app

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent  # the project's venv (.venv in CI): dagster-webserver and dagster-daemon sit here
LOCATION, REPOSITORY, JOB = "sync_pipelines", "__repository__", "nightly_sync"
ACTIVE_RUN_STATUSES = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
FINISHED_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 180
STOP_GRACE_S = 20
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tests against a running Dagster webserver and daemon "
                                       "(select with -m e2e, skip with -m 'not e2e')")


def today() -> str:
    """Today's partition key, in the bundled stack's timezone as the schedules and sensors compute it."""
    return datetime.now(ZoneInfo(load_stack(DEFAULT_STACK).timezone)).strftime("%Y-%m-%d")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy and return that; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class DagsterGraphQL:
    """The webserver's GraphQL API, as the UI and any script use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def query(self, text: str, **variables: Any) -> dict[str, Any]:
        response = self.session.post(f"{self.url}/graphql", json={"query": text, "variables": variables},
                                     timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_run(self, asset_keys: list[list[str]] | None, partition: str, tags: dict[str, str] | None = None) -> str:
        """Launch `nightly_sync` (or the given assets of it) for one partition; returns the run id."""
        selector: dict[str, Any] = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                                    "jobName": JOB}
        if asset_keys is not None:
            selector["assetSelection"] = [{"path": key} for key in asset_keys]
        run_tags = [{"key": k, "value": v} for k, v in {"dagster/partition": partition, **(tags or {})}.items()]
        data = self.query("""
            mutation Launch($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId } }
                ... on Error { message }
                ... on PythonError { message }
              }
            }""", params={"selector": selector, "executionMetadata": {"tags": run_tags}})["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.query("""
            query Run($id: ID!) {
              runOrError(runId: $id) {
                __typename
                ... on Run { runId status startTime endTime tags { key value } }
              }
            }""", id=run_id)["runOrError"]
        assert data["__typename"] == "Run", data
        return data

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        """The run once it has finished, whatever its outcome."""
        return wait_for(lambda: (run := self.run(run_id))["status"] in FINISHED_RUN_STATUSES and run,
                        timeout, f"run {run_id} to finish", interval=1)

    def runs(self, statuses: list[str] | None = None, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        run_filter: dict[str, Any] = {}
        if statuses:
            run_filter["statuses"] = statuses
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        data = self.query("""
            query Runs($filter: RunsFilter) {
              runsOrError(filter: $filter) {
                __typename
                ... on Runs { results { runId status startTime endTime tags { key value } } }
              }
            }""", filter=run_filter)["runsOrError"]
        assert data["__typename"] == "Runs", data
        return data["results"]

    def sensor_ticks(self, sensor: str, limit: int = 10) -> list[dict[str, Any]]:
        """The sensor's latest ticks, newest first: `timestamp` (epoch s), `status`, `runIds`, `skipReason`."""
        data = self.query("""
            query Ticks($selector: SensorSelector!, $limit: Int) {
              sensorOrError(sensorSelector: $selector) {
                __typename
                ... on Sensor { sensorState { ticks(limit: $limit) { timestamp status runIds skipReason } } }
              }
            }""", selector={"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                            "sensorName": sensor}, limit=limit)["sensorOrError"]
        assert data["__typename"] == "Sensor", data
        return data["sensorState"]["ticks"]

    def location_loaded(self) -> bool:
        """True once the code location has loaded; its load error, if any, fails at once."""
        data = self.query("""
            query Workspace {
              workspaceOrError {
                __typename
                ... on Workspace { locationEntries { name loadStatus locationOrLoadError {
                  __typename ... on PythonError { message } } } }
              }
            }""")["workspaceOrError"]
        [entry] = [e for e in data["locationEntries"] if e["name"] == LOCATION]
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise AssertionError(f"code location {LOCATION} failed to load: {loaded['message']}")
        return entry["loadStatus"] == "LOADED" and loaded is not None


@dataclass
class Services:
    """The running stack, and what the tests need to reach each part of it."""

    box: RunningSandbox
    dagster: DagsterGraphQL
    web_url: str
    receiver_url: str
    warehouse_url: str
    env: dict[str, str]
    logs: dict[str, Path]

    def table(self, name: str) -> list[dict[str, Any]]:
        """A warehouse table's rows, read directly (SQLite allows readers beside the run workers)."""
        engine = sa.create_engine(self.warehouse_url)
        try:
            with engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))]
        finally:
            engine.dispose()

    def unprocessed_webhooks(self) -> int:
        return sum(1 for row in self.table("webhook_inbox") if row["processed_at"] is None)

    def settle(self, timeout: float = RUN_TIMEOUT_S) -> None:
        """Wait until nothing is left to do: no webhook waiting in the inbox and no run queued or running, twice
        a few seconds apart (write-backs echo as webhooks, which the sensor turns into more runs)."""
        def idle() -> bool:
            return self.unprocessed_webhooks() == 0 and not self.dagster.runs(statuses=ACTIVE_RUN_STATUSES)

        deadline = time.monotonic() + timeout
        while True:
            wait_for(idle, max(1.0, deadline - time.monotonic()), "the stack to go idle", interval=1)
            time.sleep(3)
            if idle():
                return

    def log_tails(self, lines: int = 40) -> str:
        """The end of the webserver's and the daemon's logs, for failure messages."""
        tails = []
        for name, path in self.logs.items():
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {name} ({path}) ---\n" + "\n".join(tail))
        return "\n".join(tails)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group (the code server and run workers it started are in it), then SIGKILL to
    whatever is left of the group once the leader has exited or its grace period is over."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)
    process.wait(STOP_GRACE_S)


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # the whole group has exited


@contextmanager
def _process(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    executable = BIN / args[0]
    if not executable.exists():
        raise FileNotFoundError(f"{executable} not found: install the project into this venv (scripts/setup.sh)")
    with log.open("wb") as out:
        process = subprocess.Popen([str(executable), *args[1:]], cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        _stop(process)


def _running(**processes: subprocess.Popen) -> bool:
    """True while every process runs; one that exited fails at once rather than at the end of a wait."""
    exited = {name: process.returncode for name, process in processes.items() if process.poll() is not None}
    if exited:
        raise AssertionError(f"exited early: {exited}")
    return True


@pytest.fixture(scope="package")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The stack, up once its code location has loaded and the daemon's sensors have ticked."""
    root = tmp_path_factory.mktemp("e2e")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    warehouse_url = f"sqlite:///{root / 'warehouse.db'}"
    port = _free_port()
    web_url = f"http://127.0.0.1:{port}"
    secrets = {tool: DEFAULT_SECRETS[tool] for tool in SECRET_ENV}
    logs = {"webserver": root / "webserver.log", "daemon": root / "daemon.log"}
    with ExitStack() as stack:
        receiver_url = stack.enter_context(serving(build_webhook_app(warehouse_url, secrets), name="receiver"))
        box = stack.enter_context(running_sandbox(csv_dir=root / "csv", webhook_url=receiver_url))
        env = {key: value for key, value in os.environ.items() if key != "SYNC_STACK"}  # DEFAULT_STACK
        env.update(sandbox_env(box.url, root / "csv"))  # credentials, SANDBOX_URL, SANDBOX_CSV_DIR, Slack
        env.update({"DAGSTER_HOME": str(home), "SYNC_WAREHOUSE_URL": warehouse_url, "DAGSTER_WEBSERVER_URL": web_url,
                    **{SECRET_ENV[tool]: secret for tool, secret in secrets.items()}})
        workspace = str(REPO / "workspace.yaml")
        started = time.monotonic()
        webserver = stack.enter_context(_process(["dagster-webserver", "-w", workspace, "-h", "127.0.0.1",
                                                  "-p", str(port)], home, env, logs["webserver"]))
        running = Services(box, DagsterGraphQL(web_url), web_url, receiver_url, warehouse_url, env, logs)
        try:
            wait_for(lambda: _running(webserver=webserver) and _answers(f"{web_url}/server_info"),
                     STARTUP_TIMEOUT_S, "the webserver's /server_info")
            # The webserver has created the instance's storage now; started together, both would race to create it.
            daemon = stack.enter_context(_process(["dagster-daemon", "run", "-w", workspace], home, env,
                                                  logs["daemon"]))
            wait_for(running.dagster.location_loaded, STARTUP_TIMEOUT_S, "the code location to load")
            # A run-failure sensor only reports failures after its first tick; the inbox sensor proves the daemon.
            for sensor in ("webhook_inbox_sensor", "slack_on_run_failure"):
                wait_for(lambda sensor=sensor: _running(daemon=daemon) and running.dagster.sensor_ticks(sensor),
                         STARTUP_TIMEOUT_S, f"a tick of {sensor}", interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{running.log_tails()}") from None
        print(f"\ne2e stack up in {time.monotonic() - started:.1f} s: webserver {web_url}, sandbox {box.url}, "
              f"receiver {receiver_url}")
        yield running


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="package")
def synced(services: Services) -> str:
    """`nightly_sync` materialized once for today, launched over GraphQL, so golden records and checks exist; then
    the write-backs' echo (their webhooks, the runs those trigger) has died down. Returns the run id."""
    started = time.monotonic()
    run_id = services.dagster.launch_run(None, today())
    run = services.dagster.wait_for_run(run_id)
    seconds = time.monotonic() - started
    assert run["status"] == "SUCCESS", f"nightly_sync run {run_id} ended {run['status']}\n{services.log_tails()}"
    settling = time.monotonic()
    services.settle()
    echoes = len(services.dagster.runs(tags={"sync_pipelines/trigger": "webhook"}))
    print(f"\nnightly_sync over GraphQL: {seconds:.1f} s (run {run_id}); its write-backs' webhooks then ran "
          f"{echoes} run(s) until idle, {time.monotonic() - settling:.1f} s")
    return run_id
