"""The sync steps after extraction, each a function of (stack, warehouse) that Dagster only wires together.

stage → golden → golden check → write-back: read tables, call the pure core, write tables. Every table written here
has exactly one writer among these functions, but for the crosswalk: a write-back that creates a record links it to
its golden record at once (the tool matches a create on its key, so a link a concurrent rebuild drops is found
again, never made twice).
"""

from sync_pipelines.pipeline.actions import ActionRun, action_entities, run_action
from sync_pipelines.pipeline.common import METADATA, entity_streams, resolved_entities, table
from sync_pipelines.pipeline.golden import Golden, GoldenCheck, build_golden, check_golden
from sync_pipelines.pipeline.staging import Staging, stage
from sync_pipelines.pipeline.writeback import WriteBack, plan_destination, write_back

__all__ = ["METADATA", "ActionRun", "action_entities", "Golden", "GoldenCheck", "Staging", "WriteBack", "build_golden",
           "check_golden", "entity_streams", "plan_destination", "resolved_entities", "run_action", "stage", "table",
           "write_back"]
