"""send_changes: what each record sent carries, and the ledger rows logged for the records the tool took."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from sync_pipelines.pipeline.writeback import LEDGER, send_changes
from sync_pipelines.stack import DEFAULT_STACK, load_stack
from sync_pipelines.warehouse import Warehouse

WRITTEN_AT = datetime(2026, 12, 2, tzinfo=timezone.utc)


class Recording:
    """A connector that keeps what it is sent and refuses the records named in ``refused``."""

    def __init__(self, refused: set[str] = frozenset()) -> None:
        self.records: list[dict] = []
        self.refused = refused

    def write(self, stream: str, records: list[dict], mode: str, key: str) -> list[dict]:
        self.records += records
        return [{"ok": r[key] not in self.refused, "id": r[key], "created": False, "error": "refused"}
                for r in records]


def test_a_change_to_one_part_of_a_full_name_is_sent_with_the_part_the_tool_holds(tmp_path):
    stack = load_stack(DEFAULT_STACK)
    warehouse = Warehouse(stack, f"sqlite:///{tmp_path / 'warehouse.db'}")
    dest = next(d for d in stack.destinations if d.tool == "zendesk")
    warehouse.land("zendesk", "users", pd.DataFrame({
        "_source": "zendesk", "_source_stream": "users", "_source_id": ["1", "2", "3"],
        "_updated_at": WRITTEN_AT, "_extracted_at": WRITTEN_AT, "_deleted": False, "_raw": "{}",
        "email": ["ada@x.io", "mary@x.io", "alan@x.io"], "first_name": ["Ada", "Mary", None],
        "last_name": ["Lovelace", "Ann Shelley", "Turing"], "phone": None}))
    todo = pd.DataFrame({"entity_id": ["e1", "e2", "e3", "e4"], "source_id": ["1", "2", "3", "4"], "changes": [
        {"last_name": "Byron"},  # the first name is the tool's
        {"first_name": "Mary", "last_name": "Shelley", "phone": "+14155550101"},  # the whole name is sent
        {"email": "turing@x.io"},  # the name is not touched
        {"first_name": "Grace"},  # a record the landing table does not hold: only what changed
    ]})
    logged = []

    def ledger_rows(positions, written_at):
        logged.extend(positions)
        return pd.DataFrame({"source_id": todo["source_id"][positions], "entity_id": todo["entity_id"][positions],
                             "field": "name", "value": "x", "before": None, "origin_changed_at": written_at})

    connector = Recording(refused={"3"})
    written, failed, errors, created = send_changes(stack, warehouse, connector, dest, todo, WRITTEN_AT, "run-1", ledger_rows)
    assert connector.records == [{"id": "1", "name": "Ada Byron"},
                                 {"id": "2", "name": "Mary Shelley", "phone": "+14155550101"},
                                 {"id": "3", "email": "turing@x.io"}, {"id": "4", "name": "Grace"}]
    assert (written, failed, errors, logged, created) == (3, 1, ["3: refused"], [0, 1, 3], [])
    assert sorted(warehouse.read_table(LEDGER)["source_id"]) == ["1", "2", "4"]
