"""The sync steps after extraction, each a function of (stack, warehouse) that Dagster only wires together.

stage → golden → golden check → write-back: read tables, call the pure core, write tables. Every table written here
has exactly one writer among these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from sync_pipelines.core.plan import plan_writes, to_tool_record, writable_fields
from sync_pipelines.core.quality import QualityReport, split_quarantine, validate, volume_check
from sync_pipelines.core.survive import derive_field_change_times, survivorship
from sync_pipelines.resolve import build_crosswalk, resolve_entities
from sync_pipelines.stack import Action, Destination, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

METADATA = ["_source", "_source_stream", "_source_id", "_updated_at", "_extracted_at"]
WRITE_BATCH = 500


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
    reports: dict[str, QualityReport]


def stage(stack: Stack, warehouse: Warehouse, entity: str) -> Staging:
    """Union the entity's landing tables, run each tool's quality checks, and quarantine the rows that fail."""
    fields = list(stack.entities[entity].fields)
    expectations = stack.quality[entity].expectations if entity in stack.quality else []
    clean_parts, bad_parts, reports = [], [], {}
    for tool, stream in entity_streams(stack, entity):
        landed = warehouse.read_table(landing_table_name(tool, stream))
        live = landed[~landed["_deleted"].astype(bool)].reset_index(drop=True)
        report = validate(live, entity, expectations, source=tool)
        clean, bad = split_quarantine(live, report)
        reports[tool if tool not in reports else f"{tool}/{stream}"] = report
        clean_parts.append(clean[fields + METADATA])
        bad_parts.append(bad)
    staged = pd.concat(clean_parts, ignore_index=True)
    quarantined = pd.concat(bad_parts, ignore_index=True)
    warehouse.replace(table("staged", entity), staged)
    held = warehouse.put_in_quarantine(entity, quarantined)
    released = warehouse.release_from_quarantine(entity, staged)
    return Staging(entity, len(staged), held, released, reports)


# --- golden records --------------------------------------------------------------------------------------------


@dataclass
class Golden:
    entity: str
    records: int
    entities: int
    conflicts: int
    merges: dict[str, Any] = field(default_factory=dict)


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


def build_golden(stack: Stack, warehouse: Warehouse, entity: str, now: datetime | None = None) -> Golden:
    """Resolve staged records into entities and survive one golden record each, with provenance and conflicts."""
    now = now or datetime.now(timezone.utc)
    fields = list(stack.entities[entity].fields)
    staged = warehouse.read_table(table("staged", entity))
    previous = warehouse.read_if_exists(table("crosswalk", entity))
    clusters = resolve_entities(staged, stack.identity[entity], crosswalk=previous)
    state = derive_field_change_times(
        warehouse.read_if_exists(table("field_state", entity)), staged, fields, extracted_at=now
    )
    state = _with_write_origins(state, warehouse.read_if_exists("writeback_ledger"), fields)
    result = survivorship(staged[fields + METADATA], clusters, stack.survivorship[entity], field_times=state,
                          decided_at=now)
    golden = result.golden.reset_index()
    warehouse.replace(table("golden", entity), golden)
    warehouse.replace(table("crosswalk", entity), build_crosswalk(staged, clusters))
    warehouse.replace(table("provenance", entity), result.provenance)
    warehouse.replace(table("field_state", entity), state)
    warehouse.append(table("conflicts", entity), result.conflicts)
    return Golden(entity, len(staged), len(golden), len(result.conflicts),
                  clusters.attrs.get("resolution", {}).get("merged_ids", {}))


# --- the blocking check on golden records ----------------------------------------------------------------------


@dataclass
class GoldenCheck:
    passed: bool
    failure_rate: float
    max_failure_rate: float
    volume_message: str
    report: QualityReport


def check_golden(stack: Stack, warehouse: Warehouse, entity: str, now: datetime | None = None) -> GoldenCheck:
    """Failure rate of the golden records and volume against recent runs: a bad extraction must not reach tools."""
    rules = stack.quality[entity]
    golden = warehouse.read_table(table("golden", entity))
    expectations = [e for e in rules.expectations if e.get("column") in golden.columns]
    report = validate(golden, entity, expectations, source="golden")
    staged_rows = warehouse.count(table("staged", entity))
    history = warehouse.read_if_exists("volume_history")
    counts = []
    if history is not None:
        ok_runs = history[(history["entity"] == entity) & history["passed"].astype(bool)].sort_values("checked_at")
        counts = ok_runs["staged_rows"].tolist()
    volume = volume_check(staged_rows, counts, rules.volume.min_ratio, rules.volume.max_ratio,
                          history=rules.volume.history)
    passed = volume.ok and report.failure_rate <= rules.max_failure_rate
    warehouse.append("volume_history", pd.DataFrame([{
        "entity": entity, "checked_at": now or datetime.now(timezone.utc), "staged_rows": staged_rows,
        "golden_rows": len(golden), "failure_rate": report.failure_rate, "passed": passed,
    }]))
    return GoldenCheck(passed, report.failure_rate, rules.max_failure_rate, volume.message, report)


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


def plan_destination(stack: Stack, warehouse: Warehouse, dest: Destination) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The plan for one destination and the golden records it refers to."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    fields = sorted({f for canonical in writable_fields(stream).values() for f in canonical})
    golden = warehouse.read_table(table("golden", dest.entity)).set_index("entity_id")
    crosswalk = warehouse.read_table(table("crosswalk", dest.entity))
    current = warehouse.read_table(landing_table_name(dest.tool, dest.stream))
    ledger = warehouse.read_if_exists("writeback_ledger")
    if ledger is not None:
        ledger = ledger[(ledger["tool"] == dest.tool) & (ledger["stream"] == dest.stream)]
    plan = plan_writes(golden, crosswalk, current, fields, dest.tool, ledger=ledger)
    return plan, golden


def write_back(stack: Stack, warehouse: Warehouse, connector, dest: Destination,
               now: datetime | None = None) -> WriteBack:
    """Send only the planned changes, in batches, and log each successful write in the ledger as it lands."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    plan, golden = plan_destination(stack, warehouse, dest)
    outcome = WriteBack(dest.tool, dest.stream, unchanged=int((plan["action"] == "unchanged").sum()),
                        updates=int((plan["action"] == "update").sum()),
                        duplicates=int((plan["action"] == "duplicate").sum()))
    todo = plan[plan["action"] == "update"]
    writable = writable_fields(stream)
    provenance = warehouse.read_table(table("provenance", dest.entity)).set_index(["entity_id", "field"])
    for start in range(0, len(todo), WRITE_BATCH):
        batch = todo.iloc[start:start + WRITE_BATCH]
        records = [{stream.primary_key: row.source_id, **to_tool_record(row.changes, golden.loc[row.entity_id], writable)}
                   for row in batch.itertuples()]
        results = connector.write(dest.stream, records, mode="update", key=stream.primary_key)
        written_at = now or datetime.now(timezone.utc)
        ledger_rows = []
        for row, res in zip(batch.itertuples(), results):
            if not res.get("ok"):
                outcome.failed += 1
                outcome.errors.append(f"{row.source_id}: {res.get('error')}")
                continue
            outcome.written += 1
            for fname, value in row.changes.items():
                origin = provenance.loc[(row.entity_id, fname), "changed_at"] if (row.entity_id, fname) in provenance.index else written_at
                ledger_rows.append({"tool": dest.tool, "stream": dest.stream, "source_id": row.source_id,
                                    "entity_id": row.entity_id, "field": fname, "value": value,
                                    "origin_changed_at": origin, "written_at": written_at})
        warehouse.append("writeback_ledger", pd.DataFrame(ledger_rows))
    return outcome


# --- derived actions -------------------------------------------------------------------------------------------


@dataclass
class ActionRun:
    action: str
    baseline: bool = False
    transitions: int = 0
    created: int = 0
    already_done: int = 0
    created_ids: list[str] = field(default_factory=list)


def _entity_rows(stack: Stack, warehouse: Warehouse, entity: str) -> pd.DataFrame:
    parts = [warehouse.read_table(landing_table_name(t, s)) for t, s in entity_streams(stack, entity)]
    rows = pd.concat(parts, ignore_index=True)
    return rows[~rows["_deleted"].astype(bool)]


def _stripe_customer_for(stack: Stack, warehouse: Warehouse, connector, tool: str, deal: pd.Series,
                         action: Action) -> str:
    """The invoicing customer of a deal's account: an existing one linked through the golden contacts, else one
    created from the account's golden contact with an idempotency key, so a rerun never creates a second."""
    contacts = warehouse.read_table(table("staged", "contacts"))
    crosswalk = warehouse.read_table(table("crosswalk", "contacts"))
    members = contacts[contacts["company_source_id"] == deal["company_source_id"]]
    entities = crosswalk.merge(members[["_source", "_source_id"]], on=["_source", "_source_id"])["entity_id"]
    linked = crosswalk[crosswalk["entity_id"].isin(entities) & (crosswalk["_source"] == tool)]
    if len(linked):
        return str(linked["_source_id"].min())
    golden = warehouse.read_table(table("golden", "contacts")).set_index("entity_id")
    known = sorted(set(entities) & set(golden.index))
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
        "idempotency_key": f"{action.name}:{deal['_source']}:{deal['_source_id']}",
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

    The first run records a baseline (records already in that state are history, not transitions). A ledger row
    is written as soon as each record is created, and each create carries an idempotency key, so a crash between
    the two cannot create a second record on the rerun.
    """
    when, target = action.when, action.create
    payload_for = ACTION_PAYLOADS[(stack.tools[target.tool].kind, target.stream)]
    rows = _entity_rows(stack, warehouse, when.entity)
    state = warehouse.read_if_exists("action_state")
    seen = state[state["action"] == action.name] if state is not None else pd.DataFrame()
    outcome = ActionRun(action.name)
    current = rows.assign(action=action.name, value=rows[when.field].astype("str"))[
        ["action", "_source", "_source_id", "value"]]
    if seen.empty:
        outcome.baseline = True
    else:
        before = current.merge(seen, on=["action", "_source", "_source_id"], how="left", suffixes=("", "_before"))
        reached = (before["value"] == when.becomes) & (before["value_before"] != when.becomes)
        ledger = warehouse.read_if_exists("action_ledger")
        done = set() if ledger is None else set(
            ledger.loc[ledger["action"] == action.name, ["_source", "_source_id"]].itertuples(index=False, name=None))
        keys = before.loc[reached, ["_source", "_source_id"]]
        outcome.transitions = len(keys)
        indexed = rows.set_index(["_source", "_source_id"])
        for source, source_id in keys.itertuples(index=False, name=None):
            if (source, source_id) in done:
                outcome.already_done += 1
                continue
            record = indexed.loc[(source, source_id)].copy()
            record["_source"], record["_source_id"] = source, source_id
            payload = {**payload_for(stack, warehouse, connector, target.tool, action, record), **target.fields}
            [result] = connector.write(target.stream, [payload])
            if not result["ok"]:
                raise RuntimeError(f"{action.name}: {target.tool} refused the {target.stream} record for "
                                   f"{source} {source_id}: {result['error']}")
            warehouse.append("action_ledger", pd.DataFrame([{
                "action": action.name, "_source": source, "_source_id": source_id, "created_tool": target.tool,
                "created_id": result["id"], "created_at": datetime.now(timezone.utc)}]))
            outcome.created += 1
            outcome.created_ids.append(result["id"])
    others = state[state["action"] != action.name] if state is not None else current.iloc[0:0]
    warehouse.replace("action_state", pd.concat([others, current], ignore_index=True))
    return outcome
