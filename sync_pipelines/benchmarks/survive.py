"""Benchmark survivorship on synthetic contacts: records per second and peak memory at 100k and 1M records.

Run: ``python -m sync_pipelines.benchmarks.survive [sizes...] [--pipeline] [--repeats N] [--no-tracemalloc]``.
Timing is the best of a few runs (the machine is shared); memory is measured in a separate run, because tracemalloc
slows down code that allocates many strings. With ``--pipeline`` the inputs are as the golden step hands them over:
text entity ids (as ``resolve_entities`` makes them) and field times derived from the records by
``derive_field_change_times``, keyed by ``_source``/``_source_id``; that derivation is timed too.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd

from sync_pipelines.core.survive import derive_field_change_times, survivorship

TOOLS = np.array(["salesforce", "hubspot", "zendesk", "stripe", "legacy_erp"])
FIELDS = ["email", "first_name", "last_name", "phone", "company_name", "job_title", "lifecycle_stage"]
RULES = {
    "source_of_truth": "salesforce",
    "priority": list(TOOLS),
    "default_rule": "source_of_truth",
    "fields": {"email": "last_write_wins", "phone": "last_write_wins"},
}
RECORDS_PER_ENTITY = 2.5
EMPTY_RATE = 0.15
VARIANT_RATE = 0.1  # share of values that disagree with the entity's usual value
REPEATS = 3


def synthetic_contacts(size: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Records of ``size / 2.5`` people spread over five tools, with empties, disagreements and field times."""
    rng = np.random.default_rng(seed)
    entity = rng.integers(0, int(size / RECORDS_PER_ENTITY), size)
    entity_text = entity.astype(str)
    records = pd.DataFrame(index=pd.RangeIndex(size))
    for name in FIELDS:
        variant = np.where(rng.random(size) < VARIANT_RATE, "v", "")
        values = np.char.add(np.char.add(f"{name}-", entity_text), variant).astype(object)
        values[rng.random(size) < EMPTY_RATE] = None
        records[name] = values
    records["_source"] = TOOLS[rng.integers(0, len(TOOLS), size)]
    records["_source_id"] = np.char.add("rec", rng.permutation(size).astype(str)).astype(object)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    records["_updated_at"] = start + pd.to_timedelta(rng.integers(0, 86_400 * 270, size), unit="s")
    records["_deleted"] = rng.random(size) < 0.02
    field_times = pd.DataFrame({
        name: (records["_updated_at"] - pd.to_timedelta(rng.integers(0, 86_400 * 90, size), unit="s")).where(
            rng.random(size) < 0.7
        )
        for name in ["email", "phone"]
    })
    return records, pd.Series(entity, index=records.index), field_times


def as_pipeline(records: pd.DataFrame, clusters: pd.Series) -> pd.Series:
    """Entity ids as text in no particular order, like the hashes ``resolve_entities`` gives new entities."""
    scrambled = clusters.to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps: a bijection
    return pd.Series(np.char.add("ent_", np.char.zfill(np.char.mod("%x", scrambled), 16)), index=records.index,
                     dtype="str")


def survive(records: pd.DataFrame, clusters: pd.Series, field_times: pd.DataFrame | None, decided_at: pd.Timestamp):
    """Survivorship as the golden step runs it; without ``field_times``, they are derived from the records first."""
    if field_times is None:
        field_times = derive_field_change_times(None, records, FIELDS, decided_at)
    return survivorship(records, clusters, RULES, field_times=field_times, decided_at=decided_at)


def measure(size: int, pipeline: bool, repeats: int, trace: bool) -> None:
    records, clusters, field_times = synthetic_contacts(size)
    if pipeline:
        clusters, field_times = as_pipeline(records, clusters), None
    decided_at = pd.Timestamp("2026-10-01", tz="UTC")
    seconds = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = survive(records, clusters, field_times, decided_at)
        seconds = min(seconds, time.perf_counter() - started)

    memory = ""
    if trace:
        tracemalloc.start()
        survive(records, clusters, field_times, decided_at)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        input_mb = records.memory_usage(deep=True).sum() / 2**20
        if field_times is not None:
            input_mb += field_times.memory_usage(deep=True).sum() / 2**20
        memory = f"peak {peak / 2**20:7.0f} MiB above input ({input_mb:,.0f} MiB)  "
    print(
        f"{size:>9,} records  {seconds:6.2f} s  {size / seconds:>10,.0f} records/s  {memory}"
        f"golden {len(result.golden):,}  provenance {len(result.provenance):,}  conflicts {len(result.conflicts):,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100_000, 1_000_000], help="record counts to measure")
    parser.add_argument("--pipeline", action="store_true",
                        help="text entity ids and field times derived from the records (timed), as in the golden step")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs per size; the best counts")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the separate run that measures memory")
    args = parser.parse_args()
    for size in args.sizes:
        measure(size, args.pipeline, args.repeats, not args.no_tracemalloc)


if __name__ == "__main__":
    main()
