"""The sync resource: the stack is parsed once per version of its file and environment (issue: performance)."""

from __future__ import annotations

import os

from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import DEFAULT_STACK


def test_the_stack_is_parsed_again_only_when_its_file_or_the_environment_changes(tmp_path, monkeypatch):
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(DEFAULT_STACK.read_text())
    sync = SyncResource(warehouse_url=f"sqlite:///{tmp_path / 'w.db'}", stack_path=str(stack_file))
    first = sync.stack
    assert sync.stack is first  # a second access in the same step costs nothing

    monkeypatch.setenv("SYNC_TEST_UNRELATED_VARIABLE", "1")  # may feed a ${VAR} in the file: parse again
    after_env = sync.stack
    assert after_env is not first and after_env.tools["salesforce"].owner == first.tools["salesforce"].owner

    stack_file.write_text(DEFAULT_STACK.read_text().replace('owner: "team:revops"', 'owner: "team:sales-ops"', 1))
    stamp = stack_file.stat().st_mtime_ns + 1_000_000_000  # a later version, even within the clock's resolution
    os.utime(stack_file, ns=(stamp, stamp))
    assert sync.stack.tools["salesforce"].owner == "team:sales-ops"
