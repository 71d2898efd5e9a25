"""Benchmark survivorship on synthetic contacts: records per second and peak memory at 100k and 1M records.

Run: ``python -m sync_pipelines.core.bench_survive [sizes...]``. Timing is the best of a few runs (the machine is
shared); memory is measured in a separate run, because tracemalloc slows down code that allocates many strings.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
import pandas as pd

from sync_pipelines.core.survive import survivorship

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


def measure(size: int) -> None:
    records, clusters, field_times = synthetic_contacts(size)
    decided_at = pd.Timestamp("2026-10-01", tz="UTC")
    seconds = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = survivorship(records, clusters, RULES, field_times=field_times, decided_at=decided_at)
        seconds = min(seconds, time.perf_counter() - started)

    tracemalloc.start()
    survivorship(records, clusters, RULES, field_times=field_times, decided_at=decided_at)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    input_mb = (records.memory_usage(deep=True).sum() + field_times.memory_usage(deep=True).sum()) / 2**20
    print(
        f"{size:>9,} records  {seconds:6.2f} s  {size / seconds:>10,.0f} records/s  "
        f"peak {peak / 2**20:7.0f} MiB above input ({input_mb:,.0f} MiB)  "
        f"golden {len(result.golden):,}  provenance {len(result.provenance):,}  conflicts {len(result.conflicts):,}"
    )


def main(argv: list[str]) -> None:
    for size in [int(arg) for arg in argv] or [100_000, 1_000_000]:
        measure(size)


if __name__ == "__main__":
    main(sys.argv[1:])
