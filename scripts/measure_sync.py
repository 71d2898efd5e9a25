"""Measure the golden-record acceptance figures against a fresh sandbox and print them.

    .venv/bin/python scripts/measure_sync.py [--scale 1] [--warehouse-url URL]

Runs the nightly_sync job as a user would (extraction over HTTP → staging → resolution → survivorship → checks →
write-back) and compares the warehouse with the sandbox's ground truth.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from sync_pipelines.sandbox.scoring import score, truth_records


def load_env(tmp: Path, url: str, warehouse_url: str) -> None:
    from sync_pipelines.sandbox import sandbox_env

    os.environ.update(sandbox_env(url, tmp / "csv"), SYNC_WAREHOUSE_URL=warehouse_url)


def run(job) -> dict:
    started = time.perf_counter()
    result = job.execute_in_process(partition_key=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                                    raise_on_error=False)
    written = {}
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        if "written" in meta:
            written[event.asset_key.path[0]] = meta["written"].value
    failures = [e.step_key for e in result.all_events if e.is_step_failure]
    return {"success": result.success, "seconds": round(time.perf_counter() - started, 1), "written": written,
            "failed_steps": failures}


def print_scores(box, stack, warehouse, entity: str, label: str, planted: list) -> None:
    resolved, conflicts = score(box, stack, warehouse, entity, label, planted)
    print(f"{entity}: pairwise precision {resolved.precision:.4f}, recall {resolved.recall:.4f} over "
          f"{resolved.records} valid live records ({resolved.unresolved} not in the crosswalk)")
    per_rule = ", ".join(f"{rule} {conflicts.resolved.get(rule, 0)}/{count}"
                         for rule, count in sorted(conflicts.planted.items()))
    print(f"{entity}: planted conflicts resolved as the rules say: {per_rule or 'none planted'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--warehouse-url")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sync-measure-"))
    from sync_pipelines.sandbox import running_sandbox

    with running_sandbox(scale=args.scale, csv_dir=tmp / "csv") as box:
        load_env(tmp, box.url, args.warehouse_url or f"sqlite:///{tmp / 'warehouse.db'}")
        from sync_pipelines.definitions import defs, stack
        from sync_pipelines.warehouse import Warehouse

        job = defs.resolve_job_def("nightly_sync")
        warehouse = Warehouse(stack, os.environ["SYNC_WAREHOUSE_URL"])
        first = run(job)
        print(f"run 1 (full sync): {first}")

        truth = truth_records(box, stack, "contacts")
        golden = warehouse.read_table("golden_contacts").query("not _deleted")
        print(f"golden contacts: {len(golden)}; distinct people in the ground truth: {len(box.truth('people'))}")
        print_scores(box, stack, warehouse, "contacts", "person", box.truth("conflicts"))
        companies = truth_records(box, stack, "companies")
        print(f"golden companies: {int((~warehouse.read_table('golden_companies')['_deleted']).sum())}; distinct "
              f"companies in the ground truth: {companies['company'].nunique()} "
              f"({len(box.truth()['company_traps'])} of them traps)")
        print_scores(box, stack, warehouse, "companies", "company", box.truth("company_conflicts"))

        invalid = truth[truth["invalid"].notna()]
        quarantine = warehouse.read_table("quarantine")
        held = invalid.merge(quarantine, left_on=["_source", "_source_stream", "_source_id"],
                             right_on=["_source", "_source_stream", "record_key"], how="inner")
        keyless = quarantine["_source_id"].isna()  # rejected at extraction: the planted records without an id
        found = len(held) + int(keyless.sum())
        reasons = pd.concat([held["reason"], quarantine.loc[keyless, "reason"]]).str.split(" \\(").str[0]
        print(f"planted invalid records in quarantine: {found}/{len(invalid)} "
              f"(reasons: {reasons.value_counts().to_dict()}); quarantine holds {len(quarantine)} rows in all")

        second = run(job)
        print(f"run 2 (no source change): {second}")
        third = run(job)
        print(f"run 3 (no source change): {third}")

        from sync_pipelines.pipeline import plan_destination

        stale = {d.tool: int((plan_destination(stack, warehouse, d)[0]["action"] == "update").sum())
                 for d in stack.destinations}
        print(f"destination records still differing from golden after re-extraction: {stale}")

        contact = warehouse.read_table("stg_hubspot_contacts").query("not _deleted").iloc[0]
        box.mutate("hubspot", "contacts", contact["_source_id"], {"jobtitle": "Chief Sync Officer"})
        fourth = run(job)
        print(f"run 4 (one HubSpot job title edited): {fourth}")


if __name__ == "__main__":
    main()
