"""The SyncStack component: what the defs folder serves is what build_definitions builds, and `dg` checks it."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from sync_pipelines.components import SyncStack
from sync_pipelines.components.sync_stack import SeveralStacksError
from sync_pipelines.definitions import build_definitions
from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack

PROJECT = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).parent / "dg"  # the project's venv (.venv in a checkout)
CLEAN_SHELL = {"HOME": str(Path.home()), "PATH": "/usr/bin:/bin"}


def _served(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    return {
        "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
        "checks": sorted(key.to_user_string() for key in graph.asset_check_keys),
        "jobs": sorted(job.name for job in defs.jobs),
        "schedules": sorted((schedule.name, schedule.cron_schedule) for schedule in defs.schedules),
        "sensors": sorted(sensor.name for sensor in defs.sensors),
    }


def _project_tree() -> dg.ComponentTree:
    return dg.ComponentTree.from_module(importlib.import_module("sync_pipelines.defs"), PROJECT)


def test_the_defs_folder_serves_the_bundled_stack_as_build_definitions_builds_it():
    from sync_pipelines.definitions import defs, stack

    [component] = _project_tree().get_all_components(of_type=SyncStack)
    assert component.stack_path(PROJECT) == DEFAULT_STACK.resolve()
    assert stack == load_stack()
    assert _served(defs) == _served(build_definitions(load_stack()))
    assert _served(defs)["assets"]  # not two empty code locations
    assert defs.resources["sync"].stack_path == str(DEFAULT_STACK.resolve())


def test_the_component_follows_sync_stack_and_its_steps_load_the_same_file(tmp_path, monkeypatch):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["nightly"] = {"cron": "15 4 * * *"}
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SYNC_STACK", str(custom))

    defs = _project_tree().build_defs()
    assert ("nightly_sync_schedule", "15 4 * * *") in _served(defs)["schedules"]
    assert _served(defs) == _served(build_definitions(load_stack(custom)))
    assert defs.resources["sync"].stack_path == str(custom)


def _sandbox_component(sandbox, name: str, stack_file: str) -> None:
    folder = sandbox.defs_folder_path / name
    folder.mkdir()
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": "sync_pipelines.components.SyncStack",
                                                      "attributes": {"stack_file": stack_file}}))


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes: Dagster wraps a component's failure in one naming the component."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def test_a_missing_stack_file_fails_naming_the_file():
    with create_defs_folder_sandbox() as sandbox:
        _sandbox_component(sandbox, "missing", "stacks/no_such_stack.yaml")
        with pytest.raises(Exception) as raised, sandbox.build_all_defs():
            pass
        missing = (sandbox.project_root / "stacks" / "no_such_stack.yaml").resolve()
    [stack_error] = [error for error in _chain(raised.value) if isinstance(error, StackError)]
    assert str(stack_error).startswith(f"{missing}: ")
    assert "file not found" in str(stack_error)


def test_a_second_stack_in_one_code_location_is_refused_naming_both_files_and_what_collides(tmp_path):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["name"] = "second"
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(raw))
    with create_defs_folder_sandbox() as sandbox:
        _sandbox_component(sandbox, "first", str(DEFAULT_STACK))
        _sandbox_component(sandbox, "second", str(second))
        with pytest.raises(Exception) as raised, sandbox.build_all_defs():
            pass
    [refused] = [error for error in _chain(raised.value) if isinstance(error, SeveralStacksError)]
    message = str(refused)
    assert str(DEFAULT_STACK.resolve()) in message and str(second) in message
    for collision in ("jobs nightly_sync, revert", "schedules nightly_sync_schedule", "webhook_inbox_sensor",
                      "hubspot/contacts", "golden_contacts", "resources sync"):
        assert collision in message, collision


def _dg(*args: str) -> subprocess.CompletedProcess:
    """`dg` as a newcomer runs it: from the repository root, in a clean shell."""
    return subprocess.run([str(DG), *args], cwd=PROJECT, env=CLEAN_SHELL,
                          capture_output=True, text=True, timeout=240, check=False)


def test_dg_check_defs_passes_in_a_clean_shell():
    checked = _dg("check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


def test_dg_list_defs_lists_what_the_code_location_serves():
    from sync_pipelines.definitions import defs

    listed = _dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    served = json.loads(listed.stdout)
    assert sorted(asset["asset_key"] for asset in served["assets"]) == _served(defs)["assets"]
    assert {asset["source"] for asset in served["assets"]} == {"sync_pipelines/defs/sync_stack/defs.yaml:3"}
    assert sorted(job["name"] for job in served["jobs"]) == _served(defs)["jobs"]


def test_dg_list_components_shows_sync_stack():
    listed = _dg("list", "components", "--json")
    assert listed.returncode == 0, listed.stderr
    listed_keys = {component["key"] for component in json.loads(listed.stdout)["items"]}
    assert "sync_pipelines.components.SyncStack" in listed_keys
