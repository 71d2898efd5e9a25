"""``sync-pipelines train-identity``, ``explain`` and ``identity-review``: the scored matcher's parameters, trained
on the staged records and stored as a new version; the weights behind one pair's score, or why a golden record's
members are together; the review band's pairs and a steward's decisions on them (docs/matching.md)."""

from __future__ import annotations

import os
import sys

import click


def _entity_with_model(stack, entity: str | None) -> str:
    from sync_pipelines.cli import console

    declared = sorted(name for name, identity in stack.identity.items() if identity.model is not None)
    if not declared:
        console.print("[red]no entity's identity declares a model: add identity.<entity>.model to the stack file "
                      "(docs/matching.md)[/red]")
        sys.exit(2)
    if entity is None and len(declared) == 1:
        return declared[0]
    if entity not in declared:
        console.print(f"[red]--entity {entity!r}: name an entity whose identity declares a model; declared: "
                      f"{', '.join(declared)}[/red]" if entity else
                      f"[red]name the entity (--entity); entities with a model: {', '.join(declared)}[/red]")
        sys.exit(2)
    return entity


def _staged(stack, warehouse, entity: str):
    from sync_pipelines.cli import console
    from sync_pipelines.pipeline.common import table

    records = warehouse.read_if_exists(table("staged", entity))
    if records is None or records.empty:
        console.print(f"[red]no staged {entity} yet: run a sync first (sync-pipelines sync)[/red]")
        sys.exit(2)
    return records


@click.command("train-identity")
@click.option("--entity", help="The entity whose model to train (default: the only one that declares one).")
def train_identity(entity: str | None) -> None:
    """Train the scored matcher on every staged record and store the parameters as a new version; the next golden
    run rebuilds its entity with them (incremental runs after it keep using them)."""
    from datetime import datetime, timezone

    from sync_pipelines.cli import _stack_or_exit, console
    from sync_pipelines.pipeline.golden import next_version, store_parameters
    from sync_pipelines.resolve import train_model
    from sync_pipelines.warehouse import Warehouse

    stack = _stack_or_exit(None)
    entity = _entity_with_model(stack, entity)
    warehouse = Warehouse(stack, stack.warehouse.url)
    records = _staged(stack, warehouse, entity)
    parameters = train_model(records, stack.identity[entity])
    version = next_version(warehouse, entity)
    with warehouse.transaction() as conn:
        store_parameters(warehouse, conn, stack, entity, version, parameters, len(records), datetime.now(timezone.utc))
    console.print(f"trained {entity} on {len(records):,} staged records: parameters version {version} "
                  f"(1 in {1 / parameters['prior']:,.0f} pairs match)")


@click.command()
@click.argument("left")
@click.argument("right", required=False)
@click.option("--entity", help="The entity of the records (default: the only one that declares a model; with one "
                               "ref, the entity whose crosswalk holds it).")
def explain(left: str, right: str | None, entity: str | None) -> None:
    """With two refs (tool:source_id): why the scored matcher weighs the pair as it does, each comparison's level,
    values and weight, and the total they add up to. With one ref or a golden id: why the members of its golden
    record are together, the fewest links that join them and the reason for each."""
    from sync_pipelines.cli import _stack_or_exit
    from sync_pipelines.warehouse import Warehouse

    stack = _stack_or_exit(None)
    warehouse = Warehouse(stack, stack.warehouse.url)
    if right is None:
        _explain_record(stack, warehouse, left, entity)
    else:
        _explain_pair(stack, warehouse, left, right, entity)


def _explain_pair(stack, warehouse, left: str, right: str, entity: str | None) -> None:
    from rich.table import Table

    from sync_pipelines.cli import console
    from sync_pipelines.pipeline.golden import trained_parameters
    from sync_pipelines.resolve import explain_pair

    entity = _entity_with_model(stack, entity)
    trained = trained_parameters(stack, warehouse, entity)
    if trained is None:
        console.print(f"[red]{entity}: no parameters trained for the model as declared: run a sync or "
                      "sync-pipelines train-identity[/red]")
        sys.exit(2)
    try:
        waterfall = explain_pair(_staged(stack, warehouse, entity), stack.identity[entity], trained.parameters,
                                 left, right)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        sys.exit(2)
    view = Table("comparison", "level", left, right, "weight",
                 title=f"{entity}: {left} and {right}, parameters version {trained.version}")
    for row in waterfall.itertuples(index=False):
        view.add_row(row.comparison, row.level, _shown(row.left), _shown(row.right), f"{row.weight:+.2f}")
    console.print(view)


def _explain_record(stack, warehouse, wanted: str, entity: str | None) -> None:
    """Why the golden record holding ``wanted`` (a ref, or the golden id itself) has the members it has."""
    from rich.table import Table

    from sync_pipelines.cli import console
    from sync_pipelines.pipeline.common import table
    from sync_pipelines.pipeline.golden import decisions, trained_parameters
    from sync_pipelines.resolve import explain_members, record_refs

    entities = [entity] if entity else sorted(stack.identity)
    if entity and entity not in stack.identity:
        console.print(f"[red]--entity {entity!r}: no identity section for it; entities: "
                      f"{', '.join(sorted(stack.identity))}[/red]")
        sys.exit(2)
    for name in entities:
        crosswalk = warehouse.read_if_exists(table("crosswalk", name))
        if crosswalk is None or crosswalk.empty:
            continue
        refs = record_refs(crosswalk)
        found = crosswalk.loc[(refs == wanted) | (crosswalk["entity_id"] == wanted), "entity_id"]
        if len(found):
            entity, golden_id = name, found.iloc[0]
            break
    else:
        console.print(f"[red]no golden record holds {wanted!r} ({', '.join(entities)}): give a ref tool:source_id "
                      "or a golden id, after a sync[/red]")
        sys.exit(2)
    members = set(refs[crosswalk["entity_id"] == golden_id])
    staged = _staged(stack, warehouse, entity)
    records = staged[record_refs(staged).isin(members).to_numpy()]
    trained = trained_parameters(stack, warehouse, entity)
    decided = decisions(warehouse, entity)
    links = explain_members(records, stack.identity[entity], parameters=trained.parameters if trained else None,
                            decisions=list(decided[["decision", "left_ref", "right_ref"]].itertuples(index=False)))
    view = Table("record", "linked to", "by", "detail",
                 title=f"{entity} {golden_id}: {len(records)} record(s) together")
    for row in links.itertuples(index=False):
        view.add_row(row.left, row.right, row.linked_by, row.detail)
    console.print(view if len(links) else f"{entity} {golden_id} holds one record: {next(iter(members))}")


def _shown(value) -> str:
    return value if isinstance(value, str) else ""  # a missing value, or a row with none (prior, total)


@click.command("identity-review")
@click.option("--entity", help="The entity (default: the only one that declares a model).")
@click.option("--accept", nargs=2, metavar="REF REF", help="These two records are one: join them from the next run.")
@click.option("--reject", nargs=2, metavar="REF REF", help="These two are different: never link them.")
@click.option("--by", default=lambda: os.environ.get("USER") or "steward", show_default="$USER",
              help="Who decided, kept with the decision.")
@click.option("--limit", default=50, show_default=True, help="Pairs to list.")
def identity_review(entity: str | None, accept: tuple[str, str] | None, reject: tuple[str, str] | None, by: str,
                    limit: int) -> None:
    """List the pairs in the scored matcher's review band that nobody has decided on, or decide one: a decision is
    stored in the warehouse and applied by every golden run from the next one, full rebuilds included."""
    from rich.table import Table

    from sync_pipelines.cli import _stack_or_exit, console
    from sync_pipelines.pipeline.golden import decide, review_pairs
    from sync_pipelines.resolve import record_refs
    from sync_pipelines.warehouse import Warehouse

    stack = _stack_or_exit(None)
    entity = _entity_with_model(stack, entity)
    warehouse = Warehouse(stack, stack.warehouse.url)
    if accept and reject:
        console.print("[red]give --accept or --reject, not both[/red]")
        sys.exit(2)
    if accept or reject:
        decision, (left, right) = ("accept", accept) if accept else ("reject", reject)
        staged = _staged(stack, warehouse, entity)
        refs = set(record_refs(staged))
        unknown = [ref for ref in (left, right) if ref not in refs]
        if unknown:
            console.print(f"[red]no staged {entity} record {', '.join(map(repr, unknown))}; a ref is "
                          "tool:source_id[/red]")
            sys.exit(2)
        decide(warehouse, entity, decision, left, right, by)
        console.print(f"{decision}ed {left} and {right} ({entity}, by {by}): the next sync applies it")
        return
    pending = review_pairs(warehouse, entity)
    if pending.empty:
        console.print(f"no {entity} pairs wait for review")
        return
    view = Table("left", "right", "match probability", "weight", title=f"{entity}: {len(pending)} pairs to review")
    for row in pending.head(limit).itertuples():
        view.add_row(row.left_ref, row.right_ref, f"{row.probability:.4f}", f"{row.weight:+.2f}")
    console.print(view)
    console.print("decide with: sync-pipelines identity-review --accept REF REF (or --reject REF REF)")
