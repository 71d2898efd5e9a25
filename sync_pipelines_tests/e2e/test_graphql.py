"""The Dagster webserver's GraphQL API on the real code location: the catalog's lineage and a partitioned backfill."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from sync_pipelines_tests.e2e.conftest import RUN_TIMEOUT_S, Services, wait_for

pytestmark = pytest.mark.e2e

ASSET_NODES = """
query Assets {
  assetNodes {
    assetKey { path }
    groupName
    description
    kinds
    tags { key value }
    owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    dependencyKeys { path }
    partitionDefinition { name }
  }
}"""


def _asset_nodes(services: Services) -> list[dict]:
    return services.dagster.query(ASSET_NODES)["assetNodes"]


def _extraction_keys(nodes: list[dict], entity: str | None = None) -> list[list[str]]:
    """Extraction assets are the partitioned ones, tagged with the canonical entity they feed."""
    return [n["assetKey"]["path"] for n in nodes if n["partitionDefinition"]
            and (entity is None or {"key": "entity", "value": entity} in n["tags"])]


def _reaches(children: dict[tuple, set[tuple]], start: tuple, goal: tuple) -> bool:
    seen, frontier = {start}, [start]
    while frontier:
        for child in children[frontier.pop()] - seen:
            seen.add(child)
            frontier.append(child)
    return goal in seen


def test_every_asset_is_documented_and_contacts_flow_from_each_tool_through_golden_to_every_write_back(
        services: Services):
    nodes = _asset_nodes(services)
    undocumented = {"/".join(n["assetKey"]["path"]): [field for field in ("owners", "groupName", "kinds", "description")
                                                    if not n[field]] for n in nodes}
    assert {key: missing for key, missing in undocumented.items() if missing} == {}

    children: dict[tuple, set[tuple]] = defaultdict(set)
    for node in nodes:
        for parent in node["dependencyKeys"]:
            children[tuple(parent["path"])].add(tuple(node["assetKey"]["path"]))
    keys = {tuple(n["assetKey"]["path"]) for n in nodes}
    write_backs = sorted(key for key in keys if len(key) == 2 and key[1] == "contacts_writeback")
    sources = sorted(tuple(key) for key in _extraction_keys(nodes, "contacts"))
    assert len(write_backs) >= 3 and len(sources) >= 5, (write_backs, sources)
    broken = [(source, write_back) for source in sources for write_back in write_backs
              if not (_reaches(children, source, ("staged_contacts",))
                      and _reaches(children, ("staged_contacts",), ("golden_contacts",))
                      and _reaches(children, ("golden_contacts",), write_back))]
    assert broken == []
    print(f"\nlineage: {len(nodes)} assets, {len(sources)} contact sources x {len(write_backs)} write-backs, "
          "every path through staged_contacts and golden_contacts")


LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status error { message } }
  }
}"""


def test_a_three_day_backfill_of_every_extraction_runs_once_and_succeeds(services: Services):
    extraction = _extraction_keys(_asset_nodes(services))
    now = datetime.now(timezone.utc)
    days = [(now - timedelta(days=back)).strftime("%Y-%m-%d") for back in (6, 5, 4)]
    started = time.monotonic()
    launched = services.dagster.query(LAUNCH_BACKFILL, params={
        "partitionNames": days, "assetSelection": [{"path": key} for key in extraction], "fromFailure": False,
    })["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished() -> dict | None:
        backfill = services.dagster.query(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
        return backfill if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None

    backfill = wait_for(finished, RUN_TIMEOUT_S, f"backfill {backfill_id} to finish", interval=1)
    seconds = time.monotonic() - started
    runs = services.dagster.runs(tags={"dagster/backfill": backfill_id})
    executing = sum((run["endTime"] or 0) - (run["startTime"] or 0) for run in runs)
    print(f"\nbackfill of {len(extraction)} extraction assets x {len(days)} days ({days[0]}..{days[-1]}): "
          f"{backfill['status']}, {len(runs)} run(s), {seconds:.1f} s from launch to completion "
          f"({executing:.1f} s executing)")
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert [run["status"] for run in runs] == ["SUCCESS"]  # the single-run backfill policy: one run for 3 days
    tags = {tag["key"]: tag["value"] for tag in runs[0]["tags"]}
    assert (tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")) == \
        (days[0], days[-1]), tags
