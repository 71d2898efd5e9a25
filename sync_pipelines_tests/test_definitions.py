import dagster as dg

from sync_pipelines.definitions import defs, stack


def test_every_asset_has_owner_group_kinds_and_description():
    graph = defs.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert len(keys) >= len(stack.streams())
    for key in keys:
        spec = graph.get(key)
        assert spec.owners, key
        assert spec.group_name, key
        assert spec.kinds, key
        assert spec.description, key


def test_extraction_assets_group_by_tool_and_use_a_pool_per_tool_api():
    for tool, _, stream, _ in stack.streams():
        spec = defs.resolve_asset_graph().get(dg.AssetKey([tool, stream]))
        assert spec.group_name == f"extract_{tool}"
        assert spec.owners == [stack.tools[tool].owner]


# Where each group sits in the data flow: every dependency goes from a group to itself or to a later one.
FLOW = {"core": 1, "writeback": 2, "actions": 2, **{f"extract_{tool}": 0 for tool in stack.tools}}
# Dagster 1.13's asset graph shows a node's label (the key's last part) whole up to this many characters; zoomed
# out it cuts labels over 18.
NODE_LABEL_WIDTH = 31


def test_groups_read_as_data_flow_from_each_tool_s_extraction_to_core_then_write_back_and_actions():
    graph = defs.resolve_asset_graph()
    groups = {key: graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(groups.values()) == {f"extract_{tool}" for tool, _, _, _ in stack.streams()} | {
        "core", "writeback", "actions"}
    for key, group in groups.items():
        for parent in graph.get(key).parent_keys:
            assert FLOW[groups[parent]] <= FLOW[group], f"{parent.to_user_string()} ({groups[parent]}) feeds " \
                                                        f"{key.to_user_string()} ({group})"


def test_every_asset_label_fits_a_graph_node():
    labels = {key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert [label for label in labels if len(label) > NODE_LABEL_WIDTH] == []


def test_nightly_job_is_defined():
    assert defs.resolve_job_def("nightly_sync").partitions_def is not None


def test_every_extraction_has_a_freshness_policy_of_a_night_plus_slack():
    from datetime import timedelta

    for tool, _, stream, _ in stack.streams():
        policy = defs.resolve_asset_graph().get(dg.AssetKey([tool, stream])).freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), (tool, stream, policy)
        assert policy.fail_window.to_timedelta() == timedelta(hours=26), (tool, stream)


def test_building_the_definitions_warns_about_no_beta_superseded_or_deprecated_api():
    import warnings

    from sync_pipelines.definitions import build_definitions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_definitions(stack).resolve_asset_graph()
    dagster_warnings = [w for w in caught if issubclass(w.category, (dg.BetaWarning, dg.PreviewWarning,
                                                                     dg.SupersessionWarning, DeprecationWarning))]
    assert not dagster_warnings, [f"{w.category.__name__}: {w.message}" for w in dagster_warnings]


def test_an_action_the_project_cannot_perform_fails_when_the_stack_loads(tmp_path):
    import pytest
    import yaml

    from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack

    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["actions"].append({"name": "ticket_for_churn", "when": {"entity": "contacts", "field": "lifecycle_stage",
                                                                 "becomes": "churned"},
                           "create": {"tool": "zendesk", "stream": "tickets"}})
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(StackError, match=rf"actions\[{len(raw['actions']) - 1}\]\.create\.stream: unknown stream "
                                         "of tool 'zendesk' to create records in: 'tickets'; allowed: users"):
        load_stack(path)


def test_the_warehouse_url_and_its_password_stay_out_of_dagster_snapshots(monkeypatch, tmp_path):
    """Resource config is stored in every run's snapshot and shown in the UI: the URL is read when a step runs."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from sync_pipelines.definitions import build_definitions
    from sync_pipelines.stack import load_stack

    monkeypatch.setenv("SYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path}/S3cretWarehousePw.db")
    built = build_definitions(load_stack())
    snapshot = serialize_value(RepositorySnap.from_def(built.get_repository_def()))
    assert "S3cretWarehousePw" not in snapshot
    assert "S3cretWarehousePw" in str(built.resources["sync"].warehouse.engine.url)  # yet the steps use it
