"""Golden records scored against the sandbox's ground truth: what `scripts/measure_sync.py` prints and the tests
assert, computed one way for both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sync_pipelines.resolve import pairwise_precision_recall
from sync_pipelines.warehouse import landing_table_name


@dataclass
class Resolution:
    """Pairwise precision and recall over the valid live records the truth labels, and the entity each label went
    to (the one most of its records joined)."""

    precision: float
    recall: float
    records: int
    unresolved: int  # valid live records missing from the crosswalk
    entity_of: pd.Series  # label -> entity id


@dataclass
class Conflicts:
    """Planted conflicts whose golden value is the one their rule states, per rule."""

    resolved: dict[str, int] = field(default_factory=dict)
    planted: dict[str, int] = field(default_factory=dict)
    wrong: list[dict[str, Any]] = field(default_factory=list)  # the planted cases golden got wrong, for a message


def truth_records(box, stack, entity: str) -> pd.DataFrame:
    """The truth's records of every stream feeding ``entity``, with the keys the crosswalk uses."""
    frames = []
    for tool, _, stream, spec in stack.streams():
        if spec.entity == entity:
            rows = pd.DataFrame(box.truth("records", tool=tool, stream=stream))
            frames.append(rows.assign(_source=tool, _source_stream=stream, _source_id=rows["id"].astype(str)))
    return pd.concat(frames, ignore_index=True)


def resolution(truth: pd.DataFrame, crosswalk: pd.DataFrame, label: str) -> Resolution:
    """Score the crosswalk against the truth's ``label`` column (``person``, ``company``)."""
    valid = truth[truth[label].notna() & truth["invalid"].isna() & ~truth["deleted"].astype(bool)]
    joined = valid.merge(crosswalk, on=["_source", "_source_id"], how="left")
    unresolved = int(joined["entity_id"].isna().sum())
    joined["entity_id"] = joined["entity_id"].fillna("missing:" + joined["_source"] + ":" + joined["_source_id"])
    precision, recall = pairwise_precision_recall(joined["entity_id"], joined[label])
    entity_of = joined.groupby(label)["entity_id"].agg(lambda s: s.mode().iloc[0])
    return Resolution(precision, recall, len(joined), unresolved, entity_of)


def conflicts_resolved(planted: list[dict[str, Any]], golden: pd.DataFrame, entity_of: pd.Series,
                       label: str) -> Conflicts:
    """How many ``planted`` conflicts (each naming its ``label``, ``field``, expected ``value`` and, optionally,
    ``rule``) the live ``golden`` records (indexed by entity id) hold the expected value of."""
    result = Conflicts()
    for case in planted:
        rule = case.get("rule", "as the rules say")
        result.planted[rule] = result.planted.get(rule, 0) + 1
        entity = entity_of.get(case[label])
        got = golden.at[entity, case["field"]] if entity in golden.index else None
        if got is not None and not pd.isna(got) and str(got) == case["value"]:
            result.resolved[rule] = result.resolved.get(rule, 0) + 1
        else:
            result.wrong.append({**case, "golden": got})
    return result


def score(box, stack, warehouse, entity: str, label: str, planted: list[dict[str, Any]]) -> tuple[Resolution,
                                                                                                  Conflicts]:
    """Resolution and planted conflicts of one entity, from the warehouse as the last run left it."""
    golden = warehouse.read_table(f"golden_{entity}").query("not _deleted").set_index("entity_id")
    resolved = resolution(truth_records(box, stack, entity), warehouse.read_table(f"crosswalk_{entity}"), label)
    return resolved, conflicts_resolved(planted, golden, resolved.entity_of, label)


@dataclass
class ReferenceAgreement:
    """Per golden record held by several of the compared tools: does each tool's record point at the same golden
    record of the referenced entity (through that entity's crosswalk, in the tool's own ids)?"""

    compared: int  # golden records with a record in at least two of the tools
    differ: int  # ... whose records point at two or more golden records
    missing: int  # records pointing nowhere though their tool holds a record of what the golden record points at
    samples: list[dict[str, Any]] = field(default_factory=list)


def reference_agreement(stack, warehouse, entity: str, reference: str, tools: list[str]) -> ReferenceAgreement:
    """What each tool's landed record of each golden ``entity`` record says ``reference`` is, as golden ids; a tool
    holding two records of one golden record is read at the newer one (the one write-back writes)."""
    target = stack.entities[entity].fields[reference].references
    crosswalk = warehouse.read_table(f"crosswalk_{entity}")
    targets = warehouse.read_table(f"crosswalk_{target}")[["entity_id", "_source", "_source_id"]].rename(
        columns={"entity_id": "points_at", "_source_id": reference})
    held = []
    for tool, _, stream, spec in stack.streams():
        if tool in tools and spec.entity == entity:
            landed = warehouse.read_table(landing_table_name(tool, stream))
            landed = landed[~landed["_deleted"].astype(bool)][["_source_id", "_updated_at", reference]]
            held.append(crosswalk[crosswalk["_source"] == tool].merge(landed, on="_source_id"))
    held = pd.concat(held, ignore_index=True).sort_values("_updated_at", ascending=False, kind="stable")
    held = held.drop_duplicates(["entity_id", "_source"])
    held = held.merge(targets, on=["_source", reference], how="left")
    several = held.groupby("entity_id")["_source"].transform("size") >= 2
    held = held[several]
    pointing = held.dropna(subset=["points_at"]).groupby("entity_id")["points_at"].nunique()
    differing = pointing[pointing > 1].index
    golden = warehouse.read_table(f"references_{entity}")
    golden = golden[golden["field"] == reference].set_index("entity_id")["referenced_id"]
    wanted = held.assign(golden=golden.reindex(held["entity_id"]).to_numpy())
    has_target = targets[["points_at", "_source"]].drop_duplicates().rename(columns={"points_at": "golden"})
    missing = wanted.merge(has_target, on=["golden", "_source"])
    missing = missing[missing["points_at"].isna()]
    return ReferenceAgreement(compared=int(held["entity_id"].nunique()), differ=len(differing),
                              missing=int(missing["entity_id"].nunique()),
                              samples=held[held["entity_id"].isin(differing[:3])].to_dict("records"))


def reference_accuracy(truth: pd.DataFrame, entity_of: pd.Series, target_of: pd.Series, references: pd.DataFrame,
                       reference: str, label: str, target_label: str) -> tuple[int, int]:
    """(golden records pointing at the golden record of what the truth says they point at, golden records holding
    ``reference`` whose target has a golden record): ``entity_of`` maps the truth's ``label`` to golden ids,
    ``target_of`` its ``target_label``. A golden record no source gave a value holds no reference to score."""
    expected = truth.dropna(subset=[label, target_label]).drop_duplicates(label)
    expected = pd.DataFrame({"entity_id": entity_of.reindex(expected[label]).to_numpy(),
                             "expected": target_of.reindex(expected[target_label]).to_numpy()}).dropna()
    links = references[references["field"] == reference].set_index("entity_id")["referenced_id"]
    expected = expected.drop_duplicates("entity_id")
    expected = expected[links.index.get_indexer(expected["entity_id"]) >= 0]
    got = links.reindex(expected["entity_id"]).to_numpy()
    return int((got == expected["expected"].to_numpy()).sum()), len(expected)


@dataclass
class FieldAgreement:
    """Per golden record held by several of the compared tools: do their records hold the same value of each field
    (as mapped, so "https://www.acme.com/" and "acme.com" agree)?"""

    compared: int  # golden records with a record in at least two of the tools
    differ: dict[str, int]  # field -> golden records whose tools hold two or more different values of it
    missing: dict[str, int]  # field -> golden records one tool holds empty while another holds a value
    samples: list[dict[str, Any]] = field(default_factory=list)


def field_agreement(stack, warehouse, entity: str, fields: list[str], tools: list[str]) -> FieldAgreement:
    """What each tool's landed record of each golden ``entity`` record holds in ``fields``; a tool holding two
    records of one golden record is read at the newer one (the one write-back writes); an empty value is counted
    apart (``missing``)."""
    crosswalk = warehouse.read_table(f"crosswalk_{entity}")
    held = []
    for tool, _, stream, spec in stack.streams():
        if tool in tools and spec.entity == entity:
            landed = warehouse.read_table(landing_table_name(tool, stream))
            landed = landed[~landed["_deleted"].astype(bool)][["_source_id", "_updated_at", *fields]]
            held.append(crosswalk[crosswalk["_source"] == tool].merge(landed, on="_source_id"))
    held = pd.concat(held, ignore_index=True).sort_values("_updated_at", ascending=False, kind="stable")
    held = held.drop_duplicates(["entity_id", "_source"])
    held = held[held.groupby("entity_id")["_source"].transform("size") >= 2]
    differ, missing, samples = {}, {}, []
    for name in fields:
        by_entity = held.groupby("entity_id")[name]
        values = by_entity.nunique()
        differing = values[values > 1].index
        differ[name] = len(differing)
        missing[name] = int(((values > 0) & (by_entity.count() < by_entity.size())).sum())
        samples += held.loc[held["entity_id"].isin(differing[:2]), ["entity_id", "_source", name]].to_dict("records")
    return FieldAgreement(compared=int(held["entity_id"].nunique()), differ=differ, missing=missing, samples=samples)
