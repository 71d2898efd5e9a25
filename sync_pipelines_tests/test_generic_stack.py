"""The pipeline holds no entity or tool name (issue 13, item 1): the sandbox stack with `companies` renamed
`organisations`, `contacts` renamed `people` and fewer tools (no support desk, no ERP) runs end to end, on SQLite
and PostgreSQL, without a line of code changed."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sync_pipelines.stack import DEFAULT_STACK
from sync_pipelines_tests.sandbox_sync import synced_sandbox

RENAMED = {"companies": "organisations", "contacts": "people"}
DROPPED_TOOLS = {"zendesk", "legacy_erp"}
DROPPED_ENTITIES = {"tickets"}  # only the support desk holds them


def _renamed_stack(path: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_STACK.read_text())

    def entity(name: str) -> str:
        return RENAMED.get(name, name)

    raw["entities"] = {entity(e): spec for e, spec in raw["entities"].items() if e not in DROPPED_ENTITIES}
    for spec in raw["entities"].values():
        for field in spec["fields"].values():
            reference = field.get("references")
            if isinstance(reference, dict):  # a key reference: {entity, by, via}
                reference["entity"] = entity(reference["entity"])
            elif reference:
                field["references"] = entity(reference)
    raw["tools"] = {t: spec for t, spec in raw["tools"].items() if t not in DROPPED_TOOLS}
    for spec in raw["tools"].values():
        for stream in spec.get("streams", {}).values():
            stream["entity"] = entity(stream["entity"])
        for kind in ("read", "write"):
            if kind in spec.get("scopes", {}):
                spec["scopes"][kind] = [entity(e) for e in spec["scopes"][kind] if e not in DROPPED_ENTITIES]
    for section in ("identity", "survivorship", "quality"):
        raw[section] = {entity(e): spec for e, spec in raw[section].items() if e not in DROPPED_ENTITIES}
    for spec in raw["survivorship"].values():
        spec["priority"] = [t for t in spec["priority"] if t not in DROPPED_TOOLS]
    raw["integrations"] = [
        {**i, "tools": [t for t in i["tools"] if t not in DROPPED_TOOLS],
         "entities": [entity(e) for e in i.get("entities", []) if e not in DROPPED_ENTITIES]}
        for i in raw["integrations"] if set(i["tools"]) - DROPPED_TOOLS]
    raw["integrations"] = [i for i in raw["integrations"] if i["entities"]]
    raw["destinations"] = [{**d, "entity": entity(d["entity"])} for d in raw["destinations"]
                           if d["tool"] not in DROPPED_TOOLS]
    raw["actions"] = [a for a in raw["actions"] if a["when"]["entity"] not in DROPPED_ENTITIES]
    for action in raw["actions"]:
        action["when"]["entity"] = entity(action["when"]["entity"])
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_stack_naming_its_entities_otherwise_with_fewer_tools_runs_end_to_end(tmp_path, monkeypatch,
                                                                               warehouse_url):
    monkeypatch.setenv("SYNC_STACK", str(_renamed_stack(tmp_path / "stack.yaml")))
    with synced_sandbox(tmp_path, monkeypatch, warehouse_url) as sync:
        assert {"organisations", "people"} <= set(sync.stack.entities)
        assert not {"companies", "contacts"} & set(sync.stack.entities)
        result, written = sync.run()
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        steps = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"golden_organisations", "golden_people", "references_people", "references_deals"} <= steps
        # HubSpot's stream keeps its own name (`hubspot/companies`): the core steps take the stack's
        assert not any(re.search(r"companies|contacts|tickets", step) for step in steps if "/" not in step), steps
        assert not any(step.split("/")[0] in DROPPED_TOOLS for step in steps), steps
        organisations = sync.warehouse.read_table("golden_organisations")
        assert len(organisations) > 0
        links = sync.warehouse.read_table("references_people")
        assert set(links["referenced_entity"]) == {"organisations"}
        crosswalk = sync.warehouse.read_table("crosswalk_organisations")
        assert links["referenced_id"].dropna().isin(crosswalk["entity_id"]).all()
        assert written  # the destinations that remain were written to
        # the run again writes nothing new: the pipeline converges whatever the names
        _, again = sync.run()
        assert sum(again.values()) < sum(written.values())
