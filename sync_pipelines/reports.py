"""The integration catalog and the periodic review, both derived from the stack file and Dagster's run history.

Written so nobody maintains a separate list of integrations: the catalog is what the stack declares, and the review
is what actually ran, so an integration that stopped moving data shows up as a candidate to retire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
from dagster import DagsterEventType, DagsterRunStatus

from sync_pipelines.pause import Pause, covers, pauses
from sync_pipelines.stack import Integration, Stack, Stream

#: Metadata of our assets that counts records moved: read by an extraction, written back, created by an action.
RECORD_METADATA = ("records_read", "written", "created")
#: A run counts once it has finished; queued or running runs would make the rates flicker.
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
#: Above this share of failed runs an integration is flagged ``investigate``.
INVESTIGATE_ERROR_RATE = 0.2
_ASSET_EVENTS = {DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_MATERIALIZATION}


def ranked(stack: Stack) -> list[Integration]:
    """Integrations by priority score, highest first; ties by name so the order never depends on the file order."""
    return sorted(stack.integrations, key=lambda i: (-i.priority.score, i.name))


def asset_entities(stack: Stack, key: dg.AssetKey) -> set[str] | None:
    """The canonical entities a ``[tool, name]`` asset concerns, or None when the stack does not declare the asset.

    ``name`` is a stream (extraction), ``<entity>_writeback`` (write-back) or an action name (the entity watched
    and the entity created).
    """
    if len(key.path) != 2 or key.path[0] not in stack.tools:
        return None
    tool_name, name = key.path
    tool = stack.tools[tool_name]
    if name in tool.streams:
        return {tool.streams[name].entity}
    for dest in stack.destinations:
        if dest.tool == tool_name and name == f"{dest.entity}_writeback":
            return {dest.entity}
    for action in stack.actions:
        if action.create.tool == tool_name and action.name == name:
            created = tool.streams.get(action.create.stream)
            return {action.when.entity} | ({created.entity} if created else set())
    return None


def belongs_to(stack: Stack, integration: Integration, key: dg.AssetKey) -> bool:
    """Whether an asset is part of an integration: one of its tools, and one of its entities when it lists any.

    Narrowing by entity keeps a shared tool (Salesforce feeds several integrations) from crediting every
    integration with every Salesforce record; an asset the stack does not declare falls back to the tool alone.
    """
    return len(key.path) >= 2 and covers(integration, key.path[0], asset_entities(stack, key))


# --- catalog ----------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell or list item (pipes and line breaks would break the layout)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def mapping_table(field_label: str, stream: Stream) -> str:
    """A stream's field mappings as a Markdown table: tool field → canonical field, with transforms."""
    rows = [f"| `{m.source}` | `{m.to}` | {', '.join(m.transforms) or '—'} |" for m in stream.fields]
    return "\n".join([f"| {_cell(field_label)} | canonical field | transforms |", "|---|---|---|", *rows])


def _trigger(integration: Integration) -> str:
    trigger = integration.trigger
    if trigger.schedule:
        return f"schedule `{trigger.schedule}`"
    if trigger.event:
        return f"event `{trigger.event}`"
    return "manual (no schedule or event)"


def _actions(stack: Stack, integration: Integration) -> list[str]:
    """The write-backs and derived actions that run on the integration's tools and entities."""
    lines = [
        f"write back golden {dest.entity} to {dest.tool} `{dest.stream}` (matched on `{dest.key}`)"
        for dest in stack.destinations
        if belongs_to(stack, integration, dg.AssetKey([dest.tool, f"{dest.entity}_writeback"]))
    ]
    lines += [
        f"`{action.name}`: when {action.when.describe()}, create {action.create.tool} `{action.create.stream}`"
        for action in stack.actions
        if belongs_to(stack, integration, dg.AssetKey([action.create.tool, action.name]))
    ]
    return lines


def _integration_section(stack: Stack, rank: int, integration: Integration, paused: Pause | None) -> str:
    priority = integration.priority
    actions = _actions(stack, integration) or ["none"]
    parts = [
        f"## {rank}. {integration.name} — score {priority.score}" + (" — PAUSED" if paused else ""),
        _cell(integration.purpose),
        "\n".join([
            *([f"- **Paused:** {_cell(paused.describe())} (`sync-pipelines resume {integration.name}`)"]
              if paused else []),
            f"- **Owner:** {_cell(integration.owner)}",
            f"- **Trigger:** {_trigger(integration)}",
            f"- **Priority:** {priority.score} = frequency {priority.frequency} × impact {priority.impact} × "
            f"feasibility {priority.feasibility}",
            f"- **Tools:** {', '.join(integration.tools)}",
            f"- **Entities:** {', '.join(integration.entities) or 'all of its tools’ streams'}",
            "- **Actions:**",
            *(f"  - {line}" for line in actions),
        ]),
    ]
    for tool_name in integration.tools:
        tool = stack.tools[tool_name]
        for stream_name, stream in tool.streams.items():
            if belongs_to(stack, integration, dg.AssetKey([tool_name, stream_name])):
                parts.append(f"### {tool_name} `{stream_name}` → {stream.entity}")
                parts.append(mapping_table(f"{tool_name} field", stream))
    return "\n\n".join(parts)


def catalog_markdown(stack: Stack, paused: dict[str, Pause] | None = None) -> str:
    """Every integration of the stack, most valuable first, with how it runs and how its fields map, and which are
    paused (``paused``; by default as the stack's warehouse says)."""
    paused = pauses(stack.warehouse.url) if paused is None else paused
    integrations = ranked(stack)
    header = [
        f"# Integration catalog: {_cell(stack.name)}",
        f"{len(integrations)} integrations over {len(stack.tools)} tools, sorted by priority score "
        "(frequency × impact × feasibility, each from 1 to 5).",
    ]
    sections = [_integration_section(stack, rank, i, paused.get(i.name))
                for rank, i in enumerate(integrations, start=1)]
    return "\n\n".join(header + (sections or ["No integrations are declared in the stack file."])) + "\n"


# --- review -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunFacts:
    """One finished run: its status and, per asset it planned, the records it moved (None: not materialized)."""

    status: DagsterRunStatus
    finished_at: datetime
    records: dict[dg.AssetKey, int | None]

    def outcome_for(self, stack: Stack, integration: Integration) -> tuple[str, int] | None:
        """The run as the integration saw it (``success``, ``failure`` or ``canceled``) and the records it moved.

        One nightly run holds every integration's assets, so a failure counts only against the integrations whose
        own assets did not materialize; None when the run did not plan any of the integration's assets.
        """
        own = [n for key, n in self.records.items() if belongs_to(stack, integration, key)]
        if not own:
            return None
        moved = sum(n or 0 for n in own)
        if self.status == DagsterRunStatus.SUCCESS or None not in own:
            return "success", moved
        return ("failure" if self.status == DagsterRunStatus.FAILURE else "canceled"), moved


def _metadata_number(metadata: dict[str, Any], name: str) -> int:
    value = metadata.get(name)
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else 0


def _run_facts(instance: dg.DagsterInstance, record: Any) -> _RunFacts:
    """A run's assets from its planned and materialized events.

    Planned events count too, so a run that failed before materializing still counts against the integration.
    A partition-range run emits one materialization per partition with the same metadata: count one per asset.
    """
    run = record.dagster_run
    events = instance.get_records_for_run(run.run_id, of_type=_ASSET_EVENTS).records
    records: dict[dg.AssetKey, int | None] = {}
    for event in events:
        key, materialization = event.asset_key, event.asset_materialization
        if key is None:
            continue
        if materialization is None:
            records.setdefault(key, None)
        else:
            records[key] = sum(_metadata_number(materialization.metadata, name) for name in RECORD_METADATA)
    finished = record.end_time
    return _RunFacts(
        status=run.status,
        finished_at=(datetime.fromtimestamp(finished, timezone.utc) if finished else record.update_timestamp),
        records=records,
    )


def _review_row(
    stack: Stack, integration: Integration, runs: Iterable[_RunFacts], minutes_saved_per_record: float,
    paused: Pause | None,
) -> dict[str, Any]:
    seen = [(run, outcome) for run in runs if (outcome := run.outcome_for(stack, integration))]
    count = len(seen)
    successes = [run for run, (status, _) in seen if status == "success"]
    failures = sum(status == "failure" for _, (status, _) in seen)
    records_moved = sum(moved for _, (_, moved) in seen)
    error_rate = failures / count if count else None
    flags = ["paused"] if paused else []
    if records_moved == 0 and not paused:  # a paused integration moves nothing by design
        flags.append("retire")
    if error_rate is not None and error_rate > INVESTIGATE_ERROR_RATE:
        flags.append("investigate")
    return {
        "integration": integration.name,
        "owner": integration.owner,
        "score": integration.priority.score,
        "runs": count,
        "successful_runs": len(successes),
        "failed_runs": failures,
        "success_rate": len(successes) / count if count else None,
        "error_rate": error_rate,
        "records_moved": records_moved,
        "hours_saved": records_moved * minutes_saved_per_record / 60,
        "last_success": max((run.finished_at for run in successes), default=None),
        "flags": flags,
        "paused": paused.describe() if paused else None,
    }


@dataclass(frozen=True)
class Review:
    """Per integration, what its runs did in a period; ``rows`` are plain dicts (``pandas.DataFrame(rows)`` works)."""

    stack_name: str
    since: datetime
    until: datetime
    minutes_saved_per_record: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_markdown(self) -> str:
        def rate(value: float | None) -> str:
            return "—" if value is None else f"{value:.0%}"

        def when(value: datetime | None) -> str:
            return "never" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

        days = (self.until - self.since).days
        paragraphs = [
            f"# Integration review: {_cell(self.stack_name)}, last {days} days",
            f"From {when(self.since)} to {when(self.until)}. Finished runs only; an integration takes part in a run "
            "when the run planned an asset of its tools and entities, and the run failed for it only when one of "
            "those assets did not materialize.",
            f"Assumption: each record moved (read + written back + created by an action) saves "
            f"{self.minutes_saved_per_record:g} minutes of manual work. Flags: `retire` when nothing moved in the "
            f"period, `investigate` when more than {INVESTIGATE_ERROR_RATE:.0%} of runs failed, `paused` while "
            "it is paused (its schedules, webhook runs, write-backs and actions do nothing).",
            *(f"Paused: {_cell(row['paused'])}." for row in self.rows if row["paused"]),
        ]
        table = [
            "| integration | owner | score | runs | successful | success rate | error rate | records moved | "
            "hours saved | last success | flags |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        table += [
            f"| {row['integration']} | {_cell(row['owner'])} | {row['score']} | {row['runs']} | "
            f"{row['successful_runs']} | {rate(row['success_rate'])} | {rate(row['error_rate'])} | "
            f"{row['records_moved']:,} | {row['hours_saved']:,.1f} | {when(row['last_success'])} | "
            f"{', '.join(row['flags']) or '—'} |"
            for row in self.rows
        ]
        return "\n\n".join([*paragraphs, "\n".join(table)]) + "\n"


def review(
    stack: Stack,
    instance: dg.DagsterInstance,
    days: int = 90,
    now: datetime | None = None,
    minutes_saved_per_record: float = 0.5,
    paused: dict[str, Pause] | None = None,
) -> Review:
    """Runs, success and error rates, records moved and hours saved per integration over the last ``days`` days,
    and which are paused (``paused``; by default as the stack's warehouse says)."""
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
        raise ValueError(f"review: days must be a positive whole number of days, got {days!r}")
    if minutes_saved_per_record < 0:
        raise ValueError(f"review: minutes_saved_per_record must be 0 or more, got {minutes_saved_per_record!r}")
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        raise ValueError(f"review: now must be timezone-aware (e.g. datetime.now(timezone.utc)), got {now!r}")
    since = now - timedelta(days=days)
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED, created_after=since, created_before=now)
    )
    runs = [_run_facts(instance, record) for record in records]
    paused = pauses(stack.warehouse.url) if paused is None else paused
    rows = [_review_row(stack, i, runs, minutes_saved_per_record, paused.get(i.name)) for i in ranked(stack)]
    return Review(stack.name, since, now, minutes_saved_per_record, rows)
