"""``sync-pipelines``: run the sandbox, validate a stack file, and run the sync job from a terminal."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.table import Table

from sync_pipelines.stack import StackError, load_stack

console = Console()


@click.group()
def main() -> None:
    """Keep a company's tools in agreement."""


@main.command()
@click.option("--port", default=8765, show_default=True, help="Port to listen on (127.0.0.1).")
@click.option("--seed", default=42, show_default=True, help="Seed of the emulated company's data.")
@click.option("--scale", default=1.0, show_default=True, help="Data size: 1 ≈ 1,000 people; 300 ≈ 1M records.")
@click.option("--csv-dir", default=lambda: os.environ.get("SANDBOX_CSV_DIR", ".sync_pipelines/sandbox_csv"),
              show_default=".sync_pipelines/sandbox_csv", help="Folder for the legacy ERP's CSV export.")
@click.option("--no-rate-limits", is_flag=True, help="Lift the vendors' rate limits (benchmarks).")
def sandbox(port: int, seed: int, scale: float, csv_dir: str, no_rate_limits: bool) -> None:
    """Serve local emulators of every tool's API, with their real request and response shapes."""
    from sync_pipelines.sandbox import serve

    console.print(f"sandbox on http://127.0.0.1:{port} (seed {seed}, scale {scale}); CSV export in {csv_dir}")
    serve(port, seed=seed, scale=scale, csv_dir=csv_dir, rate_limits=not no_rate_limits)


@main.command()
@click.argument("path", required=False)
def validate(path: str | None) -> None:
    """Validate a stack file (default: $SYNC_STACK or the sandbox stack) and summarise it."""
    try:
        stack = load_stack(path)
    except StackError as exc:
        console.print(f"[red]invalid stack file[/red] {exc}")
        sys.exit(2)
    table = Table("tool", "kind", "streams → entities", "writes", "owner")
    for name, tool in stack.tools.items():
        streams = ", ".join(f"{s} → {st.entity}" for s, st in tool.streams.items()) or "—"
        table.add_row(name, tool.kind, streams, ", ".join(tool.scopes.write) or "—", tool.owner)
    console.print(f"stack [bold]{stack.name}[/bold]: {len(stack.tools)} tools, {len(stack.entities)} entities")
    console.print(table)


@main.command()
@click.option("--partition", help="Day to sync (YYYY-MM-DD); default: today in the stack's timezone.")
def sync(partition: str | None) -> None:
    """Run the nightly_sync job once, in this process, recorded in the Dagster instance ($DAGSTER_HOME)."""
    import dagster as dg

    from sync_pipelines.definitions import defs, stack

    partition = partition or datetime.now(ZoneInfo(stack.timezone)).strftime("%Y-%m-%d")
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = defs.get_job_def("nightly_sync").execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False
    )
    table = Table("asset", "mode", "read", "landed", "quarantined", "requests", "429s", "retries")
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        if "records_read" in meta:
            table.add_row(
                materialization.asset_key.to_user_string(), str(meta["mode"]), str(meta["records_read"]),
                str(meta["rows_landed"]), str(meta["rows_quarantined"]), str(meta["requests"]),
                str(meta["throttled_429"]), str(meta["retries"]),
            )
    console.print(table)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                console.print(f"[red]{event.step_key} failed:[/red] {event.step_failure_data.error.message.strip()}")
        sys.exit(1)
    console.print(f"[green]nightly_sync succeeded[/green] for partition {partition} (run {result.run_id})")
