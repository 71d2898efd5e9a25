"""One extraction asset per tool stream: a group per tool, daily partitions for backfills, a pool per tool API."""


from datetime import datetime, timezone

import dagster as dg

from sync_pipelines.connectors import AuthError, ConnectorError
from sync_pipelines.extract import Extraction, extract_stream
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import Stack, Stream, Tool
from sync_pipelines.warehouse import landing_table_name

REPULL_TAG = "sync_pipelines/repull"  # "true": read the partitions' windows again, even behind the cursor


def daily_partitions(stack: Stack) -> dg.DailyPartitionsDefinition:
    """Partitions up to and including today, so a normal run and a backfill use the same asset."""
    return dg.DailyPartitionsDefinition(start_date=stack.start_date, timezone=stack.timezone, end_offset=1)


def extraction_key(tool: str, stream: str) -> dg.AssetKey:
    return dg.AssetKey([tool, stream])


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


def _metadata(result: Extraction) -> dict:
    """Figures the UI plots over time: volume, API cost, success rate, latency and how stale the data is."""
    stats = result.stats
    requests = stats.get("requests", 0)
    lag = (datetime.now(timezone.utc) - result.cursor_after).total_seconds() if result.cursor_after else None
    return {
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
        "dagster/row_count": result.rows_landed,
    }


def build_extraction_asset(stack: Stack, tool_name: str, stream_name: str) -> dg.AssetsDefinition:
    tool = stack.tools[tool_name]
    stream = tool.streams[stream_name]

    @dg.asset(
        key=extraction_key(tool_name, stream_name),
        group_name=tool_name,
        description=_describe(tool_name, tool, stream_name, stream),
        owners=[tool.owner],
        kinds={tool.kind, "python"},
        tags={"entity": stream.entity},
        metadata={"table": landing_table_name(tool_name, stream_name), "entity": stream.entity,
                  "cursor_field": stream.cursor or "none"},
        partitions_def=daily_partitions(stack),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=f"{tool_name}_api",
    )
    def _extract(context: dg.AssetExecutionContext, sync: SyncResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        keys = context.partition_keys
        tags = context.run.tags  # a range, a UI backfill, or `sync-pipelines backfill` (a single day too) re-pulls
        backfill = len(keys) > 1 or "dagster/backfill" in tags or tags.get(REPULL_TAG) == "true"
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
        return dg.MaterializeResult(metadata=_metadata(result))

    return _extract


def build_extraction_assets(stack: Stack) -> list[dg.AssetsDefinition]:
    return [build_extraction_asset(stack, tool, stream) for tool, _, stream, _ in stack.streams()]
