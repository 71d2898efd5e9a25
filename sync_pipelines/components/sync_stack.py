"""The stack file as a Dagster component: a ``defs.yaml`` names the file, and ``dg`` serves what it declares."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from sync_pipelines.local import sandbox_defaults
from sync_pipelines.stack import DEFAULT_STACK, load_stack


class SeveralStacksError(ValueError):
    """Two stacks in one code location would define the same assets, jobs, schedules, sensors and resource."""


class SyncStack(dg.Component, dg.Resolvable, dg.Model):
    """Every tool, integration, check, write-back and action of one stack file, as assets, jobs, schedules and
    sensors. One per code location: a second one is refused, naming both stack files and what they share."""

    stack_file: str = Field(
        min_length=1,
        description="The stack file, relative to the project folder or absolute; e.g. "
                    "\"{{ env.SYNC_STACK or 'sync_pipelines/stacks/sandbox.yaml' }}\".")

    def stack_path(self, project_root: Path) -> Path:
        return (project_root / self.stack_file).resolve()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        others = context.component_tree.get_all_components(of_type=SyncStack)
        if len(others) > 1:
            raise SeveralStacksError(_collisions([other.stack_path(context.project_root) for other in others]))
        path = self.stack_path(context.project_root)
        if path == DEFAULT_STACK.resolve():
            sandbox_defaults()  # a new shell (`dg dev`): the bundled stack still finds the sandbox
        return _definitions(path)


def _definitions(stack_path: Path) -> dg.Definitions:
    # Imported here: sync_pipelines.definitions builds the code location from this component when imported.
    from sync_pipelines.definitions import build_definitions

    return build_definitions(load_stack(stack_path), stack_path)


def _names(defs: dg.Definitions) -> dict[str, set[str]]:
    return {
        "assets": {key.to_user_string() for assets in defs.assets for key in assets.keys},
        "jobs": {job.name for job in defs.jobs},
        "schedules": {schedule.name for schedule in defs.schedules},
        "sensors": {sensor.name for sensor in defs.sensors},
        "resources": set(defs.resources),
    }


def _collisions(paths: list[Path]) -> str:
    """What the stacks at ``paths`` would all define, kind by kind: why they cannot share a code location."""
    names = [_names(_definitions(path)) for path in paths]
    shared = {kind: sorted(set.intersection(*(each[kind] for each in names))) for kind in names[0]}
    listed = "; ".join(f"{kind} {', '.join(found)}" for kind, found in shared.items() if found)
    return (f"{len(paths)} SyncStack components in one code location, for the stack files "
            f"{', '.join(str(path) for path in paths)}: they would define the same {listed}. A code location serves "
            "one stack: remove all but one defs.yaml of type SyncStack, and serve each other stack on its own "
            "(SYNC_STACK=<file> dg dev, with a DAGSTER_HOME of its own)")
