"""A sandbox, a warehouse and the nightly job wired to both: what the whole-sync tests drive (fixtures in conftest)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from sync_pipelines.definitions import build_definitions
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse

TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")


class Sync:
    """A sandbox, a warehouse and the nightly job wired to both."""

    def __init__(self, box, url: str):
        self.box, self.url = box, url
        self.stack = load_stack()
        self.job = build_definitions(self.stack).resolve_job_def("nightly_sync")
        self.warehouse = Warehouse(self.stack, url)

    def run(self):
        # today as the run starts, not as the module was imported: a suite running past midnight would otherwise
        # sync yesterday's window, which leaves out the edits a test just made
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        result = self.job.execute_in_process(partition_key=today, raise_on_error=False)
        # records written per write-back asset ("salesforce/companies_writeback"): a tool may have several
        written = {"/".join(e.asset_key.path): e.materialization.metadata["written"].value
                   for e in result.get_asset_materialization_events() if "written" in e.materialization.metadata}
        return result, written

    def write_backs(self, written: int = 0) -> dict[str, int]:
        """Every write-back asset, as `run` names it, with ``written`` records each."""
        return {f"{d.tool}/{d.entity}_writeback": written for d in self.stack.destinations}

    def truth_records(self) -> pd.DataFrame:
        frames = []
        for tool, _, stream, spec in self.stack.streams():
            if spec.entity == "contacts":
                rows = pd.DataFrame(self.box.truth("records", tool=tool, stream=stream))
                frames.append(rows.assign(_source=tool, _source_stream=stream, _source_id=rows["id"].astype(str)))
        return pd.concat(frames, ignore_index=True)


@contextmanager
def synced_sandbox(tmp_path: Path, monkeypatch, url: str):
    with running_sandbox(csv_dir=tmp_path / "csv") as box:
        for key, value in {**sandbox_env(box.url, tmp_path / "csv"), "SYNC_WAREHOUSE_URL": url}.items():
            monkeypatch.setenv(key, value)
        yield Sync(box, url)
