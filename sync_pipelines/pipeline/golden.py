"""Golden records: resolution and survivorship on the staged records, incremental where it can be, and the
blocking check on them."""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from sync_pipelines.core.changes import ALL_FIELDS, CONCURRENT_COLUMNS, KEYS, changed_fields, concurrent_edits
from sync_pipelines.core.quality import SOURCE_COLUMNS, QualityReport, columns_read, validate, volume_check
from sync_pipelines.core.survive import derive_field_change_times, echoed_writes, survivorship, without_clears
from sync_pipelines.pipeline.common import (
    METADATA,
    StepMark,
    entity_streams,
    identity_fields,
    stack_fingerprint,
    table,
)
from sync_pipelines.core.scoring import waterfall_markdown
from sync_pipelines.resolve import block_neighbors, build_crosswalk, explain_pair, record_refs, resolve_entities
from sync_pipelines.pipeline.writeback import LEDGER
from sync_pipelines.stack import Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

# An incremental golden run rebuilds everything instead when the changes pass the first share of the staged records
# (finding what they reach would cost more than the rebuild), or what they reach passes the second.
FULL_REBUILD_CHANGES = 0.1
FULL_REBUILD_SHARE = 0.3
# The layout of the golden tables and field state: a change rebuilds everything once. 2: clears are times in the
# field state (older states are read as all gaps); 3: deleted golden records stay, marked _deleted.
LAYOUT = 3
CLEARS_LAYOUT = 2
CONCURRENT_TABLE = "concurrent_edits"  # every entity's, for a steward: `sync-pipelines conflicts`
PARAMETERS_TABLE = "identity_parameters"  # the scored matcher's trained parameters, a version per training
DECISIONS_TABLE = "identity_decisions"  # a steward's accept or reject of a reviewed pair, every entity's
DECISIONS = ("accept", "reject")


@dataclass
class Golden:
    entity: str
    records: int
    entities: int
    conflicts: int
    deleted: int = 0  # golden records kept as deleted (every member deleted), not counted in ``entities``
    merges: dict[str, Any] = field(default_factory=dict)
    changed_ids: list[str] | None = None  # entities rebuilt by an incremental run; None after a full rebuild
    resolved: int = 0  # records resolved and survived by this run
    reason: str = ""  # why this run rebuilt everything, or what it rebuilt
    # fields two tools changed differently since the last run (changes.concurrent_edits)
    concurrent: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CONCURRENT_COLUMNS))
    # blocks too large to compare whole, by rule and key: with records left out, and split into parts
    skipped: list[dict[str, Any]] = field(default_factory=list)
    split: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] | None = None  # the scored matcher's figures this run (``resolve`` report)
    parameters_version: int | None = None  # of the scored matcher's trained parameters used
    waterfall: str | None = None  # Markdown: the weights behind the likeliest pair of the review band


def _with_write_origins(state: pd.DataFrame, ledger: pd.DataFrame | None, fields: list[str]) -> pd.DataFrame:
    """A value we wrote into a tool keeps the change time of the value it copied, so our own write is never seen as
    that tool's newer edit (which would echo it back as a conflict and let it win fields it never changed)."""
    if ledger is None or ledger.empty:
        return state
    latest = _latest_writes(ledger)
    state = state.copy()
    keys = pd.MultiIndex.from_arrays([state["_source"].astype(str), state["_source_id"].astype(str)])
    for fname in fields:
        origin = latest[latest["field"] == fname]
        rows = keys.get_indexer(pd.MultiIndex.from_arrays([origin["tool"].astype(str),
                                                           origin["source_id"].astype(str)]))
        origin, rows = origin[rows >= 0], rows[rows >= 0]
        if not len(rows):
            continue
        held = state[fname].iloc[rows].reset_index(drop=True).astype("str").replace("", None)
        written = origin["value"].reset_index(drop=True).astype("str").replace("", None)
        # a clear we wrote is ours too: the tool holds nothing where we sent nothing
        ours = ((held == written).fillna(False) | (held.isna() & written.isna())).to_numpy(bool)
        column = state.columns.get_loc(f"{fname}__changed_at")
        state.iloc[rows[ours], column] = pd.to_datetime(origin["origin_changed_at"].iloc[ours], utc=True).to_numpy()
    return state


def _latest_writes(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger's last write to each field of each record."""
    return ledger.sort_values("written_at", kind="stable").drop_duplicates(["tool", "source_id", "field"],
                                                                           keep="last")


@dataclass
class _Echo:
    """Changes logged by staging that are only our own write-backs coming back: their records' new field state,
    to store without resolving or surviving anything again."""

    keys: pd.DataFrame
    state: pd.DataFrame
    # records a write-back created, now staged: members their golden records count from now on (entity_id, members)
    joined: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["entity_id", "members"]))


def _echoes(stack: Stack, warehouse: Warehouse, entity: str, log: pd.DataFrame, now: datetime) -> _Echo | None:
    """The logged changes of records that changed only by taking the values the write-back ledger says we last
    wrote them (``survive.echoed_writes``): after a first sync that updated most records of every tool, the tools
    report each as changed, and resolving them again would cost a rebuild to find what was already decided. Their
    field state still takes the new values, with the change times of the values they copied. None: no echo."""
    if not warehouse.has_table(LEDGER):
        return None
    fields = list(stack.entities[entity].fields)
    per_key = log.assign(removed=log["removed"].astype(bool), new=log["identity_changed"].eq(ALL_FIELDS)).groupby(
        KEYS, as_index=False, sort=False)[["removed", "new"]].any()
    # a new record is ours when a write-back created it: the crosswalk links it to its live golden record at once
    # (a record restored in its tool is linked too, to the golden record its deletion deleted: that one must come
    # back, so it is resolved again)
    created = warehouse.read_keys(table("crosswalk", entity), per_key.loc[per_key["new"], KEYS], [*KEYS, "entity_id"])
    deleted = warehouse.read_where_in(table("golden", entity), "entity_id", created["entity_id"],
                                      ["entity_id", "_deleted"])
    gone = set(deleted.loc[deleted["_deleted"].astype(bool), "entity_id"])
    created = created[~created["entity_id"].isin(gone)]
    entity_of = created.set_index(KEYS)["entity_id"]
    created = created[KEYS]
    candidates = pd.concat([per_key.loc[~per_key["removed"] & ~per_key["new"], KEYS], created], ignore_index=True)
    if candidates.empty:
        return None
    ledger = warehouse.read_where_in(LEDGER, "source_id", candidates["_source_id"],
                                     ["tool", "source_id", "field", "value", "origin_changed_at", "written_at"])
    ledger = ledger.merge(candidates, left_on=["tool", "source_id"], right_on=KEYS)[ledger.columns]
    if ledger.empty:
        return None
    candidates = candidates.merge(ledger[["tool", "source_id"]].drop_duplicates(), left_on=KEYS,
                                  right_on=["tool", "source_id"])[KEYS]
    records = warehouse.read_keys(table("staged", entity), candidates, [*KEYS, *fields, "_updated_at"])
    previous = warehouse.read_keys(table("field_state", entity), candidates)
    written = _latest_writes(ledger).rename(columns={"tool": "_source", "source_id": "_source_id"})
    echoed = records[echoed_writes(records, previous, written, fields)]
    if echoed.empty:
        return None
    state = derive_field_change_times(previous.merge(echoed[KEYS], on=KEYS), echoed, fields, extracted_at=now)
    joined = entity_of.reindex(pd.MultiIndex.from_frame(echoed[KEYS])).dropna().value_counts()
    return _Echo(echoed[KEYS].reset_index(drop=True), _with_write_origins(state, ledger, fields),
                 joined.rename_axis("entity_id").rename("members").reset_index())


def _store_echo(warehouse: Warehouse, conn, tables: dict[str, str], echo: _Echo) -> None:
    warehouse.delete_keys(conn, tables["field_state"], echo.keys)
    warehouse.insert(conn, tables["field_state"], echo.state)
    if len(echo.joined):
        quote = conn.dialect.identifier_preparer.quote
        mark = "%s" if warehouse.dialect == "postgresql" else "?"
        conn.exec_driver_sql(
            f"UPDATE {quote(tables['golden'])} SET {quote('_member_count')} = {quote('_member_count')} + {mark} "
            f"WHERE {quote('entity_id')} = {mark}",
            [(int(n), str(e)) for e, n in zip(echo.joined["entity_id"], echo.joined["members"])])


def _golden_tables(entity: str) -> dict[str, str]:
    return {kind: table(kind, entity) for kind in ("golden", "crosswalk", "provenance", "field_state")}


@dataclass(frozen=True)
class Trained:
    """The latest parameters trained for an entity's scored matcher, for the model as it is now declared."""

    version: int
    parameters: dict[str, Any]
    trained_at: Any
    records: int


def model_fingerprint(stack: Stack, entity: str) -> str:
    return stack_fingerprint(stack.identity[entity].model)


def trained_parameters(stack: Stack, warehouse: Warehouse, entity: str) -> Trained | None:
    """None when the entity declares no model, or none was trained for the model as declared."""
    if stack.identity[entity].model is None or not warehouse.has_table(PARAMETERS_TABLE):
        return None
    rows = warehouse.read_where_in(PARAMETERS_TABLE, "entity", [entity])
    rows = rows[rows["fingerprint"] == model_fingerprint(stack, entity)]
    if rows.empty:
        return None
    latest = rows.sort_values("version").iloc[-1]
    return Trained(int(latest["version"]), json.loads(latest["parameters"]), latest["trained_at"],
                   int(latest["records"]))


def next_version(warehouse: Warehouse, entity: str) -> int:
    if not warehouse.has_table(PARAMETERS_TABLE):
        return 1
    stored = warehouse.read_where_in(PARAMETERS_TABLE, "entity", [entity], ["version"])
    return int(stored["version"].max()) + 1 if len(stored) else 1


def store_parameters(warehouse: Warehouse, conn, stack: Stack, entity: str, version: int,
                     parameters: dict[str, Any], records: int, now: datetime) -> None:
    """A new version of the entity's trained parameters; older ones stay, as history."""
    warehouse.insert(conn, PARAMETERS_TABLE, pd.DataFrame([{
        "entity": entity, "version": version, "fingerprint": model_fingerprint(stack, entity), "trained_at": now,
        "records": records, "parameters": json.dumps(parameters)}]), index=("entity",))


def decisions(warehouse: Warehouse, entity: str) -> pd.DataFrame:
    """The steward's decisions on the entity's pairs, the latest per pair, in the order they were taken."""
    columns = ["entity", "left_ref", "right_ref", "decision", "decided_by", "decided_at"]
    if not warehouse.has_table(DECISIONS_TABLE):
        return pd.DataFrame(columns=columns)
    rows = warehouse.read_where_in(DECISIONS_TABLE, "entity", [entity]).sort_values("decided_at", kind="stable")
    pair = rows[["left_ref", "right_ref"]].apply(lambda r: tuple(sorted(r)), axis=1) if len(rows) else []
    return rows.assign(_pair=pair).drop_duplicates("_pair", keep="last").drop(columns="_pair")[columns]


def decide(warehouse: Warehouse, entity: str, decision: str, left: str, right: str, by: str,
           now: datetime | None = None) -> None:
    """Store a steward's decision on a pair; the next golden run of the entity applies it (and every one after)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r}: use one of {', '.join(DECISIONS)}")
    if left == right:
        raise ValueError(f"a decision needs two records, got {left!r} twice")
    with warehouse.transaction() as conn:
        warehouse.insert(conn, DECISIONS_TABLE, pd.DataFrame([{
            "entity": entity, "left_ref": left, "right_ref": right, "decision": decision, "decided_by": by,
            "decided_at": now or datetime.now(timezone.utc)}]), index=("entity",))


def _survive(stack: Stack, warehouse: Warehouse, entity: str, records: pd.DataFrame, crosswalk: pd.DataFrame | None,
             field_state: pd.DataFrame | None, now: datetime, older_layout: bool,
             trained: Trained | None = None, decided: pd.DataFrame | None = None):
    """Resolve ``records`` into entities and survive one golden record each: the work of full and incremental
    runs alike, on all staged records or on the part a change can reach. A field state of an ``older_layout``
    cannot tell clears from gaps: its empty values are all taken for gaps. Without ``trained`` parameters, a
    declared model is trained on ``records`` (all of them: only a full run comes here without)."""
    fields = list(stack.entities[entity].fields)
    held = []
    if decided is not None and len(decided):  # those naming records outside an incremental run's scope wait
        refs = set(record_refs(records))
        held = [(row.decision, row.left_ref, row.right_ref) for row in decided.itertuples()
                if row.left_ref in refs and row.right_ref in refs]
    clusters = resolve_entities(records, stack.identity[entity], crosswalk=crosswalk,
                                parameters=trained.parameters if trained else None, decisions=held)
    if older_layout and field_state is not None:
        field_state = without_clears(field_state, fields)
    state = derive_field_change_times(field_state, records, fields, extracted_at=now)
    ledger = None
    if warehouse.has_table(LEDGER):
        ledger = warehouse.read_where_in(LEDGER, "source_id", records["_source_id"])
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
    trained = trained_parameters(stack, warehouse, entity)
    untrained = stack.identity[entity].model is not None and trained is None
    version = next_version(warehouse, entity) if untrained else trained.version if trained else None
    decided = decisions(warehouse, entity)
    # a new training or a steward's decision changes the matches: both are part of what the results depend on
    mark = StepMark.read(warehouse, name, (LAYOUT, list(stack.entities[entity].fields), stack.identity[entity],
                                           stack.survivorship[entity], version,
                                           decided[["left_ref", "right_ref", "decision"]].values.tolist()),
                         keeps=[tables["golden"]])
    older_layout = mark.stored is not None and (mark.stored.get("layout") or 1) < CLEARS_LAYOUT
    log, last_batch = mark.log_since(warehouse, log_table)
    echo = None
    if mark.valid and not untrained and log is not None and len(log) and not log["_source"].isna().any():
        echo = _echoes(stack, warehouse, entity, log, now)
        if echo is not None:
            log = log[~pd.MultiIndex.from_frame(log[KEYS]).isin(pd.MultiIndex.from_frame(echo.keys))]
    echoed = f"; {len(echo.keys)} more were our own write-backs coming back" if echo is not None else ""
    staged_rows = warehouse.count(staged_table)
    reason = "the identity model has no trained parameters: trained on every staged record" if untrained else \
        _rebuild_reason(mark, log, staged_rows)
    full = reason is not None
    if not full and log.empty:
        if echo is not None:
            with warehouse.transaction() as conn:
                _store_echo(warehouse, conn, tables, echo)
                mark.commit(warehouse, conn, batch=last_batch, layout=LAYOUT, decided_at=mark.stored.get("decided_at"))
                warehouse.prune_log(conn, log_table, last_batch)
        live, deleted = _counts(warehouse, tables["golden"])
        return Golden(entity, staged_rows, live, 0, deleted=deleted, changed_ids=[],
                      reason="no change" + echoed.replace(" more", ""))
    if not full:
        scope = _incremental_scope(stack, warehouse, entity, log)
        if len(scope.keys) > FULL_REBUILD_SHARE * staged_rows:  # reading by key would cost more than reading all
            full, reason = True, (f"{len(log)} staged changes reach {len(scope.keys)} records, more than "
                                  f"{FULL_REBUILD_SHARE:.0%} of {staged_rows}")
    if not full:
        records = warehouse.read_keys(staged_table, scope.keys)
        clusters, state, result = _survive(stack, warehouse, entity, records, scope.crosswalk,
                                           warehouse.read_keys(tables["field_state"], scope.keys), now, older_layout,
                                           trained, decided)
        fresh = set(clusters) - scope.entity_ids
        # a new id equal to one outside the scope (a hash of a record that left that entity) would merge two
        # entities' rows: rebuild everything instead (rare)
        full = bool(fresh) and not warehouse.read_where_in(tables["golden"], "entity_id", fresh, ["entity_id"]).empty
        reason = "a new entity id equals a stored one" if full else f"{len(log)} staged changes{echoed}"
    if full:
        records = warehouse.read_table(staged_table)
        stored = warehouse.read_if_exists(tables["crosswalk"])
        clusters, state, result = _survive(stack, warehouse, entity, records, stored,
                                           warehouse.read_if_exists(tables["field_state"]), now, older_layout,
                                           trained, decided)
    else:
        stored = scope.crosswalk
    golden = result.golden.reset_index().assign(_deleted=False, _deleted_at=pd.NaT)
    golden["_deleted_at"] = pd.to_datetime(golden["_deleted_at"], utc=True)
    crosswalk, provenance = build_crosswalk(records, clusters), result.provenance
    gone = _deleted_entities(stack, warehouse, entity, stored, set(golden["entity_id"].tolist()), now)
    if gone is not None:  # kept, with the members and provenance they had
        golden = pd.concat([golden, gone.golden[golden.columns]], ignore_index=True)
        crosswalk = pd.concat([crosswalk, gone.crosswalk[crosswalk.columns]], ignore_index=True)
        provenance = pd.concat([provenance, gone.provenance[provenance.columns]], ignore_index=True)
    concurrent = concurrent_edits(result.conflicts, (mark.stored or {}).get("decided_at"))
    resolution = clusters.attrs.get("resolution", {})
    with warehouse.transaction() as conn:
        if untrained:
            store_parameters(warehouse, conn, stack, entity, version, resolution["model"]["parameters"],
                             len(records), now)
        if resolution.get("model") is not None:
            _store_review(warehouse, conn, entity, resolution["model"]["review"], full, records, now)
        if full:
            changed_ids = None
            warehouse.replace_within(conn, tables["golden"], golden, index=("entity_id",))
            warehouse.replace_within(conn, tables["crosswalk"], crosswalk, index=("entity_id", "_source_id"))
            warehouse.replace_within(conn, tables["provenance"], provenance, index=("entity_id",))
            warehouse.replace_within(conn, tables["field_state"], state, index=("_source_id",))
            logged = pd.DataFrame({"entity_id": [None], "removed": [False]})  # one row saying: everything
        else:
            changed_ids = sorted(scope.entity_ids | set(golden["entity_id"].tolist()))
            for kind in ("golden", "crosswalk", "provenance"):
                warehouse.delete_where_in(conn, tables[kind], "entity_id", scope.entity_ids)
            warehouse.delete_keys(conn, tables["field_state"], scope.keys)
            warehouse.insert(conn, tables["golden"], golden)
            warehouse.insert(conn, tables["crosswalk"], crosswalk)
            warehouse.insert(conn, tables["provenance"], provenance)
            warehouse.insert(conn, tables["field_state"], state)
            if echo is not None:  # those the scope did not take in again
                outside = ~pd.MultiIndex.from_frame(echo.keys).isin(pd.MultiIndex.from_frame(scope.keys[KEYS]))
                _store_echo(warehouse, conn, tables, _Echo(  # the scope's own entities were counted again
                    echo.keys[outside], echo.state.merge(echo.keys[outside], on=KEYS),
                    echo.joined[~echo.joined["entity_id"].isin(scope.entity_ids)]))
            logged = pd.DataFrame({"entity_id": changed_ids}).assign(
                removed=lambda f: ~f["entity_id"].isin(golden["entity_id"]))
        warehouse.insert(conn, table("conflicts", entity), result.conflicts)
        warehouse.insert(conn, CONCURRENT_TABLE, concurrent.assign(entity=entity), index=("entity",))
        warehouse.insert(conn, table("golden_changes", entity),
                         logged.assign(batch=warehouse.next_batch(conn, table("golden_changes", entity)),
                                       changed_at=now))
        mark.commit(warehouse, conn, batch=last_batch, layout=LAYOUT, decided_at=now.isoformat())
        warehouse.prune_log(conn, log_table, last_batch)  # the golden step is its only reader
    live, deleted = _counts(warehouse, tables["golden"])
    return Golden(entity, staged_rows, live, len(result.conflicts), deleted, resolution.get("merged_ids", {}),
                  changed_ids=changed_ids, resolved=len(records), reason=reason, concurrent=concurrent,
                  skipped=resolution.get("skipped", []), split=resolution.get("split", []), model=resolution.get("model"), parameters_version=version,
                  waterfall=_top_waterfall(stack, entity, records, resolution.get("model")))


def _top_waterfall(stack: Stack, entity: str, records: pd.DataFrame, model: dict[str, Any] | None) -> str | None:
    """The waterfall of the review band's likeliest pair, for the golden asset's metadata."""
    if not model or not model["review"]:
        return None
    top = model["review"][0]
    table = explain_pair(records, stack.identity[entity], model["parameters"], top["left"], top["right"])
    return f"{top['left']} and {top['right']}\n\n" + waterfall_markdown(table)


def _store_review(warehouse: Warehouse, conn, entity: str, review: list[dict[str, Any]], full: bool,
                  records: pd.DataFrame, now: datetime) -> None:
    """The pairs in the scored matcher's review band: all of them after a full run; after an incremental one,
    those of the records it resolved again replace theirs."""
    frame = pd.DataFrame(review, columns=["left", "right", "weight", "probability"]).rename(
        columns={"left": "left_ref", "right": "right_ref"}).assign(found_at=now)
    frame["found_at"] = pd.to_datetime(frame["found_at"], utc=True)
    name = table("review_pairs", entity)
    if full:
        warehouse.replace_within(conn, name, frame, index=("left_ref",))
        return
    refs = record_refs(records).unique()
    for side in ("left_ref", "right_ref"):
        warehouse.delete_where_in(conn, name, side, refs)
    warehouse.insert(conn, name, frame, index=("left_ref",))


def review_pairs(warehouse: Warehouse, entity: str) -> pd.DataFrame:
    """The review band's pairs a steward has not decided on, the likeliest first."""
    stored = warehouse.read_if_exists(table("review_pairs", entity))
    if stored is None:
        return pd.DataFrame(columns=["left_ref", "right_ref", "weight", "probability", "found_at"])
    decided = decisions(warehouse, entity)
    done = {tuple(sorted(pair)) for pair in decided[["left_ref", "right_ref"]].values.tolist()}
    pending = [tuple(sorted(pair)) not in done for pair in stored[["left_ref", "right_ref"]].values.tolist()]
    return stored[pending].sort_values("weight", ascending=False, kind="stable").reset_index(drop=True)


def _counts(warehouse: Warehouse, golden_table: str) -> tuple[int, int]:
    """Live and deleted golden records."""
    deleted = warehouse.count(golden_table, _deleted=True)
    return warehouse.count(golden_table) - deleted, deleted


@dataclass
class _Deleted:
    golden: pd.DataFrame  # their last golden rows, marked deleted
    crosswalk: pd.DataFrame  # their last members, so a member coming back brings the record back under its id
    provenance: pd.DataFrame  # as it was when the record was last live


def _deleted_entities(stack: Stack, warehouse: Warehouse, entity: str, crosswalk: pd.DataFrame | None,
                      live_ids: set[str], now: datetime) -> _Deleted | None:
    """The stored entities (those of ``crosswalk``) no longer live whose members are all deleted in their tools:
    kept as deleted golden records, since the last member's deletion (``_deleted_at``: its time in the tool, else
    ``now``; an entity deleted earlier keeps its own). An entity gone otherwise (merged, members quarantined) is not
    a deletion. Only the entities that left are looked at, so this costs what was deleted. None: no deleted one."""
    tables = _golden_tables(entity)
    members = pd.DataFrame(columns=["entity_id", *KEYS]) if crosswalk is None else crosswalk
    members = members[pd.Index(list(live_ids), dtype=object).get_indexer(members["entity_id"]) < 0]
    landed = [warehouse.read_where_in(landing_table_name(tool, stream), "_source_id",
                                      members.loc[members["_source"] == tool, "_source_id"],
                                      ["_source_id", "_deleted", "_updated_at"]).assign(_source=tool)
              for tool, stream in entity_streams(stack, entity) if (members["_source"] == tool).any()]
    found = members[["entity_id", *KEYS]].merge(
        pd.concat(landed, ignore_index=True) if landed else pd.DataFrame(columns=[*KEYS, "_deleted", "_updated_at"]),
        on=KEYS, how="left")
    # a member with no landed row (removed by hand) or a live one keeps its entity from counting as deleted
    found["_deleted"] = found["_deleted"].eq(True)
    per_entity = found.groupby("entity_id").agg(deleted=("_deleted", "all"), at=("_updated_at", "max"))
    ids = per_entity.index[per_entity["deleted"].to_numpy(bool)]
    if ids.empty:
        return None
    golden = warehouse.read_where_in(tables["golden"], "entity_id", ids)
    if "_deleted" not in golden.columns:  # a golden table of an older layout: none was deleted yet
        golden = golden.assign(_deleted=False, _deleted_at=pd.NaT)
    when = pd.to_datetime(per_entity["at"].reindex(golden["entity_id"]), utc=True).fillna(now)
    golden["_deleted_at"] = pd.to_datetime(golden["_deleted_at"], utc=True).where(
        golden["_deleted"].eq(True), when.set_axis(golden.index))
    return _Deleted(golden.assign(_deleted=True), members[members["entity_id"].isin(golden["entity_id"])],
                    warehouse.read_where_in(tables["provenance"], "entity_id", golden["entity_id"]))


def _rebuild_reason(mark: StepMark, log: pd.DataFrame | None, staged_rows: int) -> str | None:
    """Why the golden step must rebuild everything, or None when an incremental run will do."""
    if mark.stored is None or log is None:
        return "first run"
    if not mark.valid:
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
    fields = identity_fields(stack, entity)
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
    are kept in ``golden_failures_<entity>``, so the rate is still over every live golden record."""
    rules = stack.quality[entity]
    golden_table, failures_table = table("golden", entity), table("golden_failures", entity)
    stored = warehouse.read_where_in(golden_table, "entity_id", []).columns  # the columns alone: no row
    expectations = [e for e in rules.expectations if e.get("column") in stored]
    wanted = ["entity_id", "_deleted", *SOURCE_COLUMNS, *columns_read(entity, expectations)]
    golden = warehouse.read_table(golden_table, wanted) if changed_ids is None else warehouse.read_where_in(
        golden_table, "entity_id", changed_ids, wanted)
    golden = golden[~golden["_deleted"].astype(bool)]  # a deleted record reaches no tool: nothing to check
    report = validate(golden, entity, expectations, source="golden")
    failing = golden.loc[report.row_failures.notna().to_numpy(), ["entity_id"]].assign(
        reason=report.row_failures.dropna().to_numpy())
    with warehouse.transaction() as conn:
        if changed_ids is None:
            warehouse.replace_within(conn, failures_table, failing)
        else:
            warehouse.delete_where_in(conn, failures_table, "entity_id", changed_ids)
            warehouse.insert(conn, failures_table, failing)
    golden_rows = warehouse.count(golden_table, _deleted=False)
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


