"""Measure the extraction acceptance figures against a fresh sandbox and print them.

    .venv/bin/python scripts/measure_extraction.py [--scale 15] [--warehouse-url URL]

1. full extraction with the vendors' rate limits on: records landed vs the sandbox's ground truth, requests, 429s;
2. a second run with no changes: requests made;
3. a full extraction with 20% injected 5xx errors: same counts, retries;
4. a bad token: the error, requests made, whether the secret leaked.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from sync_pipelines.assets.extract import build_extraction_assets
from sync_pipelines.resources import SyncResource
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

READABLE = {"stripe/customers": "live"}  # Stripe lists never return deleted objects


def materialize(url: str, select=lambda key: True) -> tuple[dg.ExecuteInProcessResult, float]:
    started = time.perf_counter()
    assets = [a for a in build_extraction_assets(load_stack()) if select(a.key)]
    result = dg.materialize(
        assets, partition_key=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        resources={"sync": SyncResource(warehouse_url=url)}, raise_on_error=False,
    )
    return result, time.perf_counter() - started


def compare(box, url: str) -> tuple[int, int, list[str]]:
    truth = box.truth()["streams"]
    stack = load_stack()
    warehouse = Warehouse(stack, url)
    quarantine = warehouse.read_table("quarantine")
    expected = landed = 0
    mismatches = []
    for tool, _, stream, _ in stack.streams():
        name = f"{tool}/{stream}"
        held = int(((quarantine["_source"] == tool) & (quarantine["_source_stream"] == stream)).sum())
        got = warehouse.count(landing_table_name(tool, stream)) + held
        want = truth[name][READABLE.get(name, "total")]
        expected, landed = expected + want, landed + got
        if got != want:
            mismatches.append(f"{name}: {got} != {want}")
    return expected, landed, mismatches


def totals(stats: dict) -> tuple[int, int, int]:
    tools = [v for k, v in stats.items() if isinstance(v, dict) and "requests" in v]
    requests = sum(v["requests"] for v in tools)
    throttled = sum(v["throttled"] for v in tools)
    errors = sum(v["server_errors"] for v in tools)
    return requests, throttled, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=15.0)
    parser.add_argument("--warehouse-url")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sync-measure-"))

    with running_sandbox(scale=args.scale, csv_dir=tmp / "csv") as box:
        os.environ.update(sandbox_env(box.url, tmp / "csv"))
        url = args.warehouse_url or f"sqlite:///{tmp / 'limits.db'}"
        box.stats(reset=True)
        result, seconds = materialize(url)
        stats = box.stats(reset=True)
        requests, throttled, _ = totals(stats)
        by_tool = {k: v["throttled"] for k, v in stats.items() if isinstance(v, dict) and v.get("throttled")}
        expected, landed, mismatches = compare(box, url)
        print(f"1. full extraction, scale {args.scale}, rate limits on: success={result.success} in {seconds:.1f} s; "
              f"{landed}/{expected} records landed or quarantined; {requests} requests; {throttled} answered 429 "
              f"{by_tool or ''}; "
              f"mismatches: {mismatches or 'none'}")
        result, seconds = materialize(url)
        again, throttled, _ = totals(box.stats(reset=True))
        print(f"2. second run, no changes: success={result.success} in {seconds:.1f} s; {again} requests "
              f"(first run {requests}); {throttled} answered 429")

    with running_sandbox(scale=1.0, csv_dir=tmp / "csv5", rate_limits=False) as box:
        os.environ.update(sandbox_env(box.url, tmp / "csv5"))
        box.set_faults(error_rate=0.2)
        url = f"sqlite:///{tmp / 'errors.db'}"
        result, seconds = materialize(url)
        requests, _, errors = totals(box.stats(reset=True))
        expected, landed, mismatches = compare(box, url)
        retries = sum(
            e.materialization.metadata["retries"].value for e in result.get_asset_materialization_events()
        )
        print(f"3. 20% injected 5xx: success={result.success} in {seconds:.1f} s; {landed}/{expected} records; "
              f"{requests} requests, {errors} answered 5xx, {retries} retries; mismatches: {mismatches or 'none'}")

        box.set_faults(error_rate=0.0)
        secret = "pat-na1-not-the-real-token"
        os.environ["HUBSPOT_ACCESS_TOKEN"] = secret
        result, _ = materialize(f"sqlite:///{tmp / 'auth.db'}", select=lambda key: key.path == ["hubspot", "contacts"])
        requests, _, _ = totals(box.stats(reset=True))
        [failure] = [e for e in result.all_events if e.is_step_failure]
        leaked = any(secret in str(e) for e in result.all_events)
        print(f"4. bad token: {failure.step_failure_data.error.message.strip()!r}; {requests} request(s); "
              f"secret in any event: {leaked}")


if __name__ == "__main__":
    main()
