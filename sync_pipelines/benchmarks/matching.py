"""Evaluate matching on person records with noise spread over every field, against their truth: the rules a user
would write, and the scored matcher (``core/scoring``) with parameters estimated from the records alone.

    python -m sync_pipelines.benchmarks.matching --records 5000 50000

People get one to four records. Copies carry the noise real tools add: typos, OCR-like and phonetic spellings,
missing values, first and last names swapped, nicknames, day and month transposed, another email; and families
share a last name, a home phone and an address (different people the rules must keep apart). Splink runs on the same
records when it is installed (the ``bench`` extra), with comparisons and blocking like the model's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sync_pipelines.benchmarks.resolve import FIRST_NAMES, NICKNAMES, _invent_words, _typo, _zipf_choice
from sync_pipelines.core import scoring
from sync_pipelines.core.resolve import pairwise_precision_recall, resolve_entities

CITIES = ["springfield", "riverton", "fairview", "kingston", "georgetown", "salem", "madison", "clinton", "franklin",
          "greenville", "bristol", "dover", "oxford", "milton", "newport", "ashland", "burlington", "manchester"]
OCR = [("0", "o"), ("1", "l"), ("rn", "m"), ("5", "s"), ("cl", "d"), ("vv", "w")]
PHONETIC = [("ph", "f"), ("c", "k"), ("ie", "y"), ("ou", "u"), ("ck", "k"), ("th", "t"), ("ee", "i")]
FAMILY_SHARE = 0.12  # people living with another person of the sample: same last name and address
HOME_PHONE_SHARE = 0.5  # of those, the ones sharing a home phone too

# The rules a user writes first: a shared email, a shared phone with a similar last name, a similar name born the
# same day
USER_RULES = {"rules": [
    {"name": "same_email", "conditions": [{"field": "email", "method": "exact"}]},
    {"name": "same_phone_similar_last_name", "blocking": ["phone"], "conditions": [
        {"field": "phone", "method": "exact"}, {"field": "last_name", "method": "jaro_winkler", "threshold": 0.88}]},
    {"name": "similar_name_same_birth_date", "blocking": ["birth_date"], "conditions": [
        {"field": "birth_date", "method": "exact"},
        {"field": "last_name", "method": "jaro_winkler", "threshold": 0.9},
        {"field": "first_name", "method": "jaro_winkler", "threshold": 0.9}]},
]}
MODEL = {
    "comparisons": [
        {"field": "first_name", "levels": ["exact", "given_name", {"jaro_winkler": 0.92}, {"jaro_winkler": 0.8},
                                           {"swapped_with": "last_name"}],
         "term_frequency": True},
        {"field": "last_name", "levels": ["exact", {"jaro_winkler": 0.92}, {"jaro_winkler": 0.8}],
         "term_frequency": True},
        {"field": "birth_date", "levels": ["exact", {"levenshtein": 0.8}]},
        {"field": "email", "levels": ["exact", {"jaro_winkler": 0.9}]},
        {"field": "phone", "levels": ["exact", {"levenshtein": 0.8}]},
        {"field": "postcode", "levels": ["exact"]},
        {"field": "city", "levels": ["exact", {"jaro_winkler": 0.9}]},
    ],
    "blocking": [["email"], ["phone"], ["last_name_soundex", "birth_date"], ["first_name_soundex", "birth_date"],
                 ["postcode", "first_name_prefix"], ["birth_date", "postcode"]],
    "correlated": [["phone", "postcode", "city"]],  # a household's
    "match_probability": 0.99,
    "review_probability": 0.5,
}


def _swap(rng: np.random.Generator, text: str, table: list[tuple[str, str]]) -> str:
    hits = [(a, b) for a, b in table if a in text] + [(b, a) for a, b in table if b in text]
    if not hits:
        return text
    old, new = hits[int(rng.integers(len(hits)))]
    return text.replace(old, new, 1)


def _date_noise(rng: np.random.Generator, day: str) -> str:
    year, month, date = day.split("-")
    if rng.random() < 0.5 and int(date) <= 12:
        return f"{year}-{date}-{month}"  # day and month transposed
    digits = list(day)
    at = int(rng.choice([3, 6, 9]))
    digits[at] = str(int(rng.integers(10)))
    return "".join(digits)


def generate(records: int, seed: int = 11) -> tuple[pd.DataFrame, pd.Series]:
    """Person records and each one's person."""
    rng = np.random.default_rng(seed)
    people = records  # more than enough: their copies are cut at ``records``
    last = _zipf_choice(rng, _invent_words(rng, max(people // 2, 200)), people, 0.7)
    first = _zipf_choice(rng, FIRST_NAMES, people, 0.5)
    birth = pd.to_datetime("1940-01-01") + pd.to_timedelta(rng.integers(0, 365 * 65, people), unit="D")
    phone = (rng.choice(9 * 10**8, people, replace=False) + 10**8).astype(str)
    postcode = rng.integers(10_000, 99_999, people).astype(str)
    city = _zipf_choice(rng, CITIES, people, 0.8)
    family = np.flatnonzero(rng.random(people) < FAMILY_SHARE)
    relative = rng.integers(0, people, len(family))
    home = family[rng.random(len(family)) < HOME_PHONE_SHARE]  # a landline the household shares
    last[family], phone[home] = last[relative], phone[relative[np.isin(family, home)]]
    postcode[family], city[family] = postcode[relative], city[relative]
    base = pd.DataFrame({"first_name": first, "last_name": last, "birth_date": birth.strftime("%Y-%m-%d"),
                         "phone": phone, "postcode": postcode, "city": city})
    base["email"] = [f"{f}.{l}{rng.integers(100)}@{rng.choice(['mail.example', 'post.example', 'web.example'])}"
                     for f, l in zip(first, last)]
    copies = np.minimum(rng.geometric(0.55, people), 4)
    person = np.repeat(np.arange(people), copies)[:records]
    rows = base.to_dict("records")
    first_seen = np.r_[True, person[1:] != person[:-1]]
    out = []
    for position, (who, original) in enumerate(zip(person, first_seen)):
        record = dict(rows[who])
        if not original:
            record = _noisy(rng, record, position)
        out.append(record)
    frame = pd.DataFrame(out)
    frame["_source"] = "generated"
    frame["_source_id"] = [f"{i:08d}" for i in range(len(frame))]
    order = rng.permutation(len(frame))
    return frame.iloc[order].reset_index(drop=True), pd.Series(person[order], name="person")


def _noisy(rng: np.random.Generator, record: dict[str, Any], position: int) -> dict[str, Any]:
    r = rng.random
    if r() < 0.15 and record["first_name"] in NICKNAMES:
        record["first_name"] = str(rng.choice(NICKNAMES[record["first_name"]]))
    for name in ("first_name", "last_name"):
        if r() < 0.2:
            record[name] = _typo(rng, record[name])
        if r() < 0.05:
            record[name] = _swap(rng, record[name], OCR)
        if r() < 0.08:
            record[name] = _swap(rng, record[name], PHONETIC)
    if r() < 0.03:
        record["first_name"], record["last_name"] = record["last_name"], record["first_name"]
    if r() < 0.1:
        record["birth_date"] = _date_noise(rng, record["birth_date"])
    if r() < 0.25:
        record["email"] = f"{record['last_name']}{position % 997}@{rng.choice(['inbox.example', 'corp.example'])}"
    if r() < 0.05:
        digits = list(record["phone"])
        digits[int(rng.integers(len(digits)))] = str(int(rng.integers(10)))
        record["phone"] = "".join(digits)
    if r() < 0.05:
        record["city"] = _typo(rng, record["city"])
    for name, share in (("email", 0.25), ("phone", 0.3), ("birth_date", 0.15), ("postcode", 0.2), ("city", 0.2),
                        ("first_name", 0.02)):
        if r() < share:
            record[name] = None
    return record


def _clusters(n: int, left: np.ndarray, right: np.ndarray) -> pd.Series:
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return pd.Series(connected_components(graph, directed=False)[1])


def _figures(predicted: pd.Series, truth: pd.Series, seconds: float) -> dict[str, float]:
    precision, recall = pairwise_precision_recall(predicted, truth)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "seconds": round(seconds, 2), "entities": int(predicted.nunique())}


def _splink(frame: pd.DataFrame) -> tuple[pd.Series, float] | str:
    """Splink (a benchmark-only dependency: the ``bench`` extra) on the same records, with comparisons and blocking
    like the model's and its own recommended training, clustered at the same match probability; or why not."""
    try:
        import splink.comparison_library as cl
        from splink import Linker, SettingsCreator, block_on
        from splink.backends.duckdb import DuckDBAPI
    except ImportError:
        return "not installed: pip install 'sync_pipelines[bench]'"
    started = time.perf_counter()
    texts = frame.drop(columns=["_source", "_source_id"]).apply(lambda column: column.str.casefold().str.strip())
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
                     cl.NameComparison("last_name").configure(term_frequency_adjustments=True),
                     cl.DateOfBirthComparison("birth_date", input_is_string=True), cl.EmailComparison("email"),
                     cl.LevenshteinAtThresholds("phone", [1, 2]), cl.ExactMatch("postcode"), cl.ExactMatch("city")],
        blocking_rules_to_generate_predictions=[
            block_on("email"), block_on("phone"), block_on("birth_date", "postcode"),
            block_on("first_name", "birth_date"), block_on("last_name", "birth_date"),
            block_on("postcode", "first_name")])
    linker = Linker(DuckDBAPI().register(texts.assign(unique_id=range(len(frame)))), settings,
                    log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match([block_on("email")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    for rule in (block_on("email"), block_on("birth_date"), block_on("last_name")):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predicted = linker.inference.predict(threshold_match_probability=MODEL["review_probability"])
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predicted, MODEL["match_probability"]).as_pandas_dataframe()
    labels = clusters.set_index("unique_id")["cluster_id"].reindex(range(len(frame))).reset_index(drop=True)
    return labels, time.perf_counter() - started


def evaluate(records: int, seed: int = 11, splink: bool = True) -> dict[str, Any]:
    frame, truth = generate(records, seed)
    started = time.perf_counter()
    rules = resolve_entities(frame, USER_RULES)
    rules_s = time.perf_counter() - started
    started = time.perf_counter()
    model = scoring.MatchModel.from_spec(MODEL)
    values = scoring.field_values(frame, model)
    blocked = scoring.block(model, values)
    params = scoring.estimate(model, values, blocked)
    scored = scoring.score(model, params, values, blocked)
    model_s = time.perf_counter() - started
    clusters = _clusters(len(frame), scored.left[scored.match], scored.right[scored.match])
    compared = _splink(frame) if splink else "not run"
    return {
        "records": len(frame), "people": int(truth.nunique()), "candidate_pairs": len(blocked.left),
        "uncompared_pairs": blocked.uncompared_pairs, "review_pairs": int(scored.review.sum()),
        "rules": _figures(rules.reset_index(drop=True), truth, rules_s),
        "model": _figures(clusters, truth, model_s),
        "splink": compared if isinstance(compared, str) else _figures(compared[0], truth, compared[1]),
        "parameters": params.as_dict(model),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m sync_pipelines.benchmarks.matching", description=__doc__)
    parser.add_argument("--records", type=int, nargs="+", default=[5000])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--parameters", action="store_true", help="print the estimated parameters too")
    parser.add_argument("--no-splink", action="store_true", help="leave Splink out")
    args = parser.parse_args(argv)
    reports = []
    for records in args.records:
        report = evaluate(records, args.seed, splink=not args.no_splink)
        if not args.parameters:
            report.pop("parameters")
        print(json.dumps(report, indent=2))
        reports.append(report)
    return reports


if __name__ == "__main__":
    main()
