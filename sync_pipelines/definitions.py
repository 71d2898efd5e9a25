"""The Dagster code location: the defs folder (``sync_pipelines/defs``), whose ``SyncStack`` component names the stack
file (``$SYNC_STACK`` or the bundled sandbox stack); ``build_definitions`` is what a stack becomes."""

import functools
import importlib
import warnings
from pathlib import Path

import dagster as dg

from sync_pipelines.assets.core import build_core_assets
from sync_pipelines.assets.extract import build_extraction_assets
from sync_pipelines.automation import failure_alert_sensor, integration_schedules, nightly_schedule, webhook_sensor
from sync_pipelines.executors import executor_from_env
from sync_pipelines.pipeline.revert import RevertError, revert
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import Stack


class RevertConfig(dg.Config):
    """Which run to undo; a dry run unless ``apply``."""

    run_id: str
    apply: bool = False


@dg.op(description="Undo one run's write-backs: the values it overwrote go back into the tools (with apply), except "
                   "fields changed again since, which are listed as conflicts; records its actions created are "
                   "listed, not removed. The revert's own writes are logged under this run's id: it can be reverted.")
def revert_run(context: dg.OpExecutionContext, config: RevertConfig, sync: SyncResource) -> dg.Output:
    known = context.instance.get_run_by_id(config.run_id)
    try:
        outcome = revert(sync.stack, sync.warehouse, sync.connector, config.run_id, apply=config.apply,
                         revert_run_id=context.run_id, run_status=None if known is None else known.status.value)
    except RevertError as exc:
        raise dg.Failure(str(exc)) from None
    for row in outcome.conflicts.itertuples():
        context.log.warning(f"conflict, left as it is: {row.tool} {row.stream} {row.source_id} {row.field} "
                            "changed again since the run")
    if outcome.failed:
        raise dg.Failure(f"{outcome.failed} restores failed; first: {outcome.errors[0]}")
    return dg.Output(None, metadata={
        "applied": config.apply, "restores": len(outcome.restores), "written": outcome.written,
        "conflicts": len(outcome.conflicts), "created_by_the_run_not_undone": len(outcome.created)})


@dg.job(name="revert", description="Undo a run: set ops.revert_run.config.run_id (and apply: true to write).")
def revert_job():
    revert_run()


def build_definitions(stack: Stack, stack_path: Path | None = None) -> dg.Definitions:
    """``stack_path``: the file ``stack`` was loaded from, which the steps load again; default ``$SYNC_STACK``."""
    extraction = build_extraction_assets(stack)
    nightly_sync = dg.define_asset_job(
        "nightly_sync",
        selection=dg.AssetSelection.all(),
        description="Every integration of the stack, end to end.",
    )
    return dg.Definitions(
        assets=[*extraction, *build_core_assets(stack)],
        jobs=[nightly_sync, revert_job],
        schedules=[nightly_schedule(stack, nightly_sync), *integration_schedules(stack, nightly_sync)],
        sensors=[webhook_sensor(stack, nightly_sync), failure_alert_sensor(stack)],
        resources={"sync": SyncResource(
            stack_path=str(stack_path) if stack_path else dg.EnvVar("SYNC_STACK").get_value())},
        executor=executor_from_env(),
    )


@functools.cache
def _code_location() -> dg.Definitions:
    # The package's parent is the project folder of `dg` (its pyproject.toml) in a checkout, and site-packages, which
    # holds the bundled stack at the same relative path, in an installed package (there is no pyproject.toml to find).
    tree = dg.ComponentTree.from_module(importlib.import_module("sync_pipelines.defs"),
                                        Path(__file__).resolve().parent.parent)
    with warnings.catch_warnings():
        # The component loader itself calls Dagster's beta and preview APIs (a code reference on every asset and
        # sensor): warnings about Dagster's internals, not about this project's use of Dagster, still warned about.
        for category in (dg.BetaWarning, dg.PreviewWarning):
            warnings.filterwarnings("ignore", category=category, module=r"dagster\.")
        return tree.build_defs()


@dg.definitions
def code_location() -> dg.Definitions:
    """What Dagster serves (`dg dev`, `dagster dev -w workspace.yaml`): the defs folder, built when Dagster loads this
    module, not when the CLI imports ``build_definitions`` (a stack error then stays the CLI's own message)."""
    return _code_location()


def __getattr__(name: str):
    """``defs`` (the code location) and ``stack`` (its stack), built on first use."""
    if name == "defs":
        return _code_location()
    if name == "stack":
        return _code_location().resources["sync"].stack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
