"""Per-field write policies of a destination, against the sandbox (issue 12, item 3)."""

from __future__ import annotations

from pathlib import Path

import yaml

from sync_pipelines import pipeline
from sync_pipelines.stack import DEFAULT_STACK
from sync_pipelines_tests.sandbox_sync import Sync

POLICIES = {"job_title": {"write": "never"}, "phone": {"write": "fill_if_empty"}}


def stack_with(tmp_path: Path, monkeypatch, **hubspot) -> None:
    """The sandbox stack with the HubSpot destination's settings changed, made the stack of what runs next."""
    spec = yaml.safe_load(Path(DEFAULT_STACK).read_text())
    for dest in spec["destinations"]:
        if dest["tool"] == "hubspot" and dest["entity"] == "contacts":
            dest.update(hubspot)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("SYNC_STACK", str(path))


def hubspot_contacts(sync: Sync) -> dict[str, dict]:
    table = sync.box.state.world.table("hubspot", "contacts")
    with sync.box.state.lock:
        return {str(table.id(row)): table.fields(row) for row in range(len(table)) if not table.deleted[row]}


def test_fill_if_empty_and_never_fields_are_never_overwritten_across_three_runs(sync_on_each_warehouse, tmp_path,
                                                                                monkeypatch):
    stack_with(tmp_path, monkeypatch, fields=POLICIES)
    sync = Sync(sync_on_each_warehouse.box, sync_on_each_warehouse.url)
    before, held = hubspot_contacts(sync), set()
    for run in range(3):
        result, written = sync.run()
        assert result.success and (run or written["hubspot/contacts_writeback"] > 0)  # the other fields are still written
        if run == 0:  # new golden titles and phones from the source of truth, which HubSpot must not take
            crosswalk = sync.warehouse.read_table("crosswalk_contacts")
            shared = crosswalk[crosswalk["entity_id"].isin(crosswalk.loc[crosswalk["_source"] == "hubspot",
                                                                         "entity_id"])]
            for source_id in shared.loc[shared["_source"] == "salesforce", "_source_id"].head(5):
                sync.box.mutate("salesforce", "Contact", source_id, {"Title": "Head of Sync", "Phone": "+14155550199"})
        plan, _ = pipeline.plan_destination(sync.stack, sync.warehouse, sync.stack.destinations[1])
        held |= {f"{f}:{p}" for hold in plan["held_back"] for f, p in hold.items()}
    assert {"job_title:never", "phone:fill_if_empty"} <= held, held  # what the plan says held them back
    after = hubspot_contacts(sync)
    retitled = [i for i in before if after[i]["jobtitle"] != before[i]["jobtitle"]]
    rephoned = [i for i in before if before[i]["phone"] and after[i]["phone"] != before[i]["phone"]]
    assert (len(retitled), len(rephoned)) == (0, 0)
