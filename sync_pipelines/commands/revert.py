"""``sync-pipelines revert RUN_ID [--apply]``: undo what one run wrote into the tools."""

from __future__ import annotations

import os
import sys
import uuid

import click

SHOWN = 50  # rows of each table printed; the counts say how many there are


def _run_status(run_id: str) -> str | None:
    """The run's status in the Dagster instance ($DAGSTER_HOME), None where there is none or it does not know it."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        return None if run is None else run.status.value


@click.command()
@click.argument("run_id")
@click.option("--apply", is_flag=True, help="Write the overwritten values back (default: only print them).")
def revert(run_id: str, apply: bool) -> None:
    """Undo RUN_ID's write-backs: print the values it overwrote; with --apply write them back, except fields
    changed again since (conflicts, never overwritten). Records its actions created are voided or deleted where
    the tool allows it (with --apply), the others listed as not undone."""
    import dagster as dg
    from rich.table import Table

    from sync_pipelines.cli import _stack_or_exit, console
    from sync_pipelines.connectors import ConnectorError
    from sync_pipelines.pipeline.revert import RevertError, revert as run_revert
    from sync_pipelines.resources import SyncResource
    from sync_pipelines.warehouse import Warehouse

    stack = _stack_or_exit(None)
    sync = SyncResource()
    revert_id = f"revert-{uuid.uuid4().hex[:12]}"
    try:
        outcome = run_revert(stack, Warehouse(stack, stack.warehouse.url), sync.connector, run_id, apply=apply,
                             revert_run_id=revert_id, run_status=_run_status(run_id))
    except (RevertError, ConnectorError, dg.Failure) as exc:  # a Failure: a credential not set
        console.print(f"[red]{getattr(exc, 'description', None) or exc}[/red]")
        sys.exit(2)
    for title, rows, columns in (
            ("restore" if apply else "would restore", outcome.restores, ["restore", "written"]),
            ("conflicts: changed again since the run, left as they are", outcome.conflicts,
             ["written", "now"])):
        table = Table("tool", "stream", "record", "field", *(
            {"restore": "restored value", "written": "the run wrote", "now": "holds now"}[c] for c in columns),
            title=f"{title} ({len(rows)})")
        for row in rows.head(SHOWN).itertuples():
            table.add_row(row.tool, row.stream, str(row.source_id), row.field,
                          *(("(empty)" if getattr(row, c) in (None, "") else str(getattr(row, c))) for c in columns))
        console.print(table)
        if len(rows) > SHOWN:
            console.print(f"… and {len(rows) - SHOWN} more")
    for created in outcome.created:
        console.print(f"created by the run: {created['tool']} {created['stream']} {created['id']}: {created['undo']}")
    if not apply:
        console.print("dry run: nothing was written; --apply restores the values above")
        return
    for error in outcome.errors[:20]:
        console.print(f"[red]write failed for {error}[/red]")
    console.print(f"revert {revert_id} of run {run_id}: {outcome.written} records restored, {outcome.failed} failed, "
                  f"{len(outcome.conflicts)} conflicts left; `sync-pipelines revert {revert_id}` undoes it")
    if outcome.failed:
        sys.exit(1)
