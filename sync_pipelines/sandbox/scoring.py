"""Golden records scored against the sandbox's ground truth: what `scripts/measure_sync.py` prints and the tests
assert, computed one way for both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sync_pipelines.resolve import pairwise_precision_recall


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
