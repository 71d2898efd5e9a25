"""Derived actions: a record created in a tool once per record that meets the action's trigger, its fields rendered
from the stack's templates over the triggering record and the records its reference fields lead to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from sync_pipelines.core.conditions import evaluate
from sync_pipelines.core.templates import TemplateProblem, render_fields
from sync_pipelines.pipeline.common import StepMark, entity_streams, landed_after, resolved_entities, table
from sync_pipelines.stack import Action, LinkedRecord, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

Key = tuple[str, str]  # (tool, the tool's own id)


@dataclass
class ActionRun:
    action: str
    baseline: bool = False
    transitions: int = 0
    held_back: int = 0  # met the trigger but not its filter
    created: int = 0
    already_done: int = 0  # in the ledger, or made by a run that crashed before recording it
    created_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Record:
    """A record of a template's context: its fields (None: not found), the tool records it stands for, the tool each
    field's value came from (a reference is an id in that tool) and what it is (a golden id, or ``tool:id``)."""

    fields: dict[str, Any] | None
    members: tuple[Key, ...] = ()
    tools: dict[str, str] = field(default_factory=dict)
    identity: str | None = None


def _plain(value: Any) -> Any:
    """A warehouse value as templates and JSON take it: None for a gap, Python scalars, ISO text for times."""
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


class _Context:
    """Finds the records a template reads, golden where the entity is resolved, else landed, and the tool records
    linked to them; each looked up once per run."""

    def __init__(self, stack: Stack, warehouse: Warehouse):
        self.stack, self.warehouse = stack, warehouse
        self.resolved = set(resolved_entities(stack))
        self.found: dict[tuple[str, bool, Key], _Record] = {}

    def _golden_table(self, entity: str) -> bool:
        return entity in self.resolved and self.warehouse.has_table(table("crosswalk", entity)) and \
            self.warehouse.has_table(table("golden", entity))

    def golden(self, entity: str, keys: pd.DataFrame, sources: bool = True) -> dict[Key, _Record]:
        """The golden records of the tool records ``keys`` (``_source``, ``_source_id``) that have a live one, with
        the tool each field came from when ``sources`` (a reference is followed from them)."""
        if not self._golden_table(entity) or keys.empty:
            return {}
        links = self.warehouse.read_keys(table("crosswalk", entity), keys)
        ids = links["entity_id"].unique()
        members = self.warehouse.read_where_in(table("crosswalk", entity), "entity_id", ids)
        golden = self.warehouse.read_where_in(table("golden", entity), "entity_id", ids)
        if "_deleted" in golden:
            golden = golden[~golden["_deleted"].astype(bool)]
        golden = golden.set_index("entity_id")
        tools: dict[str, dict[str, str]] = {}
        if sources:
            provenance = self.warehouse.read_where_in(table("provenance", entity), "entity_id", golden.index,
                                                      ["entity_id", "field", "tool"])
            for entity_id, name, tool in provenance.itertuples(index=False, name=None):
                tools.setdefault(entity_id, {})[name] = tool
        grouped = {entity_id: tuple(zip(part["_source"], part["_source_id"].astype(str)))
                   for entity_id, part in members.groupby("entity_id")}
        fields = self.stack.entities[entity].fields
        records = {}
        for entity_id in golden.index:
            row = golden.loc[entity_id]
            records[entity_id] = _Record({f: _plain(row[f]) if f in golden.columns else None for f in fields},
                                         grouped.get(entity_id, ()), tools.get(entity_id, {}), str(entity_id))
        return {(source, str(source_id)): records[entity_id]
                for source, source_id, entity_id in links[["_source", "_source_id", "entity_id"]].itertuples(
                    index=False, name=None) if entity_id in records}

    def landed(self, entity: str, row: pd.Series | dict) -> _Record:
        tool, source_id = row["_source"], str(row["_source_id"])
        fields = self.stack.entities[entity].fields
        return _Record({f: _plain(row.get(f)) for f in fields}, ((tool, source_id),), dict.fromkeys(fields, tool),
                       f"{tool}:{source_id}")

    def referenced(self, entity: str, wanted: set[Key], sources: bool) -> dict[Key, _Record]:
        """The records of ``entity`` whose id in a tool is one of ``wanted`` (tool, id): golden through the
        crosswalk, else the live landed row in that tool; a record not found still stands for its id."""
        missing = {key for key in wanted if (entity, sources, key) not in self.found}
        if missing:
            golden = self.golden(entity, pd.DataFrame(sorted(missing), columns=["_source", "_source_id"]), sources)
            for tool in {tool for tool, _ in missing - set(golden)}:
                ids = sorted(i for t, i in missing - set(golden) if t == tool)
                rows = self._landed_where(entity, "_source_id", ids, tools={tool})
                golden.update({(tool, str(row["_source_id"])): self.landed(entity, row) for _, row in rows.iterrows()})
            for key in missing:
                self.found[(entity, sources, key)] = golden.get(key) or _Record(None, (key,), {}, ":".join(key))
        return {key: self.found[(entity, sources, key)] for key in wanted}

    def _landed_where(self, entity: str, column: str, values: list, tools: set[str] | None = None) -> pd.DataFrame:
        """Live landed rows of ``entity`` (in ``tools``, or all) whose ``column`` is one of ``values``."""
        parts = []
        for tool, stream in entity_streams(self.stack, entity):
            if (tools is None or tool in tools) and \
                    column in {c.name for c in self.warehouse.landing[(tool, stream)].columns}:
                rows = self.warehouse.read_where_in(landing_table_name(tool, stream), column, values)
                parts.append(rows[~rows["_deleted"].astype(bool)])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["_source", "_source_id"])

    def linked(self, tool: str, link: LinkedRecord, to: _Record, to_entity: str) -> tuple[list[str], dict | None]:
        """The ids of the records of ``tool``'s ``link.stream`` linked to ``to`` (the tool's own records of it, or
        those referencing it), and the first record of the stream's entity linked to it (its fields, or None)."""
        entity = self.stack.tools[tool].streams[link.stream].entity
        through = link.through or (None if entity == to_entity else next(
            f for f, spec in self.stack.entities[entity].fields.items() if spec.references == to_entity))
        if not to.members:
            return [], None
        if through is None:  # a record of the stream's own entity: its members in the tool
            return sorted(i for t, i in to.members if t == tool), to.fields
        pairs = set(to.members)
        values = sorted({i for _, i in to.members})
        if self._golden_table(entity):
            staged = self.warehouse.read_where_in(table("staged", entity), through, values,
                                                  ["_source", "_source_id", through])
            staged = staged[[(s, str(v)) in pairs for s, v in zip(staged["_source"], staged[through])]]
            golden = self.golden(entity, staged, sources=False)
            members = sorted({m for record in golden.values() for m in record.members})
            first = min(golden.values(), key=lambda record: record.identity, default=None)
            return sorted(i for t, i in members if t == tool), first.fields if first else None
        rows = self._landed_where(entity, through, values)
        rows = rows[[(s, str(v)) in pairs for s, v in zip(rows["_source"], rows[through])]].sort_values(
            ["_source", "_source_id"])
        ids = rows.loc[(rows["_source"] == tool) & (rows["_source_stream"] == link.stream), "_source_id"]
        return sorted(ids.astype(str)), self.landed(entity, rows.iloc[0]).fields if len(rows) else None


def _reference(record: _Record, field: str) -> Key | None:
    """The (tool, id) a record's reference field points at, None when it holds none."""
    value, tool = (record.fields or {}).get(field), record.tools.get(field)
    return None if value is None or tool is None else (tool, str(value))


def context_entities(stack: Stack, action: Action) -> dict[str, str]:
    """Each record name of the action's context -> its entity (the stack loader checked every reference)."""
    entities = {action.when.record: action.when.entity}
    for name, owner, reference in action.followed():
        entities[name] = stack.entities[entities[owner]].fields[reference].references
    return entities


def action_entities(stack: Stack, action: Action) -> set[str]:
    """The entities an action reads: its trigger's, its related records' and its linked records'."""
    linked = {stack.tools[action.create.tool].streams[link.stream].entity for link in action.create.links.values()}
    return set(context_entities(stack, action).values()) | linked


class _Creator:
    """Builds and sends an action's records, with what each one's templates read."""

    def __init__(self, stack: Stack, warehouse: Warehouse, connector, action: Action):
        self.stack, self.connector, self.action = stack, connector, action
        self.lookup = _Context(stack, warehouse)
        self.entities = context_entities(stack, action)
        self.made: dict[str, str] = {}  # linked records created in this run, by idempotency key

    def records(self, rows: pd.DataFrame) -> dict[Key, dict[str, _Record]]:
        """The context records of each landed row: its triggering record (its golden record, else the row itself),
        then its related records level by level, each level looked up for every row at once."""
        when, owners = self.action.when, {owner for _, owner, _ in self.action.followed()}
        golden = self.lookup.golden(when.entity, rows[["_source", "_source_id"]], sources=when.record in owners)
        found = {}
        for _, row in rows.iterrows():
            key = (row["_source"], str(row["_source_id"]))
            found[key] = {when.record: golden.get(key) or self.lookup.landed(when.entity, row)}
        for name, owner, reference in self.action.followed():
            wanted = {key: _reference(records[owner], reference) for key, records in found.items()}
            looked = self.lookup.referenced(self.entities[name], {w for w in wanted.values() if w}, name in owners)
            for key, records in found.items():
                records[name] = looked[wanted[key]] if wanted[key] else _Record(None)
        return found

    def payload(self, row: pd.Series, found: dict[str, _Record], key: str) -> dict[str, Any]:
        context = {"action": {"name": self.action.name},
                   "source": {"tool": row["_source"], "stream": row["_source_stream"], "id": str(row["_source_id"])},
                   **{name: record.fields for name, record in found.items()}}
        target = self.action.create
        links = {name: self._link_id(name, link, context, found, row) for name, link in target.links.items()}
        return {**links, **self._render(target.fields, context, "create.fields", row), "idempotency_key": key}

    def _render(self, fields: Any, context: dict, path: str, row: pd.Series) -> Any:
        try:
            return render_fields(fields, context, path)
        except TemplateProblem as problem:
            raise RuntimeError(f"{self.action.name}: for {row['_source']} {row['_source_id']}: at {problem.path}: "
                               f"{problem.problem}") from None

    def _link_id(self, name: str, link: LinkedRecord, context: dict, found: dict[str, _Record],
                 row: pd.Series) -> str:
        """The id of the linked record, created (once: its idempotency key names what it is linked to) when the
        tool holds none."""
        tool, to = self.action.create.tool, found[link.linked_to]
        ids, first = self.lookup.linked(tool, link, to, self.entities[link.linked_to])
        if ids:
            return ids[0]
        of = to.identity or f"{row['_source']}:{row['_source_id']}"  # no record to link to: the triggering one
        key = f"{self.action.name}:{link.stream}:{of}"
        if key not in self.made:
            fields = self._render(link.fields, {**context, link.record: first}, f"create.links.{name}.fields", row)
            [result] = self.connector.write(link.stream, [{**fields, "idempotency_key": key}])
            if not result["ok"]:
                raise RuntimeError(f"{self.action.name}: {tool} refused the {link.stream} record for {name} of "
                                   f"{row['_source']} {row['_source_id']}: {result['error']}")
            self.made[key] = result["id"]
        return self.made[key]


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


def _reached(action: Action, before: pd.DataFrame) -> pd.Series:
    """Which records (``value`` now, ``value_before`` and ``seen`` from the last run) meet the trigger."""
    when = action.when
    if when.kind == "becomes":
        return (before["value"] == when.becomes) & (before["value_before"] != when.becomes)
    if when.kind == "changes":
        gap = "\x00"  # no field value holds it: two gaps are no change
        return before["seen"] & (before["value"].fillna(gap) != before["value_before"].fillna(gap))
    return ~before["seen"]


def run_action(stack: Stack, warehouse: Warehouse, connector, action: Action, run_id: str | None = None) -> ActionRun:
    """Create the target record for every record that newly met the trigger (and its filter), exactly once; its
    ledger row names the run that created it (``revert`` lists a run's creates).

    The first run records a baseline (records already in that state are history, not transitions); later runs
    look only at records extracted since. Before any create, each record's intent is committed to
    ``action_pending`` with its idempotency key, which the create carries (the target connector sends it the way
    its API makes a create findable or replayable); the ledger row replaces the intent once the create succeeded.
    An intent still pending on a rerun is a create that may have reached the tool before a crash: the connector
    is asked for the record made under that key (``find_created``), and only when there is none is it sent again.
    """
    when, target = action.when, action.create
    # what the kept state means: the templates, the filter and the target can change without a new baseline
    mark = StepMark.read(warehouse, f"action_{action.name}", (when.kind, when.entity, when.watched),
                         keeps=["action_state"])
    baseline = not mark.valid
    # a baseline only records each record's state; a later run builds payloads from whole records
    wanted = ([when.watched] if when.watched else []) if baseline else None
    rows, landed = _entity_rows_after(stack, warehouse, when.entity, mark.position("landed_batch"), wanted)
    outcome = ActionRun(action.name, baseline=baseline)
    current = rows.assign(action=action.name, value=rows[when.watched].astype("str") if when.watched else "")[
        ["action", "_source", "_source_id", "value"]]
    if not baseline:
        known = warehouse.read_keys("action_state", current)
        before = current.merge(known[known["action"] == action.name], on=["action", "_source", "_source_id"],
                               how="left", suffixes=("", "_before"), indicator="seen")
        before["seen"] = before["seen"] == "both"
        keys = before.loc[_reached(action, before).to_numpy(dtype=bool), ["_source", "_source_id"]]
        ledger, intents_left = (_action_rows(warehouse, action, keys, t) for t in ("action_ledger", "action_pending"))
        done = set(zip(ledger["_source"], ledger["_source_id"]))
        pending = dict(zip(zip(intents_left["_source"], intents_left["_source_id"]), intents_left["idempotency_key"]))
        outcome.transitions = len(keys)
        todo = [k for k in keys.itertuples(index=False, name=None) if k not in done]
        outcome.already_done = len(keys) - len(todo)
        indexed = rows.set_index(["_source", "_source_id"], drop=False)
        creator = _Creator(stack, warehouse, connector, action)
        records = creator.records(indexed.loc[todo].reset_index(drop=True)) if todo else {}
        if when.condition is not None:  # an intent left by a crash was decided then: it is completed
            decided = [k for k in todo if k not in pending]
            frame = pd.DataFrame([records[k][when.record].fields for k in decided],
                                 columns=list(stack.entities[when.entity].fields)).convert_dtypes()
            meets = dict(zip(decided, evaluate(when.condition, frame))) if decided else {}
            outcome.held_back = sum(not meets[k] for k in decided)
            todo = [k for k in todo if k in pending or meets[k]]
        intents = {k: pending.get(k, f"{action.name}:{k[0]}:{k[1]}") for k in todo}
        warehouse.append("action_pending", index=("_source_id",), frame=pd.DataFrame([
            {"action": action.name, "_source": source, "_source_id": source_id, "created_tool": target.tool,
             "idempotency_key": intents[(source, source_id)], "pending_since": datetime.now(timezone.utc)}
            for source, source_id in todo if (source, source_id) not in pending]))
        for (source, source_id), key in intents.items():
            created_id = connector.find_created(target.stream, key) if (source, source_id) in pending else None
            if created_id is not None:  # made before a crash, never recorded
                outcome.already_done += 1
            else:
                row = indexed.loc[(source, source_id)]
                payload = creator.payload(row, records[(source, str(source_id))], key)
                [result] = connector.write(target.stream, [payload])
                if not result["ok"]:
                    raise RuntimeError(f"{action.name}: {target.tool} refused the {target.stream} record for "
                                       f"{source} {source_id}: {result['error']}")
                created_id = result["id"]
                outcome.created += 1
                outcome.created_ids.append(str(created_id))
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
        mark.commit(warehouse, conn, landed_batch=landed)
    return outcome


def _action_rows(warehouse: Warehouse, action: Action, keys: pd.DataFrame, name: str) -> pd.DataFrame:
    """An action's rows of ``name`` (its ledger or its pending intents) for the (source, id) pairs in ``keys``."""
    if not warehouse.has_table(name):
        return pd.DataFrame(columns=["_source", "_source_id", "idempotency_key"])
    rows = warehouse.read_keys(name, keys)
    return rows[rows["action"] == action.name]
