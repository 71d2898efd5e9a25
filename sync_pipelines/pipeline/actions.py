"""Derived actions: a dependent record created once per transition of a watched field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from sync_pipelines.pipeline.common import entity_streams, landed_after, stack_fingerprint, table
from sync_pipelines.stack import Action, Stack
from sync_pipelines.warehouse import Warehouse


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
        rows, last[f"{tool}/{stream}"] = landed_after(warehouse, tool, stream, (seen or {}).get(f"{tool}/{stream}"),
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


def run_action(stack: Stack, warehouse: Warehouse, connector, action: Action, run_id: str | None = None) -> ActionRun:
    """Create the dependent record for every record that newly reached ``when.becomes``, exactly once; its ledger
    row names the run that created it (``revert`` lists a run's creates).

    The first run records a baseline (records already in that state are history, not transitions); later runs
    look only at records extracted since. Before any create, each record's intent is committed to
    ``action_pending`` with its idempotency key, which the create carries (the target connector sends it the way
    its API makes a create findable or replayable); the ledger row replaces the intent once the create succeeded.
    An intent still pending on a rerun is a create that may have reached the tool before a crash: the connector
    is asked for the record made under that key (``find_created``), and only when there is none is it sent again.
    """
    when, target = action.when, action.create
    payload_for = ACTION_PAYLOADS[(stack.tools[target.tool].kind, target.stream)]
    name, fingerprint = f"action_{action.name}", stack_fingerprint(when, target)
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
                    "created_id": created_id, "created_stream": target.stream, "created_at": datetime.now(timezone.utc),
                    "run_id": run_id}]))
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
