"""Entity resolution: which records, from any tool, are the same entity. The public, stable contract.

`resolve_entities(records, rules, crosswalk=None, *, max_block_size=5000) -> pd.Series`

- `records`: a DataFrame with `_source` (tool name) and `_source_id` columns plus the fields the rules name.
  A record's ref is `"{_source}:{_source_id}"` (both compared as text); rows lacking either are a ValueError.
- `rules`: one entity's identity section of the stack file, as the plain dict or any object with the same
  attributes (e.g. the pydantic model): `rules` (list of `{name, conditions: [{field, method, threshold}],
  blocking: [keys]}`), `max_cluster_size` (default 12), `manual: {merge: [[ref, ...]], split: [[ref, ...]]}`.
- returns a Series of entity ids (strings) aligned with `records.index`, named `entity_id`; an empty frame
  gives an empty Series. Row order does not change the result.

Matching. Two records are the same entity if ANY rule holds; a rule holds if ALL its conditions hold. A
condition compares one field after casefolding, trimming and collapsing whitespace (missing or empty values
never match): `exact`, or at least `threshold` (0..1, within 1e-6) by `jaro_winkler`, `levenshtein`
(1 - edit distance / longer length) or `token_sort` (token-sort ratio / 100); `equal_or_missing` finds no pair
itself but vetoes one whose two values are both present and differ (a name match between records of different
domains; a rule needs another condition), and the chain guard takes any difference in it for a contradiction. A
rule naming a field the records lack is a ValueError naming the rule and the field. Two records with the same ref
are always one entity. A spec with no rules makes each record (each ref) its own entity.

Blocking. A rule with fuzzy conditions only compares records that share a blocking key and all of the rule's
exact fields. A key is a column, or `<field>_initial` (first character), `<field>_prefix` (first 3 characters),
`<field>_soundex` (American Soundex), `<field>_domain` (the part after "@"). A fuzzy rule with neither keys nor
exact fields blocks on `<first fuzzy field>_prefix`. A block larger than `max_block_size` records is split by the
rule's other keys, then by the initial and the prefix of each fuzzy field the key does not read; parts still too
large are not compared by that rule. Exact-only rules group on their fields; a value held by more than
`max_cluster_size` refs (a team mailbox, a switchboard) identifies nobody and links nothing. Split blocks are
listed in the report (`split`), blocks with records left out are logged as warnings and listed (`skipped`).

Identity persists (crosswalk stickiness). With a `crosswalk`, records whose refs shared an entity id on the
last run stay linked even when no rule links them any more (a customer changed their email in one tool, and
that tool's record kept its id): a previous co-membership counts as a link like a rule match. It does not
hold when a `manual.split` names either record, and the chain guard below may break it.

Clusters and the chain guard. Clusters are the connected components of matched pairs and crosswalk links.
A component is rebuilt when it holds more than `max_cluster_size` refs, or when two members that no rule
matched directly (a crosswalk link is no direct match) are clearly different: both have a value for a field
some rule compares fuzzily, scoring below the lowest threshold used for it (different emails or phones are
no contradiction, as one person often has several; a name changed beyond the threshold is one). The rebuild takes links
strongest first (rules earlier in the list are stronger, crosswalk links weaker than every rule, ties by
ref) and joins two partial clusters only when the result stays within `max_cluster_size` and holds no
clearly different pair. So a stale link (the record now describes someone else) breaks, while the other
members of that old entity stay together. Precision comes before recall: a false merge corrupts two
customers.

Manual overrides. `manual.split` refs stand alone (rules never link them; same-ref rows stay together);
`manual.merge` groups join the clusters of the refs they name, whatever the size. A ref in both is a
ValueError; refs not among the records are logged and listed in the report. A merge is remembered by the
crosswalk: removing it from the stack file does not separate the records; split one of them instead.

Stable ids. `crosswalk` (columns `entity_id, _source, _source_id`, e.g. from `build_crosswalk` on the last
run) lets clusters keep their ids: each earlier id goes to the cluster holding most of its refs (ties: the
cluster with the smallest ref); a cluster winning several keeps the smallest and retires the others. A cluster
with no earlier id gets `ent_` + a hash of its smallest ref, so reruns give the same ids and new records do
not renumber other clusters.

Report. `result.attrs["resolution"]` holds `merged_ids` ({retired id: surviving id}), `split_ids` ({earlier
id: [ids of clusters that left it]}), `unknown_refs`, `skipped` and `split` (rule, key, size, example ref, the keys that split it, the records and
pairs not compared; `skipped` also the reason),
`guarded_components` (how many components the chain guard rebuilt) and `sticky_links` (how many records are
in their entity only through the crosswalk: per entity, the records outside its largest part that rules hold
together, i.e. those that would have split off without the crosswalk; 0 without one).

`build_crosswalk(records, clusters)` gives the crosswalk rows to store; `pairwise_precision_recall(predicted,
truth)` scores clusters against true labels from contingency counts.

Incremental runs. `block_neighbors(records, touched, rules)` marks the records a rule links to a touched record
(the same exact values, or a fuzzy match within their candidate group); `touched` may be one mask or a mask per
field, so each rule starts only from records whose fields it reads changed.
Re-resolving the touched records, these neighbours and every member of their entities, with the crosswalk,
gives the clusters a full run would give those records, and leaves every other entity as it is.
"""

from sync_pipelines.core.resolve import (
    CROSSWALK_COLUMNS,
    DEFAULT_MAX_BLOCK_SIZE,
    DEFAULT_MAX_CLUSTER_SIZE,
    ENTITY_ID,
    METHODS,
    REPORT_ATTR,
    IdentityRules,
    block_neighbors,
    build_crosswalk,
    entity_id_for,
    explain_members,
    explain_pair,
    normalize_values,
    pairwise_precision_recall,
    record_refs,
    resolve_entities,
    train_model,
)
from sync_pipelines.core.keys import soundex

__all__ = [
    "CROSSWALK_COLUMNS",
    "DEFAULT_MAX_BLOCK_SIZE",
    "DEFAULT_MAX_CLUSTER_SIZE",
    "ENTITY_ID",
    "METHODS",
    "REPORT_ATTR",
    "IdentityRules",
    "block_neighbors",
    "build_crosswalk",
    "entity_id_for",
    "explain_members",
    "explain_pair",
    "normalize_values",
    "pairwise_precision_recall",
    "record_refs",
    "resolve_entities",
    "soundex",
    "train_model",
]
