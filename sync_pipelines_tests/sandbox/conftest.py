"""Fixtures: a shared read-only sandbox, and a fresh one for tests that write or set faults."""

from __future__ import annotations

import base64
from typing import Iterator

import pytest

from sync_pipelines.sandbox import RunningSandbox, running_sandbox

AUTH = {
    "salesforce": {"Authorization": "Bearer sandbox-salesforce-token"},
    "hubspot": {"Authorization": "Bearer sandbox-hubspot-token"},
    "zendesk": {"Authorization": "Basic " + base64.b64encode(
        b"sync@sandbox.example/token:sandbox-zendesk-token").decode()},
    "asana": {"Authorization": "Bearer sandbox-asana-token"},
    "stripe": {"Authorization": "Bearer sk_test_sandbox"},
}


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[RunningSandbox]:
    """Never write to this one or set its faults: many tests read it."""
    with running_sandbox(seed=7, scale=0.5, rate_limits=False) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(seed=11, scale=0.3, rate_limits=False) as sandbox:
        yield sandbox
