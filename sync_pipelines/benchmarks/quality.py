"""Great Expectations validation and quarantine split with the sandbox's contact rules, at growing sizes:
``python -m sync_pipelines.benchmarks.quality``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sync_pipelines.core.quality import split_quarantine, validate


def _sandbox_contact_expectations() -> list[dict[str, Any]]:
    import yaml

    stack = yaml.safe_load((Path(__file__).resolve().parents[1] / "stacks" / "sandbox.yaml").read_text())
    return stack["quality"]["contacts"]["expectations"]


def _sandbox_like_contacts(rows: int, seed: int = 7) -> pd.DataFrame:
    """Contacts with about 1% missing and 2% malformed emails and 3% malformed phones."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows).astype(str)
    emails = np.char.add(np.char.add("user", ids), "@example.com").astype(object)
    emails[rng.random(rows) < 0.02] = "not-an-email"
    emails[rng.random(rows) < 0.01] = None
    phones = np.char.add("+1555", np.char.zfill(ids, 7)).astype(object)
    phones[rng.random(rows) < 0.03] = "555-0101"
    tools = np.array(["salesforce", "hubspot", "zendesk", "stripe", "legacy_erp"])
    return pd.DataFrame(
        {
            "_source": tools[rng.integers(0, len(tools), rows)],
            "_source_id": np.char.add("id", ids),
            "email": emails,
            "phone": phones,
            "first_name": "Ada",
            "last_name": "Lovelace",
        }
    )


def bench(sizes: Sequence[int] = (10_000, 100_000, 1_000_000)) -> list[dict[str, float]]:
    """Time validate() + split_quarantine() with the sandbox contact rules; prints and returns figures."""
    expectations = _sandbox_contact_expectations()
    validate(_sandbox_like_contacts(100), "contacts", expectations)  # warm up GX (import, context)
    figures = []
    for rows in sizes:
        df = _sandbox_like_contacts(rows)
        started = time.perf_counter()
        report = validate(df, "contacts", expectations)
        validated = time.perf_counter()
        clean, quarantined = split_quarantine(df, report)
        finished = time.perf_counter()
        figures.append(
            {
                "rows": rows,
                "validate_s": round(validated - started, 2),
                "split_s": round(finished - validated, 3),
                "quarantined": len(quarantined),
            }
        )
        print(
            f"{rows:>9,} rows: validate {validated - started:6.2f} s, split {finished - validated:5.3f} s, "
            f"{len(quarantined):,} quarantined, {len(clean):,} clean"
        )
    return figures


if __name__ == "__main__":
    bench()
