"""``sync-pipelines conflicts``: the fields two tools changed to different values since the sync before, for a
steward to review (each was decided by its survivorship rule; nothing waits on the review)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click


@click.command()
@click.option("--entity", help="Only this entity's golden records (default: every entity).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Only edits decided on or after this day (UTC), YYYY-MM-DD.")
def conflicts(entity: str | None, since: datetime | None) -> None:
    """List concurrent edits: per golden record and field, each tool's new value and the value its rule kept."""
    from rich.table import Table

    from sync_pipelines.cli import _stack_or_exit, console
    from sync_pipelines.core.changes import shown
    from sync_pipelines.pipeline import resolved_entities
    from sync_pipelines.pipeline.golden import CONCURRENT_TABLE
    from sync_pipelines.warehouse import Warehouse

    stack = _stack_or_exit(None)
    known = resolved_entities(stack)
    if entity is not None and entity not in known:
        console.print(f"[red]--entity {entity!r} is not an entity with golden records; known: {', '.join(known)}[/red]")
        sys.exit(2)
    edits = Warehouse(stack, stack.warehouse.url).read_if_exists(CONCURRENT_TABLE)
    if edits is not None:
        edits["decided_at"] = _utc(edits["decided_at"])
        if since:
            edits = edits[edits["decided_at"] >= since.replace(tzinfo=timezone.utc)]
        if entity:
            edits = edits[edits["entity"] == entity]
    if edits is None or edits.empty:
        console.print("no concurrent edits" + (f" of {entity}" if entity else "")
                      + (f" since {since:%Y-%m-%d}" if since else ""))
        return
    table = Table("decided at", "entity", "record", "field", "tool", "tool record", "value", "changed at", "kept")
    edits = edits.sort_values(["decided_at", "entity", "entity_id", "field", "tool"])
    for row in edits.itertuples():
        table.add_row(f"{row.decided_at:%Y-%m-%d %H:%M}", row.entity, str(row.entity_id), row.field, row.tool,
                      str(row.source_id), shown(row.value), f"{_utc(row.changed_at):%Y-%m-%d %H:%M}",
                      f"{row.decided_tool}: {shown(row.decided_value)}")
    console.print(table)
    cases = len(edits.drop_duplicates(["entity", "entity_id", "field", "decided_at"]))
    console.print(f"{cases} field(s) changed differently in two or more tools ({len(edits)} edits)")


def _utc(values):
    import pandas as pd

    return pd.to_datetime(values, utc=True)

