import json

import numpy as np
import pandas as pd
import pytest

from sync_pipelines.benchmarks.matching import MODEL, USER_RULES, evaluate, generate
from sync_pipelines.core import scoring
from sync_pipelines.core.resolve import resolve_entities

PEOPLE = pd.DataFrame({
    "first_name": ["Ada", "ada", "Grace", "Grace", "Okonkwo", "Chidi", "Ada", "Alan"],
    "last_name": ["Smith", "Smith", "Smith", "Smith", "Okonkwo", "Okonkwo", "Smith", "Turing"],
    "email": ["ada@x.io", "ADA@x.io ", None, "grace@y.io", "o@z.io", None, "other@w.io", "alan@t.io"],
    "birth_date": ["1990-01-02", "1990-01-02", "1985-05-05", "1985-05-05", "1970-03-03", "1970-03-03", "1960-07-07",
                   "1912-06-23"],
})
SIMPLE = {
    "comparisons": [
        {"field": "first_name", "levels": ["exact", {"jaro_winkler": 0.9}], "term_frequency": True},
        {"field": "last_name", "levels": ["exact", {"jaro_winkler": 0.9}], "term_frequency": True},
        {"field": "email", "levels": ["exact"]},
        {"field": "birth_date", "levels": ["exact", {"within_days": 31}]},
    ],
    "blocking": [["last_name"], ["email"]],
}


def _values(frame=PEOPLE, spec=SIMPLE):
    model = scoring.MatchModel.from_spec(spec)
    return model, scoring.field_values(frame, model)


def test_levels_take_the_first_that_holds_and_missing_is_no_evidence():
    model, values = _values()
    observed = scoring.levels(model, values, np.array([0, 0, 2]), np.array([1, 6, 3]))
    # Ada/ada: first exact, last exact, email exact after casefold and trim, date exact
    assert observed[0].tolist() == [0, 0, 0, 0]
    # Ada Smith 1990 vs Ada Smith 1960: other email, dates 30 years apart: "different" (the level after the last)
    assert observed[1].tolist() == [0, 0, 1, 2]
    # Grace without an email: missing (-1)
    assert observed[2].tolist() == [0, 0, -1, 0]


def test_blocking_unites_the_keys_pairs_and_counts_what_a_too_large_block_leaves_out():
    model, values = _values()
    blocked = scoring.block(model, values)
    pairs = set(zip(blocked.left.tolist(), blocked.right.tolist()))
    smiths = [0, 1, 2, 3, 6]
    assert {(a, b) for a in smiths for b in smiths if a < b} | {(4, 5)} == pairs
    tight = scoring.MatchModel.from_spec({**SIMPLE, "blocking": [["last_name"]], "max_block_size": 3})
    left_out = scoring.block(tight, values)
    [skipped] = left_out.skipped
    assert skipped == {"blocking": "last_name", "size": 5, "split_by": [], "records_not_compared": 5,
                       "pairs_not_compared": 10, "example": skipped["example"]}
    assert PEOPLE["last_name"].iloc[skipped["example"]] == "Smith"  # a record of the block, to show
    assert left_out.uncompared_pairs == 10 and len(left_out.left) == 1  # only the Okonkwo pair
    # a further key splits the block instead: the Smiths by email, then nothing is left out
    split = scoring.MatchModel.from_spec({**SIMPLE, "blocking": [["last_name"], ["birth_date"]],
                                          "max_block_size": 3})
    by_parts = scoring.block(split, values)
    assert by_parts.skipped == []
    assert [(s["blocking"], s["split_by"], s["records_not_compared"]) for s in by_parts.split] == [
        ("last_name", ["birth_date"], 0)]
    assert by_parts.uncompared_pairs == by_parts.split[0]["pairs_not_compared"] > 0


def test_a_shared_common_value_weighs_less_than_a_shared_rare_one():
    frame, _ = generate(3000, seed=3)
    model = scoring.MatchModel.from_spec(MODEL)
    values = scoring.field_values(frame, model)
    params = scoring.estimate(model, values)
    last = values["last_name"]
    counts = np.bincount(last.codes[last.codes >= 0])
    common, rare = np.flatnonzero(counts == counts.max())[0], np.flatnonzero(counts == 2)[0]
    rows = {code: np.flatnonzero(last.codes == code)[:2] for code in (common, rare)}
    c = [comp.field for comp in model.comparisons].index("last_name")
    weight = {code: scoring.pair_weights(model, params, values, rows[code][:1], rows[code][1:])[0, c]
              for code in rows}
    assert weight[rare] > weight[common] > 0


def test_estimated_parameters_separate_matches_from_non_matches():
    frame, _ = generate(3000, seed=5)
    model = scoring.MatchModel.from_spec(MODEL)
    params = scoring.estimate(model, scoring.field_values(frame, model))
    for comparison, m, u, estimated in zip(model.comparisons, params.m, params.u, params.estimated):
        assert estimated, comparison.field
        assert m[0] > 0.5 and u[0] < 0.1, comparison.field  # an exact agreement is evidence of a match
        assert m[-1] < u[-1], comparison.field  # a disagreement is evidence against
    assert 0 < params.prior < 0.01


def test_parameters_read_back_weigh_pairs_as_trained_even_on_part_of_the_records():
    frame, _ = generate(3000, seed=5)
    model = scoring.MatchModel.from_spec(MODEL)
    values = scoring.field_values(frame, model)
    params = scoring.estimate(model, values)
    again = scoring.Parameters.from_dict(model, json.loads(json.dumps(params.as_dict(model))))
    part = frame.iloc[:300].reset_index(drop=True)
    part_values = scoring.field_values(part, model)
    left, right = np.arange(0, 150), np.arange(150, 300)
    # the weights on a part use the trained term frequencies, not the part's own
    whole_rows = scoring.field_values(frame, model)
    assert np.allclose(scoring.match_weights(model, again, part_values, left, right),
                       scoring.match_weights(model, params, whole_rows, left, right))
    other = scoring.MatchModel.from_spec({**MODEL, "comparisons": MODEL["comparisons"][:2], "correlated": []})
    with pytest.raises(ValueError, match="train again"):
        scoring.Parameters.from_dict(other, params.as_dict(model))


def test_explain_shows_weights_that_add_up_to_the_score_used():
    frame, truth = generate(3000, seed=5)
    model = scoring.MatchModel.from_spec(MODEL)
    values = scoring.field_values(frame, model)
    params = scoring.estimate(model, values)
    scored = scoring.score(model, params, values)
    same = truth.to_numpy()[scored.left] == truth.to_numpy()[scored.right]
    for k in (np.flatnonzero(same)[0], np.flatnonzero(~same)[0]):
        i, j = int(scored.left[k]), int(scored.right[k])
        table = scoring.explain(model, params, values, i, j)
        assert table["weight"].iloc[:-1].sum() == pytest.approx(table["weight"].iloc[-1])
        assert table["weight"].iloc[-1] == pytest.approx(scored.weight[k])
        assert "| total |" in scoring.waterfall_markdown(table)


def test_the_model_beats_the_rules_a_user_writes_on_noisy_people():
    report = evaluate(5000, seed=11)
    model, rules = report["model"], report["rules"]
    assert model["precision"] >= 0.99 and model["f1"] > rules["f1"]
    assert report["uncompared_pairs"] == 0


def test_the_generator_is_deterministic_and_spreads_noise():
    first, truth = generate(2000, seed=1)
    again, _ = generate(2000, seed=1)
    pd.testing.assert_frame_equal(first, again)
    assert truth.nunique() < len(first)  # people with several records
    assert first["email"].isna().mean() > 0.05 and first["phone"].isna().mean() > 0.05
    clusters = resolve_entities(first, USER_RULES)
    assert clusters.nunique() > truth.nunique()  # the simple rules miss some: the noise is real


@pytest.mark.parametrize("change, message", [
    ({"comparisons": [{"field": "name", "levels": ["fuzzy"]}]}, "model.comparisons[0].levels[0]: expected exact"),
    ({"comparisons": [{"field": "name", "levels": [{"fuzzy": 0.9}]}]}, "unknown level kind 'fuzzy'"),
    ({"comparisons": [{"field": "name", "levels": ["exact", {"jaro_winkler": 0.8}, {"jaro_winkler": 0.9}]}]},
     "model.comparisons[0].levels[2]: thresholds out of order"),
    ({"comparisons": [{"field": "name", "levels": [{"jaro_winkler": 1.5}]}]}, "similarity threshold in (0, 1]"),
    ({"comparisons": [{"field": "name", "levels": [{"jaro_winkler": 0.9}], "term_frequency": True}]},
     "model.comparisons[0].term_frequency: adjusts an exact level"),
    ({"match_probability": 0.5, "review_probability": 0.9}, "model.review_probability: 0.9 is above"),
    ({"blocking": []}, "model.blocking: at least one blocking key"),
    ({"weights": {}}, "unknown key(s) ['weights']"),
])
def test_a_bad_model_is_refused_with_its_key_path(change, message):
    with pytest.raises(scoring.SpecError) as error:
        scoring.MatchModel.from_spec({**SIMPLE, **change})
    assert message in str(error.value)


def test_a_steward_s_decisions_join_or_keep_apart_whatever_the_rules_say():
    records = pd.DataFrame({
        "_source": ["crm", "crm", "crm", "desk"],
        "_source_id": ["1", "2", "3", "9"],
        "email": ["team@x.io", "team@x.io", "team@x.io", "solo@y.io"],
        "last_name": ["Ng", "Ng", "Ng", "Park"],
    })
    rules = {"rules": [{"name": "same_email", "conditions": [{"field": "email", "method": "exact"}]}]}
    plain = resolve_entities(records, rules)
    assert plain.iloc[0] == plain.iloc[1] == plain.iloc[2] != plain.iloc[3]
    decided = resolve_entities(records, rules, decisions=[("reject", "crm:1", "crm:2"), ("accept", "crm:3", "desk:9")])
    assert decided.iloc[0] != decided.iloc[1]  # rejected: not even through crm:3, which matches both
    assert decided.iloc[2] == decided.iloc[3]  # accepted, though no rule matches them
    with pytest.raises(ValueError, match="use accept or reject"):
        resolve_entities(records, rules, decisions=[("maybe", "crm:1", "crm:2")])
