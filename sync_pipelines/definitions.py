"""The Dagster code location, built from the stack file (``$SYNC_STACK`` or the bundled sandbox stack)."""

import dagster as dg

from sync_pipelines.assets.core import build_core_assets
from sync_pipelines.assets.extract import build_extraction_assets, daily_partitions
from sync_pipelines.automation import (
    failure_alert_sensor, freshness, integration_schedules, nightly_schedule, webhook_sensor,
)
from sync_pipelines.executors import executor_from_env
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import Stack, load_stack


def build_definitions(stack: Stack) -> dg.Definitions:
    extraction = build_extraction_assets(stack)
    nightly_sync = dg.define_asset_job(
        "nightly_sync",
        selection=dg.AssetSelection.all(),
        partitions_def=daily_partitions(stack),
        description="Every integration of the stack, end to end.",
    )
    freshness_checks, freshness_sensor = freshness(stack, extraction)
    return dg.Definitions(
        assets=[*extraction, *build_core_assets(stack)],
        asset_checks=freshness_checks,
        jobs=[nightly_sync],
        schedules=[nightly_schedule(stack, nightly_sync), *integration_schedules(stack, nightly_sync)],
        sensors=[webhook_sensor(stack, nightly_sync), failure_alert_sensor(stack), freshness_sensor],
        resources={"sync": SyncResource(stack_path=dg.EnvVar("SYNC_STACK").get_value())},
        executor=executor_from_env(),
    )


stack = load_stack()
defs = build_definitions(stack)
