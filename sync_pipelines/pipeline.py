"""The sync steps after extraction, each a function of (stack, warehouse) that Dagster only wires together.

stage → golden → golden check → write-back: read tables, call the pure core, write tables. Every table written here
has exactly one writer among these functions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from sync_pipelines.core.changes import ALL_FIELDS, KEYS, changed_fields, changed_records
from sync_pipelines.core.plan import plan_writes, to_tool_record, writable_fields
from sync_pipelines.core.quality import QualityReport, split_quarantine, validate, volume_check
from sync_pipelines.core.survive import derive_field_change_times, survivorship
from sync_pipelines.resolve import IdentityRules, block_neighbors, build_crosswalk, resolve_entities
from sync_pipelines.stack import Action, Destination, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

METADATA = ["_source", "_source_stream", "_source_id", "_updated_at", "_extracted_at"]
RELEASE_COLUMNS = ["_source", "_source_stream", "_source_id", "_extracted_at"]  # what a quarantine release matches
WRITE_BATCH = 500
# An incremental golden run rebuilds everything instead when the changes pass the first share of the staged records
# (finding what they reach would cost more than the rebuild), or what they reach passes the second.
FULL_REBUILD_CHANGES = 0.1
FULL_REBUILD_SHARE = 0.3


def table(kind: str, entity: str) -> str:
    """``staged``/``golden``/``crosswalk``/``provenance``/``conflicts``/``field_state`` + entity → table name."""
    return f"{kind}_{entity}"


def entity_streams(stack: Stack, entity: str) -> list[tuple[str, str]]:
    return [(tool, name) for tool, _, name, stream in stack.streams() if stream.entity == entity]


def resolved_entities(stack: Stack) -> list[str]:
    """Entities that get golden records: those with identity and survivorship rules."""
    return [e for e in stack.entities if e in stack.identity and e in stack.survivorship]


# --- staging ---------------------------------------------------------------------------------------------------


@dataclass
class Staging:
    entity: str
    rows: int
    quarantined: int
    released: int
    reports: dict[str, list[QualityReport]]  # per tool, one per stream of the entity
    changed: int = 0
    full: bool = True
    # per tool, records held in quarantine now (from this run or earlier ones): the checks' standing state, since
    # an incremental run validates only the rows that changed
    in_quarantine: dict[str, int] = field(default_factory=dict)
    read: int = 0  # landed rows read: all on a full restage, else those landed since the last one


def _fingerprint(*parts: Any) -> str:
    """A digest of the stack settings a step's stored results depend on: when they change, it starts over."""
    text = json.dumps([getattr(part, "model_dump", lambda p=part: p)() for part in parts], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _identity_fields(stack: Stack, entity: str) -> list[str]:
    fields = list(stack.entities[entity].fields)
    return sorted(IdentityRules.from_spec(stack.identity[entity]).fields(fields)) if entity in stack.identity else []


def _landed_after(warehouse: Warehouse, tool: str, stream: str, batch: int | None,
                  wanted: list[str] | None = None) -> tuple[pd.DataFrame, int | None]:
    """A stream's landed rows, all (``batch`` None) or those landed after ``batch``, without their raw payload
    (the widest column, needed only for quarantined rows: see `_with_raw`), or only the ``wanted`` columns (with
    the keys, the deleted flag and the batch); and the last batch seen."""
    landing = landing_table_name(tool, stream)
    needed = None if wanted is None else {*KEYS, "_deleted", "_landed_batch", *wanted}
    columns = [c.name for c in warehouse.landing[(tool, stream)].columns
               if c.name != "_raw" and (needed is None or c.name in needed)]
    rows = (warehouse.read_table(landing, columns) if batch is None
            else warehouse.read_after(landing, "_landed_batch", batch, columns))
    return rows, int(rows["_landed_batch"].max()) if len(rows) else batch


def _with_raw(warehouse: Warehouse, tool: str, stream: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the raw payload each was landed with, kept in quarantine beside the reason."""
    if rows.empty:
        return rows.assign(_raw=pd.Series(dtype=object))
    raw = warehouse.read_where_in(landing_table_name(tool, stream), "_source_id", rows["_source_id"],
                                  ["_source_id", "_raw"])
    return rows.merge(raw, on="_source_id", how="left")


def stage(stack: Stack, warehouse: Warehouse, entity: str, now: datetime | None = None) -> Staging:
    """Union the entity's landing rows extracted since the last staging, run each tool's quality checks on them,
    quarantine the rows that fail, and log which staged records changed for the golden step.

    The first run (and any run after the entity's fields, expectations or streams changed in the stack file, or
    after landed rows were removed by hand) stages every landed row; later runs read only the rows of landings
    committed since (re-reading a row with unchanged values, as webhooks and boundary reads do, is no change)."""
    now = now or datetime.now(timezone.utc)
    fields = list(stack.entities[entity].fields)
    expectations = stack.quality[entity].expectations if entity in stack.quality else []
    streams = entity_streams(stack, entity)
    name, staged_table = f"staged_{entity}", table("staged", entity)
    fingerprint = _fingerprint(fields, expectations, streams)
    mark = warehouse.watermark(name)
    # landing tables only grow (deletions arrive as flagged rows): fewer rows means someone removed some by hand
    landed_rows = {f"{tool}/{stream}": warehouse.count(landing_table_name(tool, stream)) for tool, stream in streams}
    full = (mark is None or mark["fingerprint"] != fingerprint or not warehouse.has_table(staged_table)
            or any(landed_rows[key] < mark["landed_rows"].get(key, 0) for key in landed_rows))
    seen = {} if full else dict(mark["landed_batch"])
    clean_parts, bad_parts, removed_parts, gone_parts, reports, rows_read = [], [], [], [], {}, 0
    for tool, stream in streams:
        landed, seen[f"{tool}/{stream}"] = _landed_after(warehouse, tool, stream, seen.get(f"{tool}/{stream}"))
        rows_read += len(landed)
        deleted = landed["_deleted"].astype(bool)
        live = landed[~deleted].reset_index(drop=True)
        report = validate(live, entity, expectations, source=tool)
        clean, bad = split_quarantine(live, report)
        reports.setdefault(tool, []).append(report)
        clean_parts.append(clean[fields + METADATA])
        bad_parts.append(_with_raw(warehouse, tool, stream, bad))
        removed_parts += [landed.loc[deleted, KEYS], bad.loc[bad["_source_id"].notna(), KEYS]]
        gone_parts.append(landed.loc[deleted, RELEASE_COLUMNS])
    clean = pd.concat(clean_parts, ignore_index=True)
    quarantined = pd.concat(bad_parts, ignore_index=True)
    removed = pd.concat(removed_parts, ignore_index=True)
    log = table("staged_changes", entity)
    previous = None if full else warehouse.read_keys(staged_table, pd.concat([clean[KEYS], removed]))
    with warehouse.transaction() as conn:
        batch = warehouse.next_batch(conn, log)
        if full:
            warehouse.replace_within(conn, staged_table, clean, index=("_source_id",))
            changes = pd.DataFrame([{"_source": None, "_source_id": None, "removed": False,
                                     "identity_changed": ALL_FIELDS}])  # one row saying: everything changed
        else:
            changes = changed_records(previous, clean, removed, fields + ["_source_stream", "_updated_at"],
                                      _identity_fields(stack, entity))
            warehouse.delete_keys(conn, staged_table, changes)
            upserted = clean.merge(changes.loc[~changes["removed"], KEYS], on=KEYS)
            warehouse.insert(conn, staged_table, upserted)
        warehouse.insert(conn, log, changes.assign(batch=batch, staged_at=now))
        warehouse.save_watermark(conn, name, {"fingerprint": fingerprint, "landed_batch": seen,
                                              "landed_rows": landed_rows})
    held = warehouse.put_in_quarantine(entity, quarantined)
    # a record fixed at the source leaves the quarantine, and so does one deleted there: nothing is left to fix
    released = warehouse.release_from_quarantine(entity, pd.concat([clean[RELEASE_COLUMNS], *gone_parts]))
    return Staging(entity, warehouse.count(staged_table), held, released, reports,
                   changed=len(clean) if full else len(changes), full=full,
                   in_quarantine=warehouse.quarantined_by_source(entity), read=rows_read)


# --- golden records --------------------------------------------------------------------------------------------


@dataclass
class Golden:
    entity: str
    records: int
    entities: int
    conflicts: int
    merges: dict[str, Any] = field(default_factory=dict)
    changed_ids: list[str] | None = None  # entities rebuilt by an incremental run; None after a full rebuild
    resolved: int = 0  # records resolved and survived by this run
    reason: str = ""  # why this run rebuilt everything, or what it rebuilt


def _with_write_origins(state: pd.DataFrame, ledger: pd.DataFrame | None, fields: list[str]) -> pd.DataFrame:
    """A value we wrote into a tool keeps the change time of the value it copied, so our own write is never seen as
    that tool's newer edit (which would echo it back as a conflict and let it win fields it never changed)."""
    if ledger is None or ledger.empty:
        return state
    latest = ledger.sort_values("written_at").drop_duplicates(["tool", "source_id", "field"], keep="last")
    state = state.copy()
    for fname in fields:
        origin = latest[latest["field"] == fname]
        if origin.empty:
            continue
        merged = state[["_source", "_source_id", fname]].merge(
            origin, left_on=["_source", "_source_id"], right_on=["tool", "source_id"], how="left"
        )
        ours = (merged["value"].notna() & (merged[fname].astype("str") == merged["value"].astype("str"))).to_numpy()
        column = f"{fname}__changed_at"
        state.loc[ours, column] = pd.to_datetime(merged.loc[ours, "origin_changed_at"], utc=True).to_numpy()
    return state


def _golden_tables(entity: str) -> dict[str, str]:
    return {kind: table(kind, entity) for kind in ("golden", "crosswalk", "provenance", "field_state")}


def _survive(stack: Stack, warehouse: Warehouse, entity: str, records: pd.DataFrame, crosswalk: pd.DataFrame | None,
             field_state: pd.DataFrame | None, now: datetime):
    """Resolve ``records`` into entities and survive one golden record each: the work of full and incremental
    runs alike, on all staged records or on the part a change can reach."""
    fields = list(stack.entities[entity].fields)
    clusters = resolve_entities(records, stack.identity[entity], crosswalk=crosswalk)
    state = derive_field_change_times(field_state, records, fields, extracted_at=now)
    ledger = None
    if warehouse.has_table("writeback_ledger"):
        ledger = warehouse.read_where_in("writeback_ledger", "source_id", records["_source_id"])
    state = _with_write_origins(state, ledger, fields)
    result = survivorship(records[fields + METADATA], clusters, stack.survivorship[entity], field_times=state,
                          decided_at=now)
    return clusters, state, result


def build_golden(stack: Stack, warehouse: Warehouse, entity: str, now: datetime | None = None) -> Golden:
    """Resolve staged records into entities and survive one golden record each, with provenance and conflicts.

    Incremental when it can be: only the records staging logged as changed, the records a rule now links to
    those whose identity fields changed, and every member of the entities these belong to are resolved and
    survived again; every other golden record stays as it is. The first run, a change to the entity's fields or
    rules, a full restage, changes to more than ``FULL_REBUILD_CHANGES`` of the records or reaching more than
    ``FULL_REBUILD_SHARE`` of them rebuild everything. All tables and the watermark are written in one
    transaction."""
    now = now or datetime.now(timezone.utc)
    tables = _golden_tables(entity)
    staged_table, log_table, name = table("staged", entity), table("staged_changes", entity), f"golden_{entity}"
    fingerprint = _fingerprint(list(stack.entities[entity].fields), stack.identity[entity], stack.survivorship[entity])
    mark = warehouse.watermark(name)
    valid = mark is not None and mark["fingerprint"] == fingerprint and warehouse.has_table(tables["golden"])
    log = warehouse.read_log(log_table, mark["batch"] if valid else 0)
    last_batch = int(log["batch"].max()) if log is not None and len(log) else (mark or {}).get("batch", 0)
    staged_rows = warehouse.count(staged_table)
    reason = _rebuild_reason(mark, valid, log, staged_rows)
    full = reason is not None
    if not full and log.empty:
        return Golden(entity, staged_rows, warehouse.count(tables["golden"]), 0, changed_ids=[], reason="no change")
    if not full:
        scope = _incremental_scope(stack, warehouse, entity, log)
        if len(scope.keys) > FULL_REBUILD_SHARE * staged_rows:  # reading by key would cost more than reading all
            full, reason = True, (f"{len(log)} staged changes reach {len(scope.keys)} records, more than "
                                  f"{FULL_REBUILD_SHARE:.0%} of {staged_rows}")
    if not full:
        records = warehouse.read_keys(staged_table, scope.keys)
        clusters, state, result = _survive(stack, warehouse, entity, records, scope.crosswalk,
                                           warehouse.read_keys(tables["field_state"], scope.keys), now)
        fresh = set(clusters) - scope.entity_ids
        # a new id equal to one outside the scope (a hash of a record that left that entity) would merge two
        # entities' rows: rebuild everything instead (rare)
        full = bool(fresh) and not warehouse.read_where_in(tables["golden"], "entity_id", fresh, ["entity_id"]).empty
        reason = "a new entity id equals a stored one" if full else f"{len(log)} staged changes"
    if full:
        records = warehouse.read_table(staged_table)
        clusters, state, result = _survive(stack, warehouse, entity, records,
                                           warehouse.read_if_exists(tables["crosswalk"]),
                                           warehouse.read_if_exists(tables["field_state"]), now)
    golden = result.golden.reset_index()
    crosswalk = build_crosswalk(records, clusters)
    with warehouse.transaction() as conn:
        if full:
            changed_ids = None
            warehouse.replace_within(conn, tables["golden"], golden, index=("entity_id",))
            warehouse.replace_within(conn, tables["crosswalk"], crosswalk, index=("entity_id", "_source_id"))
            warehouse.replace_within(conn, tables["provenance"], result.provenance, index=("entity_id",))
            warehouse.replace_within(conn, tables["field_state"], state, index=("_source_id",))
            logged = pd.DataFrame({"entity_id": [None], "removed": [False]})  # one row saying: everything
        else:
            changed_ids = sorted(scope.entity_ids | set(golden["entity_id"]))
            for kind in ("golden", "crosswalk", "provenance"):
                warehouse.delete_where_in(conn, tables[kind], "entity_id", scope.entity_ids)
            warehouse.delete_keys(conn, tables["field_state"], scope.keys)
            warehouse.insert(conn, tables["golden"], golden)
            warehouse.insert(conn, tables["crosswalk"], crosswalk)
            warehouse.insert(conn, tables["provenance"], result.provenance)
            warehouse.insert(conn, tables["field_state"], state)
            logged = pd.DataFrame({"entity_id": changed_ids}).assign(
                removed=lambda f: ~f["entity_id"].isin(golden["entity_id"]))
        warehouse.insert(conn, table("conflicts", entity), result.conflicts)
        warehouse.insert(conn, table("golden_changes", entity),
                         logged.assign(batch=warehouse.next_batch(conn, table("golden_changes", entity)),
                                       changed_at=now))
        warehouse.save_watermark(conn, name, {"fingerprint": fingerprint, "batch": last_batch})
        warehouse.prune_log(conn, log_table, last_batch)  # the golden step is its only reader
    return Golden(entity, staged_rows, warehouse.count(tables["golden"]), len(result.conflicts),
                  clusters.attrs.get("resolution", {}).get("merged_ids", {}), changed_ids=changed_ids,
                  resolved=len(records), reason=reason)


def _rebuild_reason(mark: dict | None, valid: bool, log: pd.DataFrame | None, staged_rows: int) -> str | None:
    """Why the golden step must rebuild everything, or None when an incremental run will do."""
    if mark is None or log is None:
        return "first run"
    if not valid:
        return "the entity's fields or rules changed, or its golden table is missing"
    if log["_source"].isna().any():
        return "staging restaged everything"
    if len(log) > FULL_REBUILD_CHANGES * staged_rows:
        return f"{len(log)} staged changes, more than {FULL_REBUILD_CHANGES:.0%} of {staged_rows} records"
    return None


@dataclass
class _Scope:
    keys: pd.DataFrame  # records to resolve again (removed ones included: staging no longer has them)
    entity_ids: set[str]  # their entities as stored
    crosswalk: pd.DataFrame  # the stored crosswalk rows of those entities


def _incremental_scope(stack: Stack, warehouse: Warehouse, entity: str, log: pd.DataFrame) -> _Scope:
    """What a change can reach: the changed records, the records sharing a candidate group with those whose
    identity fields changed (only they can match them now, and only under the rules reading those fields), and all
    members of the entities of both."""
    changed = log.assign(identity_changed=log["identity_changed"].fillna("").astype(str)).groupby(
        KEYS, as_index=False)["identity_changed"].agg(",".join)
    crosswalk_table = table("crosswalk", entity)
    reach = [changed[KEYS]]
    fields = _identity_fields(stack, entity)
    moved = {f: changed.loc[changed_fields(changed["identity_changed"], f), KEYS] for f in fields}
    if any(len(keys) for keys in moved.values()):
        identity = warehouse.read_table(table("staged", entity), columns=KEYS + fields)
        staged_keys = pd.MultiIndex.from_frame(identity[KEYS])
        touched = {f: staged_keys.isin(pd.MultiIndex.from_frame(keys)) for f, keys in moved.items()}
        reach.append(identity.loc[block_neighbors(identity, touched, stack.identity[entity]), KEYS])
    reached = pd.concat(reach, ignore_index=True).drop_duplicates()
    entity_ids = set(warehouse.read_keys(crosswalk_table, reached, ["entity_id", *KEYS])["entity_id"])
    members = warehouse.read_where_in(crosswalk_table, "entity_id", entity_ids)
    keys = pd.concat([reached, members[KEYS]], ignore_index=True).drop_duplicates(ignore_index=True)
    return _Scope(keys, entity_ids, members)


# --- the blocking check on golden records ----------------------------------------------------------------------


@dataclass
class GoldenCheck:
    passed: bool
    failure_rate: float
    max_failure_rate: float
    volume_message: str
    report: QualityReport


def check_golden(stack: Stack, warehouse: Warehouse, entity: str, changed_ids: list[str] | None = None,
                 now: datetime | None = None) -> GoldenCheck:
    """Failure rate of the golden records and volume against recent runs: a bad extraction must not reach tools.

    With ``changed_ids`` (an incremental run) only those golden records are validated again; the ids failing
    are kept in ``golden_failures_<entity>``, so the rate is still over every golden record."""
    rules = stack.quality[entity]
    golden_table, failures_table = table("golden", entity), table("golden_failures", entity)
    golden = warehouse.read_table(golden_table) if changed_ids is None else warehouse.read_where_in(
        golden_table, "entity_id", changed_ids)
    expectations = [e for e in rules.expectations if e.get("column") in golden.columns]
    report = validate(golden, entity, expectations, source="golden")
    failing = golden.loc[report.row_failures.notna().to_numpy(), ["entity_id"]].assign(
        reason=report.row_failures.dropna().to_numpy())
    with warehouse.transaction() as conn:
        if changed_ids is None:
            warehouse.replace_within(conn, failures_table, failing)
        else:
            warehouse.delete_where_in(conn, failures_table, "entity_id", changed_ids)
            warehouse.insert(conn, failures_table, failing)
    golden_rows = warehouse.count(golden_table)
    failure_rate = warehouse.count(failures_table) / golden_rows if golden_rows else 0.0
    staged_rows = warehouse.count(table("staged", entity))
    history = warehouse.read_if_exists("volume_history")
    counts = []
    if history is not None:
        ok_runs = history[(history["entity"] == entity) & history["passed"].astype(bool)].sort_values("checked_at")
        counts = ok_runs["staged_rows"].tolist()
    volume = volume_check(staged_rows, counts, rules.volume.min_ratio, rules.volume.max_ratio,
                          history=rules.volume.history)
    passed = volume.ok and failure_rate <= rules.max_failure_rate
    warehouse.append("volume_history", pd.DataFrame([{
        "entity": entity, "checked_at": now or datetime.now(timezone.utc), "staged_rows": staged_rows,
        "golden_rows": golden_rows, "failure_rate": failure_rate, "passed": passed,
    }]))
    return GoldenCheck(passed, failure_rate, rules.max_failure_rate, volume.message, report)


# --- write-back ------------------------------------------------------------------------------------------------


@dataclass
class WriteBack:
    tool: str
    stream: str
    updates: int = 0
    unchanged: int = 0
    duplicates: int = 0
    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    planned_entities: int = 0  # golden records compared with the tool's records: the changed ones, or all


def plan_destination(stack: Stack, warehouse: Warehouse, dest: Destination,
                     entity_ids: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The plan for one destination (for the entities ``entity_ids``, or all) and the golden records it uses: those
    linked to a record of the tool."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    writable = writable_fields(stream)
    fields = sorted({f for canonical in writable.values() for f in canonical})
    golden_table, crosswalk_table = table("golden", dest.entity), table("crosswalk", dest.entity)
    landing = landing_table_name(dest.tool, dest.stream)
    held = ["_source_id", "_updated_at", "_extracted_at", "_deleted", *fields]  # not the raw payload
    if entity_ids is None:  # this tool's links only
        crosswalk = warehouse.read_where_in(crosswalk_table, "_source", [dest.tool])
        current = warehouse.read_table(landing, held)
    else:
        crosswalk = warehouse.read_where_in(crosswalk_table, "entity_id", entity_ids)
        crosswalk = crosswalk[crosswalk["_source"] == dest.tool]
        current = warehouse.read_where_in(landing, "_source_id", crosswalk["_source_id"], held)
    # only the golden records the tool holds a record of, and only the columns written
    golden = warehouse.read_where_in(golden_table, "entity_id", crosswalk["entity_id"], ["entity_id", *fields])
    ledger = None
    if warehouse.has_table("writeback_ledger"):
        ledger = (warehouse.read_where_in("writeback_ledger", "tool", [dest.tool]) if entity_ids is None else
                  warehouse.read_where_in("writeback_ledger", "source_id", current["_source_id"]))
        ledger = ledger[(ledger["tool"] == dest.tool) & (ledger["stream"] == dest.stream)]
    golden = golden.set_index("entity_id")
    composed = [canonical for canonical in writable.values() if len(canonical) > 1]
    return plan_writes(golden, crosswalk, current, fields, dest.tool, ledger=ledger, composed=composed), golden


def write_back(stack: Stack, warehouse: Warehouse, connector, dest: Destination,
               now: datetime | None = None) -> WriteBack:
    """Send only the planned changes, in batches, and log each successful write in the ledger as it lands.

    Plans only the entities the golden step rebuilt since this destination's last complete write-back (all of
    them on the first run, after a full rebuild or once the stream's mapping changed): an entity the golden step
    left alone has neither a new golden value nor a changed record in the tool. The watermark moves only when
    every planned write succeeded, so a failed or interrupted write-back is planned again."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    name, log_table = f"writeback_{dest.tool}_{dest.stream}", table("golden_changes", dest.entity)
    fingerprint = _fingerprint(stream, dest)
    mark = warehouse.watermark(name)
    valid = mark is not None and mark["fingerprint"] == fingerprint
    log = warehouse.read_log(log_table, mark["batch"] if valid else 0)
    last_batch = int(log["batch"].max()) if log is not None and len(log) else (mark or {}).get("batch", 0)
    incremental = valid and log is not None and not log["entity_id"].isna().any()
    plan, golden = plan_destination(stack, warehouse, dest, set(log["entity_id"]) if incremental else None)
    outcome = WriteBack(dest.tool, dest.stream, unchanged=int((plan["action"] == "unchanged").sum()),
                        updates=int((plan["action"] == "update").sum()),
                        duplicates=int((plan["action"] == "duplicate").sum()), planned_entities=len(golden))
    todo = plan[plan["action"] == "update"].reset_index(drop=True)
    writable = writable_fields(stream)
    sources = golden.loc[todo["entity_id"], sorted({f for fs in writable.values() for f in fs})].to_dict("records")
    # one ledger row per field sent, carrying the change time of the value it copies (its provenance)
    sent = pd.DataFrame([(i, field_name, value) for i, change in enumerate(todo["changes"])
                         for field_name, value in change.items()], columns=["position", "field", "value"])
    sent = sent.assign(source_id=todo["source_id"].to_numpy()[sent["position"]],
                       entity_id=todo["entity_id"].to_numpy()[sent["position"]])
    provenance = warehouse.read_where_in(table("provenance", dest.entity), "entity_id", todo["entity_id"],
                                         ["entity_id", "field", "changed_at"])
    sent = sent.merge(provenance, on=["entity_id", "field"], how="left").rename(
        columns={"changed_at": "origin_changed_at"})
    for start in range(0, len(todo), WRITE_BATCH):
        batch = todo.iloc[start:start + WRITE_BATCH]
        records = [{stream.primary_key: source_id, **to_tool_record(change, source, writable)}
                   for source_id, change, source in zip(batch["source_id"], batch["changes"],
                                                        sources[start:start + WRITE_BATCH])]
        results = connector.write(dest.stream, records, mode="update", key=stream.primary_key)
        written_at = now or datetime.now(timezone.utc)
        landed = []
        for position, source_id, res in zip(batch.index, batch["source_id"], results):
            if res.get("ok"):
                landed.append(position)
            else:
                outcome.errors.append(f"{source_id}: {res.get('error')}")
        outcome.written += len(landed)
        outcome.failed += len(batch) - len(landed)
        ledger = sent[sent["position"].isin(landed)]
        warehouse.append("writeback_ledger", index=("source_id",), frame=pd.DataFrame({
            "tool": dest.tool, "stream": dest.stream, "source_id": ledger["source_id"],
            "entity_id": ledger["entity_id"], "field": ledger["field"], "value": ledger["value"],
            "origin_changed_at": pd.to_datetime(ledger["origin_changed_at"], utc=True).fillna(written_at),
            "written_at": written_at}))
    if not outcome.failed:
        with warehouse.transaction() as conn:
            warehouse.save_watermark(conn, name, {"fingerprint": fingerprint, "batch": last_batch})
    return outcome


# --- derived actions -------------------------------------------------------------------------------------------


@dataclass
class ActionRun:
    action: str
    baseline: bool = False
    transitions: int = 0
    created: int = 0
    already_done: int = 0  # in the ledger, or made by a run that crashed before recording it
    created_ids: list[str] = field(default_factory=list)


def _entity_rows_after(stack: Stack, warehouse: Warehouse, entity: str, seen: dict[str, int] | None,
                       wanted: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Live landed rows of an entity's streams (their ``wanted`` columns, or all): all rows, or (``seen``: per
    stream, the last landing batch taken in) only those landed since; and the last batch per stream."""
    parts, last = [], dict(seen or {})
    for tool, stream in entity_streams(stack, entity):
        rows, last[f"{tool}/{stream}"] = _landed_after(warehouse, tool, stream, (seen or {}).get(f"{tool}/{stream}"),
                                                       wanted)
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True)
    return rows[~rows["_deleted"].astype(bool)], last


def _stripe_customer_for(stack: Stack, warehouse: Warehouse, connector, tool: str, deal: pd.Series,
                         action: Action) -> str:
    """The invoicing customer of a deal's account: an existing one linked through the golden contacts, else one
    created from the account's golden contact with an idempotency key, so a rerun never creates a second."""
    members = warehouse.read_where_in(table("staged", "contacts"), "company_source_id", [deal["company_source_id"]])
    entities = warehouse.read_keys(table("crosswalk", "contacts"), members)["entity_id"]
    crosswalk = warehouse.read_where_in(table("crosswalk", "contacts"), "entity_id", entities)
    linked = crosswalk[crosswalk["_source"] == tool]
    if len(linked):
        return str(linked["_source_id"].min())
    golden = warehouse.read_where_in(table("golden", "contacts"), "entity_id", entities).set_index("entity_id")
    known = sorted(golden.index)
    person = golden.loc[known[0]] if known else None
    customer = {
        "name": f"{person['first_name']} {person['last_name']}" if person is not None else str(deal["name"]),
        "email": person["email"] if person is not None else None,
        "metadata": {"crm_account_id": deal["company_source_id"]},
        "idempotency_key": f"{action.name}:customer:{deal['company_source_id']}",
    }
    [created] = connector.write("customers", [{k: v for k, v in customer.items() if v is not None}])
    if not created["ok"]:
        raise RuntimeError(f"{tool}: could not create a customer for account {deal['company_source_id']}: "
                           f"{created['error']}")
    return created["id"]


def _stripe_invoice(stack, warehouse, connector, tool: str, action: Action, deal: pd.Series) -> dict:
    customer = _stripe_customer_for(stack, warehouse, connector, tool, deal, action)
    return {
        "customer": customer,
        "description": f"{deal['name']}",
        "collection_method": "send_invoice",
        "days_until_due": 30,
        "metadata": {"deal_id": deal["_source_id"], "deal_source": deal["_source"], "sync_action": action.name},
    }


def _asana_task(stack, warehouse, connector, tool: str, action: Action, record: pd.Series) -> dict:
    who = " ".join(str(record.get(f)) for f in ("first_name", "last_name") if pd.notna(record.get(f)))
    return {"name": f"Onboard {who or record['_source_id']}",
            "notes": f"Created by sync_pipelines ({action.name}) for {record['_source']} {record['_source_id']}"
                     + (f", {record['email']}" if pd.notna(record.get("email")) else "")}


# What to create, per target tool kind and stream: only the payload is special, the exactly-once logic is shared.
ACTION_PAYLOADS = {("stripe", "invoices"): _stripe_invoice, ("asana", "tasks"): _asana_task}


def run_action(stack: Stack, warehouse: Warehouse, connector, action: Action) -> ActionRun:
    """Create the dependent record for every record that newly reached ``when.becomes``, exactly once.

    The first run records a baseline (records already in that state are history, not transitions); later runs
    look only at records extracted since. Before any create, each record's intent is committed to
    ``action_pending`` with its idempotency key, which the create carries (the target connector sends it the way
    its API makes a create findable or replayable); the ledger row replaces the intent once the create succeeded.
    An intent still pending on a rerun is a create that may have reached the tool before a crash: the connector
    is asked for the record made under that key (``find_created``), and only when there is none is it sent again.
    """
    when, target = action.when, action.create
    payload_for = ACTION_PAYLOADS[(stack.tools[target.tool].kind, target.stream)]
    name, fingerprint = f"action_{action.name}", _fingerprint(when, target)
    mark = warehouse.watermark(name)
    baseline = mark is None or mark["fingerprint"] != fingerprint or not warehouse.has_table("action_state")
    # a baseline only records each record's state; a later run builds payloads from whole records
    rows, landed = _entity_rows_after(stack, warehouse, when.entity, None if baseline else mark["landed_batch"],
                                      [when.field] if baseline else None)
    outcome = ActionRun(action.name, baseline=baseline)
    current = rows.assign(action=action.name, value=rows[when.field].astype("str"))[
        ["action", "_source", "_source_id", "value"]]
    if not baseline:
        known = warehouse.read_keys("action_state", current)
        before = current.merge(known[known["action"] == action.name], on=["action", "_source", "_source_id"],
                               how="left", suffixes=("", "_before"))
        reached = (before["value"] == when.becomes) & (before["value_before"] != when.becomes)
        keys = before.loc[reached, ["_source", "_source_id"]]
        ledger, intents_left = (_action_rows(warehouse, action, keys, t) for t in ("action_ledger", "action_pending"))
        done = set(zip(ledger["_source"], ledger["_source_id"]))
        pending = dict(zip(zip(intents_left["_source"], intents_left["_source_id"]), intents_left["idempotency_key"]))
        outcome.transitions = len(keys)
        todo = [k for k in keys.itertuples(index=False, name=None) if k not in done]
        outcome.already_done = len(keys) - len(todo)
        intents = {k: pending.get(k, f"{action.name}:{k[0]}:{k[1]}") for k in todo}
        warehouse.append("action_pending", index=("_source_id",), frame=pd.DataFrame([
            {"action": action.name, "_source": source, "_source_id": source_id, "created_tool": target.tool,
             "idempotency_key": intents[(source, source_id)], "pending_since": datetime.now(timezone.utc)}
            for source, source_id in todo if (source, source_id) not in pending]))
        indexed = rows.set_index(["_source", "_source_id"])
        for (source, source_id), key in intents.items():
            created_id = connector.find_created(target.stream, key) if (source, source_id) in pending else None
            if created_id is not None:  # made before a crash, never recorded
                outcome.already_done += 1
            else:
                record = indexed.loc[(source, source_id)].copy()
                record["_source"], record["_source_id"] = source, source_id
                payload = {**payload_for(stack, warehouse, connector, target.tool, action, record), **target.fields,
                           "idempotency_key": key}
                [result] = connector.write(target.stream, [payload])
                if not result["ok"]:
                    raise RuntimeError(f"{action.name}: {target.tool} refused the {target.stream} record for "
                                       f"{source} {source_id}: {result['error']}")
                created_id = result["id"]
                outcome.created += 1
                outcome.created_ids.append(created_id)
            with warehouse.transaction() as conn:
                warehouse.insert(conn, "action_ledger", index=("_source_id",), frame=pd.DataFrame([{
                    "action": action.name, "_source": source, "_source_id": source_id, "created_tool": target.tool,
                    "created_id": created_id, "created_at": datetime.now(timezone.utc)}]))
                warehouse.delete_where_in(conn, "action_pending", "_source_id", [source_id], _source=source,
                                          action=action.name)
    with warehouse.transaction() as conn:
        if baseline:
            warehouse.delete_where_in(conn, "action_state", "action", [action.name])
        else:
            for source, part in current.groupby("_source"):
                warehouse.delete_where_in(conn, "action_state", "_source_id", part["_source_id"], _source=source,
                                          action=action.name)
        warehouse.insert(conn, "action_state", current, index=("_source_id",))
        warehouse.save_watermark(conn, name, {"fingerprint": fingerprint, "landed_batch": landed})
    return outcome


def _action_rows(warehouse: Warehouse, action: Action, keys: pd.DataFrame, name: str) -> pd.DataFrame:
    """An action's rows of ``name`` (its ledger or its pending intents) for the (source, id) pairs in ``keys``."""
    if not warehouse.has_table(name):
        return pd.DataFrame(columns=["_source", "_source_id", "idempotency_key"])
    rows = warehouse.read_keys(name, keys)
    return rows[rows["action"] == action.name]
