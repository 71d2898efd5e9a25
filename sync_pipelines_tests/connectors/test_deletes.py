"""Deletes of the destinations that support on_delete: archive, against the sandbox: each record deleted the
vendor's way (HubSpot archived, Zendesk soft-deleted, Salesforce in the recycle bin); a record the tool no longer
has (404) is done, not a failure that would hold the write-back's watermark for ever."""

from __future__ import annotations

import pytest

from sync_pipelines_tests.connectors.test_sandbox_tools import IS_DELETED, open_tool, sandbox, truth_ids  # noqa: F401


@pytest.mark.parametrize("tool, stream", [("hubspot", "contacts"), ("zendesk", "users"), ("salesforce", "Contact")])
def test_delete_removes_each_record_the_vendor_way_and_one_already_gone_is_done(sandbox, tool, stream):  # noqa: F811
    victim = sorted(truth_ids(sandbox, tool, stream, live_only=True))[0]
    connector = open_tool(sandbox, tool)
    gone, unknown = connector.delete(stream, [victim, "999999999"])
    assert gone["ok"] and unknown["ok"] and not unknown["error"]
    assert victim not in truth_ids(sandbox, tool, stream, live_only=True)
    [record] = [r for r in connector.read(stream) if str(r.get("Id", r.get("id"))) == victim]
    assert IS_DELETED[tool](record)  # still read, marked deleted: the next extraction lands the deletion
