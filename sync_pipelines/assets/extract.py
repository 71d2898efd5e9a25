"""One extraction asset per tool stream: an ``extract_<tool>`` group per tool (the lineage's first column), daily
partitions for backfills, a pool per tool API, a freshness policy, and a deletion-scan check on the streams that
declare a scan."""


import warnings
from datetime import datetime, timedelta, timezone

import dagster as dg

from sync_pipelines.connectors import AuthError, ConnectorError
from sync_pipelines.core.quality import import_gx_in_background
from sync_pipelines.executors import steps_share_a_process
from sync_pipelines.extract import Extraction, Scan, extract_stream
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import Stack, Stream, Tool
from sync_pipelines.warehouse import landing_table_name

REPULL_TAG = "sync_pipelines/repull"  # "true": read the partitions' windows again, even behind the cursor
SCAN_CHECK = "deletion_scan"
FRESHNESS_HOURS = 26  # a nightly sync plus slack: an extraction older than this missed its night


def daily_partitions(stack: Stack) -> dg.DailyPartitionsDefinition:
    """Partitions up to and including today, so a normal run and a backfill use the same asset."""
    return dg.DailyPartitionsDefinition(start_date=stack.start_date, timezone=stack.timezone, end_offset=1)


def extraction_key(tool: str, stream: str) -> dg.AssetKey:
    return dg.AssetKey([tool, stream])


def extraction_group(tool: str) -> str:
    """A group per tool, named for what it does, so the lineage reads from the tools' extractions to ``core``."""
    return f"extract_{tool}"


def _describe(tool_name: str, tool: Tool, stream_name: str, stream: Stream) -> str:
    rows = "\n".join(
        f"| `{m.source}` | `{m.to}` | {', '.join(m.transforms) or '—'} |" for m in stream.fields
    )
    return (
        f"Extracts `{stream_name}` from {tool_name} ({tool.kind}) into "
        f"`{landing_table_name(tool_name, stream_name)}` as canonical **{stream.entity}**, incrementally on "
        f"`{stream.cursor or 'a full read'}`. {tool.description}\n\n"
        f"| {tool.kind} field | canonical field | transforms |\n|---|---|---|\n{rows}"
    )


def _metadata(result: Extraction, rows_in_table: int) -> dict:
    """Figures the UI plots over time: volume, API cost, success rate, latency and how stale the data is. Every
    count is this run's but ``dagster/row_count``, the rows the landing table holds (the UI's "Row count")."""
    stats = result.stats
    requests = stats.get("requests", 0)
    lag = (datetime.now(timezone.utc) - result.cursor_after).total_seconds() if result.cursor_after else None
    table = landing_table_name(result.tool, result.stream)
    return {
        "counts": dg.MetadataValue.md(
            f"Row count (`dagster/row_count`): the {rows_in_table} rows `{table}` holds now, landed by every run. "
            "Every other count is this run's read alone: `records_read` records read from the tool, "
            "`rows_landed` of them landed, `rows_quarantined` put in quarantine, `rows_outside_window` outside the "
            "partitions' window, `deleted_at_source` flagged deleted by the tool."),
        "mode": result.mode,
        "since": str(result.since) if result.since else "beginning",
        "cursor_after": str(result.cursor_after) if result.cursor_after else "none",
        "records_read": result.records_read,
        "rows_landed": result.rows_landed,
        "rows_quarantined": result.rows_quarantined,
        "rows_outside_window": result.rows_outside_window,
        "deleted_at_source": result.deleted,
        "fields_not_sent": ", ".join(sorted(result.absent_fields)) or "none",
        "requests": stats.get("requests", 0),
        "pages": stats.get("pages", 0),
        "retries": stats.get("retries", 0),
        "throttled_429": stats.get("throttled", 0),
        "latency_ms_total": dg.MetadataValue.float(float(stats.get("latency_ms", 0.0))),
        "latency_ms_p95": dg.MetadataValue.float(float(stats.get("latency_p95_ms", 0.0))),
        "request_success_rate": dg.MetadataValue.float(
            1.0 - stats.get("errors", 0) / requests if requests else 1.0),
        **({"freshness_lag_seconds": dg.MetadataValue.float(lag)} if lag is not None else {}),
        **(_scan_metadata(result.scan) if result.scan else {}),
        "dagster/row_count": rows_in_table,
    }


def _scan_metadata(scan: Scan) -> dict:
    """This run's scan figures (zero when it was not due), so the UI plots what each scan listed and deleted."""
    return {
        "deletion_scan": ("refused" if scan.refused else "ran") if scan.ran else "not due",
        "scan_ids_listed": scan.listed,
        "scan_listed_without_id": scan.without_id,
        "scan_ids_landed": scan.landed,
        "scan_marked_deleted": scan.deleted,
        "scan_skipped_not_due": int(not scan.ran),
        "scan_next_due": str(scan.next_at),
    }


def _scan_check(scan: Scan, alert: str | None) -> dg.AssetCheckResult:
    """Failed while the last scan was refused (until the next one is due), non-blocking: the refusal itself kept
    the records, so the steps downstream go on with them."""
    if scan.refused:
        description = (f"the last scan ({scan.at}) was refused: the tool no longer listed {scan.unlisted} of "
                       f"{scan.landed} live records, over the limit of {scan.max_share:.0%}; nothing was deleted"
                       if scan.ran else f"the last scan ({scan.at}) was refused; next at {scan.next_at}")
    else:
        description = f"the last scan ({scan.at}) deleted what the tool no longer lists"
    return dg.AssetCheckResult(
        check_name=SCAN_CHECK, passed=not scan.refused, severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={"last_scan": str(scan.at), "next_scan": str(scan.next_at), "unlisted": scan.unlisted,
                  "landed": scan.landed, "max_share": dg.MetadataValue.float(scan.max_share),
                  **({"alert": alert} if alert else {})})


def _alert_refusal(context: dg.AssetExecutionContext, sync: SyncResource, stack: Stack, tool_name: str,
                   stream_name: str, scan: Scan) -> str:
    """Post a refused scan to the stack's Slack tool, once per refused scan; what became of it goes in the check's
    metadata (a refusal fails no run, so the run-failure alert never sees it)."""
    slack = next((name for name, tool in stack.tools.items() if tool.kind == "slack"), None)
    if slack is None:
        return "not sent: the stack has no slack tool"
    text = (f":warning: deletion scan refused: {tool_name}/{stream_name} no longer lists {scan.unlisted} of its "
            f"{scan.landed} live records (limit {scan.max_share:.0%}); nothing was deleted, next scan at "
            f"{scan.next_at}")
    try:
        with sync.connector(slack) as connector:
            [sent] = connector.write("messages", [{"text": text}])
    except (ConnectorError, dg.Failure) as exc:
        sent = {"ok": False, "error": str(exc)}
    if sent["ok"]:
        return "posted"
    context.log.error(f"{tool_name}/{stream_name}: the alert of the refused deletion scan was not delivered: "
                      f"{sent['error']}")
    return f"not delivered: {sent['error']}"


def build_extraction_asset(stack: Stack, tool_name: str, stream_name: str) -> dg.AssetsDefinition:
    # A backfill's whole range in one run (one read of its window, not one per day) needs the single-run backfill
    # policy, which Dagster marks beta: a deliberate choice, so its warning is not repeated per asset at each start.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
        return _extraction_asset(stack, tool_name, stream_name)


def _extraction_asset(stack: Stack, tool_name: str, stream_name: str) -> dg.AssetsDefinition:
    tool = stack.tools[tool_name]
    stream = tool.streams[stream_name]

    @dg.asset(
        key=extraction_key(tool_name, stream_name),
        group_name=extraction_group(tool_name),
        description=_describe(tool_name, tool, stream_name, stream),
        owners=[tool.owner],
        kinds={tool.kind, "python"},
        tags={"entity": stream.entity},
        metadata={"table": landing_table_name(tool_name, stream_name), "entity": stream.entity,
                  "cursor_field": stream.cursor or "none"},
        partitions_def=daily_partitions(stack),
        backfill_policy=dg.BackfillPolicy.single_run(),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=FRESHNESS_HOURS)),
        pool=f"{tool_name}_api",
        check_specs=[dg.AssetCheckSpec(
            SCAN_CHECK, asset=extraction_key(tool_name, stream_name), blocking=False,
            description=f"The deletion scan (every {stream.deletions.every}) was not refused: it would have deleted "
                        f"at most {stream.deletions.max_share:.0%} of the live records.")] if stream.deletions else [],
    )
    def _extract(context: dg.AssetExecutionContext, sync: SyncResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        keys = context.partition_keys
        tags = context.run.tags  # a range, a UI backfill, or `sync-pipelines backfill` (a single day too) re-pulls
        backfill = len(keys) > 1 or "dagster/backfill" in tags or tags.get(REPULL_TAG) == "true"
        if steps_share_a_process():  # the staging steps after it validate in this process
            import_gx_in_background()
        try:
            result = extract_stream(
                stack, sync.warehouse, sync.connector(tool_name), tool_name, stream_name,
                window=(window.start, window.end), repull=backfill,
            )
        except AuthError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        except ConnectorError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(
            f"{tool_name}/{stream_name}: {result.mode} read since {result.since or 'the beginning'}: "
            f"{result.records_read} records, {result.rows_landed} landed, {result.rows_quarantined} quarantined"
        )
        metadata = _metadata(result, sync.warehouse.count(landing_table_name(tool_name, stream_name)))
        scan = result.scan
        if scan is None:
            return dg.MaterializeResult(metadata=metadata)
        if scan.ran:
            context.log.info(f"{tool_name}/{stream_name}: deletion scan: {scan.listed} ids listed, {scan.landed} "
                             f"live landed, {scan.unlisted} no longer listed, {scan.deleted} marked deleted"
                             + (" (refused)" if scan.refused else ""))
        alert = _alert_refusal(context, sync, stack, tool_name, stream_name, scan) if scan.ran and scan.refused \
            else None
        return dg.MaterializeResult(metadata=metadata, check_results=[_scan_check(scan, alert)])

    return _extract


def build_extraction_assets(stack: Stack) -> list[dg.AssetsDefinition]:
    return [build_extraction_asset(stack, tool, stream) for tool, _, stream, _ in stack.streams()]
