"""After extraction, in the order data flows (each a group, so the lineage reads left to right): ``core`` (staging with
per-tool quality checks, golden records with a blocking check, references), then ``writeback`` (golden values back to
the tools) and ``actions`` (records created on transitions)."""

import dagster as dg

from sync_pipelines.assets.extract import extraction_key
from sync_pipelines.connectors import ConnectorError
from sync_pipelines.core.changes import shown
from sync_pipelines.core.quality import QualityReport, markdown_table, to_metadata
from sync_pipelines.pipeline import (
    action_entities, build_golden, check_golden, entity_streams, resolved_entities, run_action, stage, table,
    write_back,
)
from sync_pipelines.pause import holding, pauses
from sync_pipelines.pipeline.references import (
    key_reference_fields, link_references, reference_fields, referenced_entities,
)
from sync_pipelines.pipeline.staging import Held
from sync_pipelines.pipeline.writeback import CapExceeded
from sync_pipelines.reports import asset_entities
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import Action, Destination, Stack

CORE_OWNER = "team:data"
CORE_GROUP, WRITEBACK_GROUP, ACTIONS_GROUP = "core", "writeback", "actions"


def staged_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(f"staged_{entity}")


def golden_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(f"golden_{entity}")


def writeback_key(dest: Destination) -> dg.AssetKey:
    return dg.AssetKey([dest.tool, f"{dest.entity}_writeback"])


def _expectation_metadata(meta: dict) -> dict:
    """The expectations' results on the rows checked this run, as Dagster values: a Markdown table the UI renders,
    then one entry per failing expectation with its sample."""
    out = {"expectations_this_run": dg.MetadataValue.md(meta["summary"])}
    for item in meta["expectations"]:
        if not item["success"]:
            name = f"{item['column']}: {item['expectation']}"
            out[name] = dg.MetadataValue.md(
                f"**{item['unexpected_count']} unexpected ({item['unexpected_percent']:.2f}%)**, "
                f"on_fail={item['on_fail']}, sources: {item['sources']}\n\n{item['sample']}"
            )
    return out


def _held_metadata(held: Held) -> dict:
    """Which of a tool's records wait in quarantine and why, as stored with each: what a steward fixes at the
    source, whichever run put them there."""
    samples = [{"stream": row.stream, "source id": row.source_id or "(none: keyed by its payload)",
                "reason": row.reason, "quarantined at": f"{row.quarantined_at:%Y-%m-%d %H:%M:%S %Z}"}
               for row in held.samples.itertuples()]
    reasons = held.by_reason.to_dict("records")
    return {"held_in_quarantine_by_reason": dg.MetadataValue.md(markdown_table(reasons)),
            "held_in_quarantine_samples": dg.MetadataValue.md(markdown_table(samples))}


def _quality_check(tool: str, reports: list[QualityReport], held: Held | None) -> dg.AssetCheckResult:
    """A tool's check: failed while an expectation fails on the rows checked this run, or while any of its records
    is held in quarantine, from this run or an earlier one (an incremental run checks only the rows that changed,
    so the records held since say what is still wrong). Every stream counts; the expectations shown are its worst
    stream's."""
    worst = max(reports, key=lambda report: (not report.success, report.failure_rate))
    checked = sum(report.row_count for report in reports)
    quarantined = sum(report.quarantined_count for report in reports)
    passed_now = all(report.success for report in reports)
    held_records = held.records if held else 0
    this_run = f"rows checked this run: {checked}; " + (
        "every expectation passed on them" if passed_now else "expectations failed on them (expectations_this_run)")
    if held_records:
        description = (f"{tool} records held in quarantine now: {held_records}, put there by this run or an earlier "
                       "one, until they are fixed or deleted at the source (held_in_quarantine_by_reason says why, "
                       f"held_in_quarantine_samples which ones, the newest first). {this_run.capitalize()}.")
    else:
        description = f"No {tool} record is held in quarantine. {this_run.capitalize()}."
    return dg.AssetCheckResult(
        check_name=f"{tool}_quality", passed=passed_now and not held_records,
        severity=dg.AssetCheckSeverity.WARN, description=description,
        metadata={
            "records_held_in_quarantine": held_records,
            **(_held_metadata(held) if held_records else {}),
            "rows_checked_this_run": checked,
            "rows_quarantined_this_run": quarantined,
            "failure_rate_this_run": dg.MetadataValue.float(quarantined / checked if checked else 0.0),
            **_expectation_metadata(to_metadata(worst)),
        },
    )


def build_staged_asset(stack: Stack, entity: str) -> dg.AssetsDefinition:
    tools = sorted({tool for tool, _ in entity_streams(stack, entity)})
    key = staged_key(entity)

    @dg.asset(
        key=key,
        group_name=CORE_GROUP,
        deps=[extraction_key(t, s) for t, s in entity_streams(stack, entity)],
        description=(
            f"Every tool's live {entity} in one table (`{table('staged', entity)}`), after the stack's Great "
            "Expectations suite ran on each tool's records (on the first run all of them, then those landed since); "
            "failing rows go to `quarantine` with their reason and raw payload, and come back by themselves once "
            "fixed at the source. A tool's check fails while it has records in quarantine."
        ),
        owners=[CORE_OWNER],
        kinds={"pandas", "great_expectations"},
        check_specs=[
            dg.AssetCheckSpec(f"{tool}_quality", asset=key, description=f"{tool}'s {entity} against the suite")
            for tool in tools
        ],
    )
    def _staged(sync: SyncResource):
        result = stage(sync.stack, sync.warehouse, entity)
        yield dg.MaterializeResult(metadata={
            "dagster/row_count": result.rows, "rows_read": result.read, "changed_records": result.changed,
            "full_restage": result.full,
            "quarantined": result.quarantined, "released": result.released,
        })
        for tool in tools:
            yield _quality_check(tool, result.reports[tool], result.held.get(tool))

    return _staged


CONCURRENT_SAMPLES = 10


def _concurrent_metadata(edits) -> dict:
    """How many fields two tools changed differently since the last run, and a sample as a Markdown table: a
    steward's list (the rule decided each; the table ``concurrent_edits`` and `sync-pipelines conflicts` keep all)."""
    cases = edits[["entity_id", "field"]].drop_duplicates()
    lines = ["| entity | field | tool | record | value | changed at | kept |", "|---|---|---|---|---|---|---|"]
    for row in edits.merge(cases.head(CONCURRENT_SAMPLES)).itertuples():
        cells = [row.entity_id, row.field, row.tool, row.source_id, shown(row.value), row.changed_at,
                 f"{row.decided_tool}: {shown(row.decided_value)}"]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return {"concurrent_edits": len(cases), "edits": len(edits),
            "samples": dg.MetadataValue.md("\n".join(lines) if len(cases) else "none")}


def _blocking_metadata(golden) -> dict:
    """The blocks too large to compare whole in this run's resolution (none resolved: a run with no change): those
    some of whose records were never compared fail the check; those split into parts that were, are listed."""
    blocks = [*golden.skipped, *golden.split]
    lines = ["| rule | key | records | split by | records not compared | pairs not compared | example |",
             "|---|---|---:|---|---:|---:|---|"]
    lines += [f"| {b['rule']} | {b['key']} | {b['size']} | {', '.join(b['split_by']) or '-'} | "
              f"{b['records_not_compared']} | {b['pairs_not_compared']} | {b['example_ref']} |" for b in blocks]
    return {"blocks_not_compared": len(golden.skipped), "blocks_split": len(golden.split),
            "records_resolved": golden.resolved,
            "records_not_compared": sum(b["records_not_compared"] for b in golden.skipped),
            "pairs_not_compared": sum(b["pairs_not_compared"] for b in blocks),
            "blocks": dg.MetadataValue.md("\n".join(lines) if blocks else "none")}


def _review_metadata(golden) -> dict:
    model = golden.model or {}
    lines = ["| left | right | match probability | weight |", "|---|---|---:|---:|"]
    lines += [f"| {p['left']} | {p['right']} | {p['probability']:.4f} | {p['weight']:+.2f} |"
              for p in model.get("review_samples", [])]
    return {"review_pairs": model.get("review_pairs", 0), "matches": model.get("matches", 0),
            "candidate_pairs": model.get("candidate_pairs", 0), "parameters_version": golden.parameters_version,
            "samples": dg.MetadataValue.md("\n".join(lines) if model.get("review_samples") else "none"),
            "likeliest_pair_waterfall": dg.MetadataValue.md(golden.waterfall or "none")}


def build_golden_asset(stack: Stack, entity: str) -> dg.AssetsDefinition:
    key = golden_key(entity)
    check = f"golden_{entity}_quality"
    concurrent = f"golden_{entity}_concurrent_edits"
    blocking, review = f"golden_{entity}_blocking", f"golden_{entity}_review"
    scored = stack.identity[entity].model is not None

    @dg.asset(
        key=key,
        group_name=CORE_GROUP,
        deps=[staged_key(entity)],
        description=(
            f"One golden record per {entity[:-1] if entity.endswith('s') else entity}: entity resolution "
            f"(`crosswalk_{entity}` keeps ids stable), then source-of-truth and per-field last-write-wins "
            f"survivorship with provenance (`provenance_{entity}`) and an audit of every overridden value "
            f"(`conflicts_{entity}`). A blocking check stops the write-back when the records look wrong."
        ),
        owners=[CORE_OWNER],
        kinds={"pandas", "great_expectations"},
        check_specs=[
            dg.AssetCheckSpec(
                check, asset=key, blocking=True,
                description="Golden failure rate within the stack's limit and record volume within the ratio of recent "
                            "runs",
            ),
            dg.AssetCheckSpec(
                concurrent, asset=key,
                description="Fields two tools changed to different values since the last run: decided by their rule, "
                            "listed for a steward (a warning; nothing is held back)",
            ),
            dg.AssetCheckSpec(
                blocking, asset=key,
                description="Every record was compared within its block: a block too large for a rule's or the "
                            "scored matcher's limit is split by further keys, and what is still left out fails "
                            "this check, with its size, the pairs not compared and an example (a warning)",
            ),
            *([dg.AssetCheckSpec(
                review, asset=key,
                description="Pairs the scored matcher weighs in its review band, under the match threshold: listed "
                            "for a steward, with their match probability (a warning; they stay apart)",
            )] if scored else []),
        ],
    )
    def _golden(sync: SyncResource):
        golden = build_golden(sync.stack, sync.warehouse, entity)
        yield dg.MaterializeResult(metadata={
            "dagster/row_count": golden.entities, "deleted": golden.deleted, "source_records": golden.records,
            "records_resolved": golden.resolved, "full_rebuild": golden.changed_ids is None, "why": golden.reason,
            "entities_rebuilt": golden.entities if golden.changed_ids is None else len(golden.changed_ids),
            "conflicts_recorded": golden.conflicts, "entity_ids_merged": len(golden.merges),
        })
        verdict = check_golden(sync.stack, sync.warehouse, entity, golden.changed_ids)
        yield dg.AssetCheckResult(
            check_name=check, passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failure_rate_of_all_live_golden_records": dg.MetadataValue.float(verdict.failure_rate),
                "max_failure_rate": dg.MetadataValue.float(verdict.max_failure_rate),
                "volume_of_staged_rows": verdict.volume_message,
                "golden_records_checked_this_run": verdict.report.row_count,
                "failing_of_those_checked_this_run": verdict.report.quarantined_count,
                **_expectation_metadata(to_metadata(verdict.report)),
            },
        )
        yield dg.AssetCheckResult(check_name=concurrent, passed=golden.concurrent.empty,
                                  severity=dg.AssetCheckSeverity.WARN, metadata=_concurrent_metadata(golden.concurrent))
        yield dg.AssetCheckResult(check_name=blocking, passed=not golden.skipped, severity=dg.AssetCheckSeverity.WARN,
                                  metadata=_blocking_metadata(golden))
        if scored:
            yield dg.AssetCheckResult(check_name=review, passed=not (golden.model or {}).get("review_pairs"),
                                      severity=dg.AssetCheckSeverity.WARN, metadata=_review_metadata(golden))

    return _golden


def references_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(f"references_{entity}")


def build_references_asset(stack: Stack, entity: str) -> dg.AssetsDefinition:
    referenced, keyed = reference_fields(stack, entity), key_reference_fields(stack, entity)
    key, check = references_key(entity), f"references_{entity}_resolve"

    @dg.asset(
        key=key,
        group_name=CORE_GROUP,
        deps=[golden_key(e) for e in sorted({entity, *referenced_entities(stack, entity)})],
        description=(
            f"Where each golden {entity} record points (`{table('references', entity)}`): "
            + ", ".join([*(f"`{f}` → the golden {e} record" for f, e in referenced.items()),
                         *(f"`{f}` → the golden {k.entity} record whose `{k.by}` is its key" for f, k in keyed.items())])
            + ", found through the referenced entity's crosswalk from the tool the value came from (another member's "
              "value when that tool holds no such record); a key held by two golden records points nowhere, and an "
              "id reference to the same entity wins over a key."
        ),
        owners=[CORE_OWNER],
        kinds={"pandas"},
        check_specs=[dg.AssetCheckSpec(
            check, asset=key, description="Every reference a golden record holds leads to a golden record, or to a "
                                          "record deleted in its tool or held in quarantine (a warning: a dangling "
                                          "one names the tool and id it could not find)")],
    )
    def _references(sync: SyncResource):
        links = link_references(sync.stack, sync.warehouse, entity)
        shares = {f"{f}_resolved": dg.MetadataValue.float(links.resolved[f] / links.holding[f] if links.holding[f]
                                                          else 1.0) for f in links.holding}
        yield dg.MaterializeResult(metadata={
            "rebuilt": links.rebuilt, **{f"{f}_held": n for f, n in links.holding.items()}, **shares,
            **{f"{f}_ambiguous_keys": n for f, n in links.ambiguous.items()},
            **{f"{f}_unresolved": links.holding[f] - links.resolved[f] for f in links.ambiguous}})
        samples = links.unresolved_samples
        # a reference to a record deleted in its tool or held in quarantine is explained; any other is dangling
        dangling = sum(n for why, n in links.unresolved_because.items()
                       if not why.startswith("deleted in") and why != "held in quarantine")
        yield dg.AssetCheckResult(
            check_name=check, passed=dangling == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata={"dangling": dangling, **{f"unresolved: {why}": n for why, n in links.unresolved_because.items()},
                      "samples": dg.MetadataValue.md(
                "| entity_id | field | tool | id | why |\n|---|---|---|---|---|\n" + "\n".join(
                    f"| {r.entity_id} | {r.field} | {r.tool} | {r.source_id} | {r.unresolved_because} |"
                    for r in samples.itertuples())
                if len(samples) else "none")})

    return _references


def _paused(context: dg.AssetExecutionContext, sync: SyncResource, key: dg.AssetKey,
            counted: str) -> dg.MaterializeResult | None:
    """While an integration this step belongs to is paused, nothing is written, and the materialization says why
    (its watermark stays, so the first run after resume writes what was held back)."""
    held = holding(sync.stack, pauses(sync.warehouse.engine), key.path[0], asset_entities(sync.stack, key))
    if not held:
        return None
    why = "; ".join(p.describe() for p in held)
    context.log.warning(f"{key.to_user_string()} wrote nothing: {why}")
    return dg.MaterializeResult(metadata={counted: 0, "paused": why})


def build_writeback_asset(stack: Stack, dest: Destination) -> dg.AssetsDefinition:
    tool = stack.tools[dest.tool]
    # a reference is written as the tool's own id of the golden record it points at: read from the references
    written = {m.to for m in tool.streams[dest.stream].fields}
    references = [references_key(dest.entity)] if written & set(reference_fields(stack, dest.entity)) else []

    @dg.asset(
        key=writeback_key(dest),
        group_name=WRITEBACK_GROUP,
        deps=[golden_key(dest.entity), *references],
        description=(
            f"Writes golden {dest.entity} back to {dest.tool} `{dest.stream}` ({dest.mode}): only the fields that "
            "differ, in the API's batch sizes, by the record's own id, and under upsert or create the golden records "
            "the tool lacks, matched on the destination's key; a ledger makes reruns write nothing twice."
        ),
        owners=[tool.owner],
        kinds={tool.kind},
        pool=f"{dest.tool}_api",
    )
    def _writeback(context: dg.AssetExecutionContext, sync: SyncResource) -> dg.MaterializeResult:
        if held := _paused(context, sync, writeback_key(dest), "written"):
            return held
        try:
            outcome = write_back(sync.stack, sync.warehouse, sync.connector(dest.tool), dest, run_id=context.run_id)
        except (ConnectorError, CapExceeded) as exc:
            raise dg.Failure(str(exc), metadata={"written": 0} if isinstance(exc, CapExceeded) else None) from None
        for error in outcome.errors[:20]:
            context.log.warning(f"{dest.tool}: write failed for {error}")
        if outcome.failed:
            raise dg.Failure(f"{dest.tool}: {outcome.failed} of {outcome.updates + outcome.creates} writes failed; "
                             f"first: {outcome.errors[0]}", metadata={"written": outcome.written})
        return dg.MaterializeResult(metadata={
            "planned_updates": outcome.updates, "unchanged": outcome.unchanged, "written": outcome.written,
            "duplicates_in_tool": outcome.duplicates, "entities_compared": outcome.planned_entities,
            "archived": outcome.archived,
            **({"planned_creates": outcome.creates, "created_ids": ", ".join(outcome.created_ids[:50]) or "none",
                **{f"not_created: {why}": n for why, n in outcome.creates_held_back.items()}}
               if dest.creates else {}),
        })

    return _writeback


def build_action_asset(stack: Stack, action: Action) -> dg.AssetsDefinition:
    tool = stack.tools[action.create.tool]
    read = action_entities(stack, action)

    @dg.asset(
        key=dg.AssetKey([action.create.tool, action.name]),
        group_name=ACTIONS_GROUP,
        deps=[*(extraction_key(t, s) for e in sorted(read) for t, s in entity_streams(stack, e)),
              *(golden_key(e) for e in resolved_entities(stack))],
        description=(
            f"When {action.when.describe()}, creates a `{action.create.stream}` record in {action.create.tool} "
            "from the stack's field templates, exactly once per record (ledger `action_ledger` plus an idempotency "
            "key). The first run records a baseline and creates nothing."
        ),
        owners=[tool.owner],
        kinds={tool.kind},
        pool=f"{action.create.tool}_api",
    )
    def _action(context: dg.AssetExecutionContext, sync: SyncResource) -> dg.MaterializeResult:
        if held := _paused(context, sync, dg.AssetKey([action.create.tool, action.name]), "created"):
            return held
        # the stack as it is now: an edited template or filter applies without rebuilding the definitions
        current = {a.name: a for a in sync.stack.actions}.get(action.name)
        if current is None or current.create.tool != action.create.tool:
            raise dg.Failure(f"action {action.name!r} creating in {action.create.tool} is no longer in the stack "
                             "file: reload the code location")
        try:
            outcome = run_action(sync.stack, sync.warehouse, sync.connector(action.create.tool), current,
                                 run_id=context.run_id)
        except ConnectorError as exc:
            raise dg.Failure(str(exc)) from None
        return dg.MaterializeResult(metadata={
            "baseline_run": outcome.baseline, "transitions": outcome.transitions, "created": outcome.created,
            "held_back_by_filter": outcome.held_back, "already_done": outcome.already_done,
            "created_ids": ", ".join(outcome.created_ids) or "none",
        })

    return _action


def build_core_assets(stack: Stack) -> list[dg.AssetsDefinition]:
    assets = []
    for entity in resolved_entities(stack):
        assets += [build_staged_asset(stack, entity), build_golden_asset(stack, entity)]
        if referenced_entities(stack, entity):
            assets.append(build_references_asset(stack, entity))
    assets += [build_writeback_asset(stack, dest) for dest in stack.destinations]
    assets += [build_action_asset(stack, action) for action in stack.actions]
    return assets

