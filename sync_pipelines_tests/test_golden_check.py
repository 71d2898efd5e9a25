"""The blocking check on golden records reads only the columns its expectations need, conditions included."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import yaml

from sync_pipelines.pipeline.golden import check_golden
from sync_pipelines.stack import DEFAULT_STACK, load_stack
from sync_pipelines.warehouse import Warehouse


def test_a_condition_on_another_golden_column_is_read_and_only_live_records_are_checked(tmp_path):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    # the phone is read by the condition alone
    raw["quality"]["contacts"]["expectations"] = [{"expect": "not_null", "column": "email", "when": "phone.isnull()"}]
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    stack = load_stack(tmp_path / "stack.yaml")
    warehouse = Warehouse(stack, f"sqlite:///{tmp_path / 'warehouse.db'}")
    now = datetime(2026, 11, 2, tzinfo=timezone.utc)
    warehouse.replace("golden_contacts", pd.DataFrame({
        "entity_id": ["e1", "e2", "e3", "e4"],
        "email": ["ada@example.com", None, None, None],
        "phone": [None, "+14155550101", None, None],
        "last_name": ["Lovelace", "Hopper", "Nobody", "Gone"],
        "_member_count": [1, 1, 1, 1],
        "_updated_at": [now] * 4,
        "_deleted": [False, False, False, True],
        "_deleted_at": [pd.NaT, pd.NaT, pd.NaT, now],
    }))
    warehouse.replace("staged_contacts", pd.DataFrame({"_source": ["crm"] * 3, "_source_id": ["1", "2", "3"]}))

    verdict = check_golden(stack, warehouse, "contacts", now=now)

    # e3 has neither an email nor a phone; e4 has neither but is deleted, so it reaches no tool
    assert warehouse.read_table("golden_failures_contacts")["entity_id"].tolist() == ["e3"]
    assert verdict.failure_rate == 1 / 3 and verdict.report.row_count == 3
    [result] = verdict.report.results
    assert (result.error, result.element_count, result.unexpected_count) == (None, 2, 1)
