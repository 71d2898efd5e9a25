"""The scored matcher declared in the stack file (issue 15), on SQLite and PostgreSQL: trained on the first full
run, stored as a version, used by later runs (incremental ones too) without training again, and beside the rules;
a steward's decisions applied; bad sections refused at load with their key path."""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner

from sync_pipelines.cli import main
from sync_pipelines.pipeline.golden import PARAMETERS_TABLE, trained_parameters
from sync_pipelines.resolve import explain_members, explain_pair, record_refs
from sync_pipelines.sandbox.scoring import score
from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack
from sync_pipelines_tests.sandbox_sync import Sync

CONTACT_MODEL = {
    "comparisons": [
        {"field": "email", "levels": ["exact", {"jaro_winkler": 0.95}]},
        {"field": "first_name", "levels": ["exact", "given_name", {"jaro_winkler": 0.9}], "term_frequency": True},
        {"field": "last_name", "levels": ["exact", {"jaro_winkler": 0.92}], "term_frequency": True},
        {"field": "phone", "levels": ["exact"]},
        {"field": "company_name", "levels": ["exact", {"token_sort": 0.9}]},
    ],
    "blocking": [["email"], ["phone"], ["last_name_soundex", "first_name_prefix"]],
    "match_probability": 0.999,
    "review_probability": 0.5,
}


def _stack_file(tmp_path, change=None):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["identity"]["contacts"]["model"] = copy.deepcopy(CONTACT_MODEL)
    if change:
        change(raw)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _check(result, name):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def test_a_declared_model_is_trained_once_stored_and_used_by_later_runs(sync_on_each_warehouse, tmp_path,
                                                                        monkeypatch):
    sync = sync_on_each_warehouse
    monkeypatch.setenv("SYNC_STACK", str(_stack_file(tmp_path)))
    synced = Sync(sync.box, sync.url)
    result, _ = synced.run()
    assert result.success
    stored = synced.warehouse.read_table(PARAMETERS_TABLE)
    assert stored[["entity", "version"]].values.tolist() == [["contacts", 1]]
    review = _check(result, "golden_contacts_review")
    assert review.metadata["parameters_version"].value == 1
    assert review.metadata["matches"].value > 0 and review.metadata["candidate_pairs"].value > 0
    waterfall = review.metadata["likeliest_pair_waterfall"].value
    assert (waterfall == "none") == (review.metadata["review_pairs"].value == 0)
    assert waterfall == "none" or "| total |" in waterfall
    blocking = _check(result, "golden_contacts_blocking")
    assert blocking.passed == (blocking.metadata["blocks_not_compared"].value == 0)
    contacts, _ = score(synced.box, synced.stack, synced.warehouse, "contacts", "person", [])
    assert contacts.precision >= 0.99 and contacts.recall >= 0.95  # the rules and the model together

    assert synced.run()[0].success  # the tools' echo of the first write-back (a rebuild, with the stored version)
    # an edit: an incremental golden run, with the stored parameters (no second version)
    lead = synced.warehouse.read_table("stg_hubspot_contacts").query("not _deleted").iloc[0]
    synced.box.mutate("hubspot", "contacts", lead["_source_id"], {"jobtitle": "Chief Sampler"})
    second, _ = synced.run()
    assert second.success
    golden = next(e for e in second.get_asset_materialization_events()
                  if e.asset_key.path == ["golden_contacts"]).materialization.metadata
    assert golden["full_rebuild"].value is False, golden["why"].value
    assert synced.warehouse.read_table(PARAMETERS_TABLE)["version"].tolist() == [1]

    # explain a pair the run put together: the waterfall's rows add up to its total
    crosswalk = synced.warehouse.read_table("crosswalk_contacts")
    together = crosswalk[crosswalk["entity_id"].duplicated(keep=False)].sort_values("entity_id").head(2)
    refs = [f"{tool}:{source_id}" for tool, source_id in zip(together["_source"], together["_source_id"])]
    shown = CliRunner().invoke(main, ["explain", *refs])
    assert shown.exit_code == 0, shown.output
    assert "total" in shown.output and "parameters version 1" in shown.output
    waterfall = explain_pair(synced.warehouse.read_table("staged_contacts"), synced.stack.identity["contacts"],
                             trained_parameters(synced.stack, synced.warehouse, "contacts").parameters, *refs)
    assert waterfall["weight"].iloc[:-1].sum() == pytest.approx(waterfall["weight"].iloc[-1])
    unknown = CliRunner().invoke(main, ["explain", refs[0], "hubspot:nobody"])
    assert unknown.exit_code == 2 and "no staged record 'hubspot:nobody'" in unknown.output

    # a steward keeps the explained pair apart and joins two records of different entities
    listed = CliRunner().invoke(main, ["identity-review"])
    assert listed.exit_code == 0 and ("pairs to review" in listed.output or "wait for review" in listed.output)
    apart = crosswalk.drop_duplicates("entity_id").head(2)
    joined = [f"{tool}:{source_id}" for tool, source_id in zip(apart["_source"], apart["_source_id"])]
    for decision, pair in (("--reject", refs), ("--accept", joined)):
        decided = CliRunner().invoke(main, ["identity-review", decision, *pair, "--by", "ada"])
        assert decided.exit_code == 0, decided.output
    bad = CliRunner().invoke(main, ["identity-review", "--accept", refs[0], "crm:nobody"])
    assert bad.exit_code == 2 and "no staged contacts record 'crm:nobody'" in bad.output

    def entity_of(ref):
        now = synced.warehouse.read_table("crosswalk_contacts")
        tool, source_id = ref.split(":", 1)
        return now[(now["_source"] == tool) & (now["_source_id"] == source_id)]["entity_id"].iloc[0]

    for rebuild in ("the decisions", "a new training"):
        if rebuild == "a new training":  # version 2; the next golden run rebuilds with it, the decisions kept
            trained = CliRunner().invoke(main, ["train-identity"])
            assert trained.exit_code == 0 and "parameters version 2" in trained.output, trained.output
        run, _ = synced.run()
        assert run.success
        golden = next(e for e in run.get_asset_materialization_events()
                      if e.asset_key.path == ["golden_contacts"]).materialization.metadata
        assert golden["full_rebuild"].value is True, rebuild
        assert entity_of(refs[0]) != entity_of(refs[1]), rebuild
        assert entity_of(joined[0]) == entity_of(joined[1]), rebuild
    assert _check(run, "golden_contacts_review").metadata["parameters_version"].value == 2

    # why a golden record's members are together, by a ref or by its golden id: one link fewer than its members,
    # each with its reason (every member is in the CLI's table)
    golden_id = entity_of(joined[0])
    now = synced.warehouse.read_table("crosswalk_contacts")
    members = {f"{t}:{i}" for t, i, e in zip(now["_source"], now["_source_id"], now["entity_id"]) if e == golden_id}
    staged = synced.warehouse.read_table("staged_contacts")
    links = explain_members(staged[record_refs(staged).isin(members)], synced.stack.identity["contacts"],
                            parameters=trained_parameters(synced.stack, synced.warehouse, "contacts").parameters,
                            decisions=[("accept", *joined), ("reject", *refs)])
    assert len(links) == len(members) - 1 and set(links["left"]) | set(links["right"]) == members
    assert "nothing links it" not in set(links["linked_by"])
    for wanted in (joined[1], golden_id):
        why = CliRunner().invoke(main, ["explain", wanted])
        assert why.exit_code == 0, why.output
        assert f"{golden_id}: {len(members)} record(s) together" in why.output
        assert all(ref in why.output for ref in members), why.output
    nobody = CliRunner().invoke(main, ["explain", "hubspot:nobody"])
    assert nobody.exit_code == 2 and "no golden record holds 'hubspot:nobody'" in nobody.output


@pytest.mark.parametrize("change, path, message", [
    (lambda r: r["identity"]["contacts"]["model"]["comparisons"][0].update(field="emial"),
     "identity.contacts.model.comparisons[0].field", "unknown field 'emial'"),
    (lambda r: r["identity"]["contacts"]["model"]["comparisons"][2].update(
        levels=["exact", {"jaro_winkler": 0.8}, {"jaro_winkler": 0.9}]),
     "identity.contacts.model.comparisons[2].levels[2]", "thresholds out of order"),
    (lambda r: r["identity"]["contacts"]["model"].update(blocking=[["surname_soundex"]]),
     "identity.contacts.model.blocking[0][0]", "unknown blocking key 'surname_soundex'"),
    (lambda r: r["identity"]["contacts"]["model"].update(review_probability=0.9999),
     "identity.contacts.model.review_probability", "above match_probability"),
])
def test_a_bad_model_section_is_refused_at_load_with_its_key_path(tmp_path, change, path, message):
    with pytest.raises(StackError) as error:
        load_stack(_stack_file(tmp_path, change))
    assert error.value.path == path and message in error.value.problem


def test_the_identity_commands_say_when_no_entity_declares_a_model(sync):
    for command in (["identity-review"], ["train-identity"], ["explain", "a:1", "b:2"]):
        out = CliRunner().invoke(main, command)
        assert out.exit_code == 2 and "no entity's identity declares a model" in out.output, command
