"""on_delete: archive with max_deletes_per_run (issue 12, item 4b): deleted golden records leave the tools."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipelines import pipeline
from sync_pipelines.pipeline.writeback import DeleteCapExceeded
from sync_pipelines.resources import SyncResource


def archived(sync) -> int:
    table = sync.box.state.world.table("hubspot", "contacts")
    with sync.box.state.lock:
        return int(table.deleted.sum())


def test_archive_deletes_the_records_of_deleted_golden_records_within_max_deletes_per_run(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    assert sync.run()[0].success
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    live = sync.warehouse.read_table("stg_hubspot_contacts")
    live = live.loc[~live["_deleted"].astype(bool), "_source_id"]
    linked = crosswalk[(crosswalk["_source"] == "hubspot") & crosswalk["_source_id"].isin(live)]
    gone = linked.drop_duplicates("entity_id").head(3)
    with sync.warehouse.engine.begin() as conn:  # what the golden step marks once every member is deleted
        conn.execute(sa.text("ALTER TABLE golden_contacts ADD COLUMN _deleted BOOLEAN DEFAULT FALSE"))
        conn.execute(sa.text("UPDATE golden_contacts SET _deleted = TRUE WHERE entity_id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)), {"ids": gone["entity_id"].tolist()})
    hubspot = next(d for d in sync.stack.destinations if d.tool == "hubspot")
    before = archived(sync)
    connector = SyncResource().connector("hubspot")
    capped = hubspot.model_copy(update={"on_delete": "archive", "max_deletes_per_run": 2})
    with pytest.raises(DeleteCapExceeded, match=r"hubspot contacts: 3 records .* max_deletes_per_run \(2\)"):
        pipeline.write_back(sync.stack, sync.warehouse, connector, capped)
    assert archived(sync) == before  # over the cap: nothing deleted
    outcome = pipeline.write_back(sync.stack, sync.warehouse, connector, capped.model_copy(
        update={"max_deletes_per_run": 3}))
    assert outcome.archived == 3 and archived(sync) == before + 3
    table = sync.box.state.world.table("hubspot", "contacts")
    assert all(table.deleted[table.row_of(i)] for i in gone["_source_id"])
