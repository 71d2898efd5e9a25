"""``sync-pipelines``: run the sandbox, validate a stack file, and run the sync job from a terminal."""

from __future__ import annotations

import os
import sys
import uuid
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sync_pipelines.commands.conflicts import conflicts
from sync_pipelines.commands.identity import explain, identity_review, train_identity
from sync_pipelines.commands.pause import pause, resume
from sync_pipelines.commands.revert import revert
from sync_pipelines.local import dagster_home, sandbox_defaults
from sync_pipelines.stack import StackError, load_stack

# Messages are never hard-wrapped (a piped message stays one line); tables get a fixed width when piped.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


class _Commands(click.Group):
    """Every command's unexpected failure is one line (what failed, and that ``--debug`` shows where) with exit
    status 2; ``--debug`` lets the traceback through. Usage errors keep click's own message and status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place a failure becomes a message
            if ctx.params.get("debug"):
                raise
            command = ctx.invoked_subcommand or ctx.info_name
            message = escape(" ".join(str(exc).split()))  # one line, whatever the exception's own layout
            console.print(f"[red]{command} failed:[/red] {type(exc).__name__}: {message} (run with --debug for the "
                          "traceback)", highlight=False)
            sys.exit(2)


@click.group(cls=_Commands)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
def main(debug: bool) -> None:
    """Keep a company's tools in agreement.

    Runs go to the Dagster instance in $DAGSTER_HOME, else the current folder if it holds a dagster.yaml, else
    .sync_pipelines/dagster; the bundled sandbox stack uses the sandbox's credentials wherever none are set."""
    dagster_home()
    sandbox_defaults()


@main.command()
@click.option("--port", default=8765, show_default=True, help="Port to listen on (127.0.0.1).")
@click.option("--seed", default=42, show_default=True, help="Seed of the emulated company's data.")
@click.option("--scale", default=1.0, show_default=True, help="Data size: 1 ≈ 1,000 people; 300 ≈ 1M records.")
@click.option("--csv-dir", default=lambda: os.environ.get("SANDBOX_CSV_DIR", ".sync_pipelines/sandbox_csv"),
              show_default=".sync_pipelines/sandbox_csv", help="Folder for the legacy ERP's CSV export.")
@click.option("--no-rate-limits", is_flag=True, help="Lift the vendors' rate limits (benchmarks).")
@click.option("--webhook-url", help="Send signed webhooks on every record change to this receiver "
                                    "(e.g. http://127.0.0.1:8766, see `sync-pipelines webhooks`).")
def sandbox(port: int, seed: int, scale: float, csv_dir: str, no_rate_limits: bool, webhook_url: str | None) -> None:
    """Serve local emulators of every tool's API, with their real request and response shapes."""
    from sync_pipelines.sandbox import serve

    console.print(f"sandbox on http://127.0.0.1:{port} (seed {seed}, scale {scale}); CSV export in {csv_dir}")
    serve(port, seed=seed, scale=scale, csv_dir=csv_dir, rate_limits=not no_rate_limits, webhook_url=webhook_url)


@main.command()
@click.option("--port", default=8766, show_default=True, help="Port to listen on (127.0.0.1).")
def webhooks(port: int) -> None:
    """Receive tool webhooks, verify each vendor's signature, and store accepted events in the inbox table."""
    from sync_pipelines.webhooks import secrets_from_env, serve_webhooks

    stack = _stack_or_exit(None)
    try:
        secrets = secrets_from_env()
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)
    console.print(f"webhooks on http://127.0.0.1:{port}/webhooks/{{hubspot,stripe,zendesk}}")
    serve_webhooks(port, stack.warehouse.url, secrets)


@main.command()
@click.argument("start")
@click.argument("end")
@click.option("--tool", "tools", multiple=True, help="Only these tools' extractions (repeatable); default: all.")
def backfill(start: str, end: str, tools: tuple[str, ...]) -> None:
    """Re-pull the days START..END (YYYY-MM-DD, inclusive) in one run, then rebuild what depends on them."""
    import dagster as dg

    from sync_pipelines.assets.extract import REPULL_TAG, daily_partitions, extraction_key
    from sync_pipelines.definitions import build_definitions

    stack = _stack_or_exit(None)
    defs = build_definitions(stack)
    unknown = sorted(set(tools) - set(stack.tools))
    if unknown:
        console.print(f"[red]unknown tool(s) {', '.join(unknown)}; the stack has: {', '.join(stack.tools)}[/red]")
        sys.exit(2)
    keys = daily_partitions(stack).get_partition_keys()
    if start not in keys or end not in keys or start > end:
        console.print(f"[red]{start}..{end} is not a range of days between {keys[0]} and {keys[-1]}[/red]")
        sys.exit(2)
    extraction = [extraction_key(t, s) for t, _, s, _ in stack.streams() if not tools or t in tools]
    selection = dg.AssetSelection.assets(*extraction).downstream()
    result = _run_nightly_sync(
        defs, asset_selection=list(selection.resolve(defs.resolve_asset_graph())),
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end,
              REPULL_TAG: "true"},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    table = Table("asset", "mode", "read", "landed", "outside window")
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        if "records_read" in meta and event.partition in (start, None):
            table.add_row(event.asset_key.to_user_string(), str(meta["mode"]), str(meta["records_read"]),
                          str(meta["rows_landed"]), str(meta["rows_outside_window"]))
    console.print(table)
    _exit_if_failed(result)
    console.print(f"[green]backfill {start}..{end} succeeded in one run[/green] ({result.run_id})")


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Benchmark a full and a 1% incremental sync on N sandbox records: `bench --records 100000` (see --help)."""
    from sync_pipelines.bench import main as run

    run(list(args))


@main.command()
def plan() -> None:
    """Dry run: print, per destination tool, what the next write-back would update, create (mode upsert or create),
    delete (a deleted golden record's records under on_delete: archive) or leave alone, and what held changes back:
    field policies (field:policy and how many records), references the tool holds no record of what they point at
    (field:unresolved reference), the filter, a create's empty key, and max_per_run."""
    from sync_pipelines.pipeline import plan_destination
    from sync_pipelines.pipeline.writeback import CREATES_HELD_BACK
    from sync_pipelines.warehouse import Warehouse

    stack = _stack_or_exit(None)
    warehouse = Warehouse(stack, stack.warehouse.url)
    table = Table("tool", "stream", "entity", "updates", "creates", "unchanged", "duplicates in tool", "deletes",
                  "fields changing", "held back")
    for dest in stack.destinations:
        if warehouse.read_if_exists(f"golden_{dest.entity}") is None:
            console.print(f"[yellow]no golden {dest.entity} yet: run `sync-pipelines sync` first[/yellow]")
            sys.exit(1)
        planned, _ = plan_destination(stack, warehouse, dest)
        updates = planned[planned["action"] == "update"]
        fields = sorted({f for changes in updates["changes"] for f in changes})
        counts = planned["action"].value_counts()
        # a held-back reference names its golden record after the colon: counted by kind, as policies are
        held = Counter(f"{f}:{why.split(':')[0]}" for holds in planned["held_back"] for f, why in holds.items())
        held.update({f"not created ({why})": n for why, n in planned.attrs.get(CREATES_HELD_BACK, {}).items()})
        writes = int(counts.get("update", 0) + counts.get("create", 0))
        if dest.max_per_run is not None and writes > dest.max_per_run:
            held[f"all {writes}: over max_per_run {dest.max_per_run}"] = writes
        table.add_row(dest.tool, dest.stream, dest.entity, str(counts.get("update", 0)),
                      str(counts.get("create", 0)) if dest.creates else "—", str(counts.get("unchanged", 0)),
                      str(counts.get("duplicate", 0)), str(counts.get("delete", 0)),
                      ", ".join(fields) or "—",
                      ", ".join(f"{hold} {n}" for hold, n in sorted(held.items())) or "—")
    console.print(table)
    console.print("dry run: nothing was written")


@main.command()
@click.argument("path", required=False)
def catalog(path: str | None) -> None:
    """Print the integration catalog (purpose, trigger, actions, mappings, owner, priority) as Markdown."""
    from sync_pipelines.reports import catalog_markdown

    click.echo(catalog_markdown(_stack_or_exit(path)))


@main.command()
@click.option("--days", default=90, show_default=True, help="Period to review.")
def review(days: int) -> None:
    """Per integration: runs, success rate, records moved, errors, hours saved; flags to retire or investigate."""
    import dagster as dg

    from sync_pipelines.reports import review as build_review

    with dg.DagsterInstance.get() as instance:
        click.echo(build_review(_stack_or_exit(None), instance, days=days).to_markdown())


def _run_nightly_sync(defs, tags: dict[str, str] | None = None, **options):
    """Run ``nightly_sync`` in this process, first ending the runs a killed process left in progress (they hold
    the tools' pool slots: every later run would wait for them) and saying what was recovered."""
    import dagster as dg

    from sync_pipelines.recovery import recover_dead_runs, runner_tags

    instance = dg.DagsterInstance.get()
    for recovered in recover_dead_runs(instance):
        console.print(f"[yellow]recovered[/yellow] {recovered.describe()}")
    run_id = str(uuid.uuid4())
    with _StepProgress(instance, run_id):
        return defs.resolve_job_def("nightly_sync").execute_in_process(
            instance=instance, raise_on_error=False, run_id=run_id, tags={**(tags or {}), **runner_tags()},
            **options)


class _StepProgress:
    """A live line on the terminal while a run goes: steps finished, failed and skipped, and those running. Only
    on a terminal (piped output keeps just the summary); the run's own logs stay in its instance."""

    def __init__(self, instance, run_id: str) -> None:
        self.running: list[str] = []
        self.counts = Counter()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty())
        self.task = self.progress.add_task("starting the run")
        instance.add_event_listener(run_id, self)

    def __call__(self, entry) -> None:
        event = entry.dagster_event
        if event is None or not entry.step_key:
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.running.append(entry.step_key)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            self.counts[kind] += 1
            if entry.step_key in self.running:
                self.running.remove(entry.step_key)
        done = ", ".join(f"{n} {label}" for label, n in (("done", self.counts["STEP_SUCCESS"]),
                         ("failed", self.counts["STEP_FAILURE"]), ("skipped", self.counts["STEP_SKIPPED"])) if n)
        self.progress.update(self.task, description=f"steps {done or 'none done yet'}; running "
                                                    f"{', '.join(self.running) or '—'}")

    def __enter__(self) -> _StepProgress:
        self.progress.start()
        return self

    def __exit__(self, *_) -> None:
        self.progress.stop()


def _exit_if_failed(result) -> None:
    """Name every failed step with its innermost cause, then exit 1; the whole story is in the run's logs."""
    if result.success:
        return
    for event in result.all_events:
        if event.is_step_failure:
            console.print(f"[red]{event.step_key} failed:[/red] {_root_cause(event.step_failure_data.error)}")
    home = dagster_home()
    console.print(f"[red]run {result.run_id} failed[/red]: its logs are in the Dagster instance at {home} (the UI "
                  f"shows it when served with DAGSTER_HOME={home})")
    sys.exit(1)


def _root_cause(error) -> str:
    """The innermost error's message: Dagster wraps a step's exception in "Error occurred while executing op"."""
    while error.cause or error.context:
        error = error.cause or error.context
    return error.message.strip()


def _stack_or_exit(path: str | None):
    try:
        return load_stack(path)
    except StackError as exc:  # one line per problem, each naming the file, so an editor can jump to each
        if len(exc.problems) > 1:
            console.print(f"[red]invalid stack file[/red] {escape(exc.file)}: {len(exc.problems)} problems")
        for line in str(exc).splitlines():
            console.print(("" if len(exc.problems) > 1 else "[red]invalid stack file[/red] ") + escape(line),
                          highlight=False)
        sys.exit(2)


@main.command()
@click.argument("path", required=False)
def validate(path: str | None) -> None:
    """Validate a stack file (default: $SYNC_STACK or the sandbox stack) and summarise it."""
    stack = _stack_or_exit(path)
    table = Table("tool", "kind", "streams → entities", "writes", "owner")
    for name, tool in stack.tools.items():
        streams = ", ".join(f"{s} → {st.entity}" for s, st in tool.streams.items()) or "—"
        table.add_row(name, tool.kind, streams, ", ".join(tool.scopes.write) or "—", tool.owner)
    console.print(f"stack [bold]{stack.name}[/bold]: {len(stack.tools)} tools, {len(stack.entities)} entities")
    console.print(table)


@main.command()
@click.option("--partition", help="Day to sync (YYYY-MM-DD); default: today in the stack's timezone.")
def sync(partition: str | None) -> None:
    """Run the nightly_sync job once, in this process, recorded in the Dagster instance (see --help)."""
    from sync_pipelines.definitions import build_definitions

    stack = _stack_or_exit(None)
    defs = build_definitions(stack)
    partition = partition or datetime.now(ZoneInfo(stack.timezone)).strftime("%Y-%m-%d")
    result = _run_nightly_sync(defs, partition_key=partition,
                               run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    table = Table("asset", "mode", "read", "landed", "quarantined", "requests", "429s", "retries")
    others = Table("asset", "outcome")
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        if "records_read" in meta:
            table.add_row(
                materialization.asset_key.to_user_string(), str(meta["mode"]), str(meta["records_read"]),
                str(meta["rows_landed"]), str(meta["rows_quarantined"]), str(meta["requests"]),
                str(meta["throttled_429"]), str(meta["retries"]),
            )
        else:
            others.add_row(materialization.asset_key.to_user_string(),
                           ", ".join(f"{k}={v}" for k, v in meta.items() if not str(k).startswith("dagster/"))
                           or f"{meta.get('dagster/row_count', '')} rows")
    for evaluation in (e.event_specific_data for e in result.all_events
                       if e.event_type_value == "ASSET_CHECK_EVALUATION"):
        key = evaluation.asset_check_key
        verdict = "passed" if evaluation.passed else (
            "failed (warning: rows quarantined)" if evaluation.severity.value == "WARN" else "FAILED (blocking)")
        others.add_row(f"check {key.asset_key.to_user_string()}:{key.name}", verdict)
    console.print(table)
    console.print(others)
    _exit_if_failed(result)
    console.print(f"[green]nightly_sync succeeded[/green] for partition {partition} (run {result.run_id})")


for command in (conflicts, explain, identity_review, pause, resume, revert, train_identity):
    main.add_command(command)


if __name__ == "__main__":
    main()
