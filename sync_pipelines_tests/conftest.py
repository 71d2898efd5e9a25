"""Shared fixtures: a warehouse URL on SQLite and on the real local PostgreSQL (never mocked)."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from sync_pipelines_tests.sandbox_sync import synced_sandbox

POSTGRES_URL = os.environ.get("SYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _environment_restored():
    """A command under test may fill in its process environment (the CLI sets DAGSTER_HOME and the sandbox's
    defaults, as it does for a user): no test sees what another one set."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(autouse=True)
def _no_state_storage_of_an_ended_instance():
    """Entering a Dagster instance (``with instance_for_test() as instance``) makes its definitions-state storage
    the current one, and leaving it does not undo that: once the instance is garbage, a later test loading
    definitions reaches it and fails ("undefined DagsterInstance weakref"), at a point that depends on when the
    collector ran. Each test starts and ends with none."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path):
    """A fresh, empty warehouse: an SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sync(tmp_path, monkeypatch):
    """The sandbox, an SQLite warehouse and the nightly job (`sandbox_sync.Sync`)."""
    with synced_sandbox(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'warehouse.db'}") as synced:
        yield synced


@pytest.fixture
def sync_on_each_warehouse(tmp_path, monkeypatch, warehouse_url):
    """The same sync on SQLite and on a real PostgreSQL schema."""
    with synced_sandbox(tmp_path, monkeypatch, warehouse_url) as synced:
        yield synced
