"""Benchmark entity resolution on synthetic contacts: time, peak memory, pairwise precision and recall.

    python -m sync_pipelines.benchmarks.resolve --records 100000 [--crosswalk]

Synthetic people get one record each, then ~30% more records are noisy copies of some of them from other
tools (case and whitespace changes, nicknames, typos in last names, missing fields, a second email), and a
few colleagues share a switchboard phone. Resolution runs with the sandbox stack's contact rules.

With --crosswalk a second run follows, as after a sync: 5% of the records get a new email and are resolved
with the first run's crosswalk, which should keep them in their entities (identity persists).
"""

from __future__ import annotations

import argparse
import resource
import string
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sync_pipelines.core.resolve import build_crosswalk, pairwise_precision_recall, resolve_entities

STACK_FILE = Path(__file__).resolve().parents[1] / "stacks" / "sandbox.yaml"
CHANGED_EMAIL_SHARE = 0.05
TOOLS = ("salesforce", "hubspot", "zendesk", "stripe", "legacy_erp")
NICKNAMES = {
    "robert": ["bob", "rob"], "william": ["bill", "will"], "elizabeth": ["liz", "beth"], "james": ["jim"],
    "michael": ["mike"], "katherine": ["kate", "kathy"], "jennifer": ["jen"], "richard": ["rick", "dick"],
    "margaret": ["maggie", "peggy"], "thomas": ["tom"], "joseph": ["joe"], "christopher": ["chris"],
    "daniel": ["dan"], "patricia": ["pat"], "susan": ["sue"], "anthony": ["tony"], "rebecca": ["becky"],
    "alexander": ["alex"], "samantha": ["sam"], "jonathan": ["jon"], "nicholas": ["nick"], "edward": ["ed", "ted"],
}
FIRST_NAMES = [*NICKNAMES, "mary", "linda", "barbara", "sarah", "karen", "nancy", "lisa", "betty", "sandra",
               "ashley", "emily", "donna", "michelle", "carol", "amanda", "melissa", "deborah", "stephanie", "laura",
               "david", "john", "charles", "matthew", "mark", "donald", "steven", "paul", "andrew", "joshua",
               "kevin", "brian", "george", "timothy", "ronald", "jason", "jeffrey", "ryan", "jacob", "gary",
               "eric", "stephen", "larry", "justin", "scott", "brandon", "benjamin", "samuel", "gregory", "frank",
               "aisha", "wei", "priya", "olga", "mohammed", "yuki", "fatima", "ivan", "chen", "lucia", "omar"]
ONSETS = ["b", "br", "c", "ch", "d", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh", "st", "t",
          "th", "v", "w", "z", ""]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
CODAS = ["", "n", "r", "s", "t", "l", "m", "ck", "nd", "rt", "ll", "son", "ton", "man", "ley", "berg", "ski", "ez"]
COMPANY_SUFFIXES = ["Inc", "LLC", "Ltd", "Group", "Partners", "Labs", "Systems"]


def _zipf_choice(rng: np.random.Generator, options: list[str], size: int, exponent: float) -> np.ndarray:
    """Realistic skew: a few names are very common, most are rare."""
    weights = 1.0 / np.arange(1, len(options) + 1) ** exponent
    return np.array(options, dtype=object)[rng.choice(len(options), size=size, p=weights / weights.sum())]


def _invent_words(rng: np.random.Generator, count: int) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        syllables = rng.integers(1, 4)
        words.add("".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)) + rng.choice(CODAS))
    ordered = sorted(words)  # a set's order varies with the interpreter's hash seed
    rng.shuffle(ordered)
    return ordered


def _typo(rng: np.random.Generator, word: str) -> str:
    if len(word) < 4:
        return word
    at = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    if kind == 1:
        return word[:at] + word[at + 1 :]
    return word[:at] + rng.choice(list(string.ascii_lowercase)) + word[at + 1 :]


def _noisy_case(rng: np.random.Generator, text: str) -> str:
    styles = (str.title, str.upper, str.lower, lambda value: f"  {value} ", lambda value: value.replace(" ", "  "))
    return styles[int(rng.integers(len(styles)))](text)


def synthesize(n_records: int, seed: int = 7, duplicate_share: float = 0.3) -> tuple[pd.DataFrame, pd.Series]:
    """Contact-like records and each record's true person."""
    rng = np.random.default_rng(seed)
    n_people = int(n_records * (1 - duplicate_share))
    last_names = _zipf_choice(rng, _invent_words(rng, 20_000), n_people, 0.9)
    first_names = _zipf_choice(rng, FIRST_NAMES, n_people, 0.6)
    company_words = _invent_words(rng, 4_000)
    companies = [f"{word.title()} {rng.choice(COMPANY_SUFFIXES)}" for word in company_words]
    people = pd.DataFrame({
        "first_name": first_names,
        "last_name": last_names,
        "company_name": _zipf_choice(rng, companies, n_people, 0.8),
        "phone": [f"+1{number}" for number in rng.choice(9 * 10**9, n_people, replace=False) + 10**9],
    })
    people["email"] = [
        f"{first}.{last}{number}@{company.split()[0].lower()}.com"
        for first, last, number, company in zip(first_names, last_names, range(n_people), people["company_name"])
    ]
    switchboard = rng.random(n_people) < 0.02  # colleagues answering on one number
    people.loc[switchboard, "phone"] = people["phone"].to_numpy()[rng.integers(0, n_people, switchboard.sum())]

    person = np.r_[np.arange(n_people), rng.integers(0, n_people, n_records - n_people)]
    originals = people.to_dict("records")
    rows = []
    for position, who in enumerate(person):
        record = dict(originals[who])
        if position >= n_people:  # a copy from another tool, with the noise tools add
            record["first_name"] = _noisy_case(rng, record["first_name"])
            if rng.random() < 0.2 and record["first_name"].strip().lower() in NICKNAMES:
                record["first_name"] = rng.choice(NICKNAMES[record["first_name"].strip().lower()])
            if rng.random() < 0.1:
                record["last_name"] = _typo(rng, record["last_name"])
            record["last_name"] = _noisy_case(rng, record["last_name"])
            if rng.random() < 0.15:
                record["email"] = f"{record['last_name'].strip().lower()}{position}@mail.example"
            record["email"] = _noisy_case(rng, record["email"])
        for field, missing in (("phone", 0.3), ("company_name", 0.5), ("email", 0.05)):
            if rng.random() < missing:
                record[field] = None
        record["_source"] = TOOLS[int(rng.integers(len(TOOLS)))]
        record["_source_id"] = f"{position:07d}"
        rows.append(record)
    records = pd.DataFrame(rows)
    return records, pd.Series(person, index=records.index, name="person")


def change_emails(records: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """A copy where `share` of all records (picked among those with an email) moved to an address no other
    record has."""
    rng = np.random.default_rng(seed)
    with_email = np.flatnonzero(records["email"].notna().to_numpy())
    chosen = rng.choice(with_email, int(len(records) * share), replace=False)
    changed = records.copy()
    changed.iloc[chosen, changed.columns.get_loc("email")] = [f"moved{position}@new.example" for position in chosen]
    return changed


def measure(
    title: str, records: pd.DataFrame, truth: pd.Series, rules: dict, crosswalk: pd.DataFrame | None, trace: bool
) -> pd.Series:
    """Resolve once and print time, memory, pairwise precision and recall and the guard's counts."""
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    clusters = resolve_entities(records, rules, crosswalk)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    tracemalloc.stop()

    precision, recall = pairwise_precision_recall(clusters, truth)
    report = clusters.attrs["resolution"]
    print(f"[{title}] resolved into {clusters.nunique():,} entities in {elapsed:.2f} s")
    if peak is not None:
        print(f"[{title}] peak traced Python memory during resolve: {peak / 2**20:.0f} MiB")
    print(f"[{title}] pairwise precision {precision:.4f}, recall {recall:.4f}")
    print(f"[{title}] components re-clustered by the chain guard: {report['guarded_components']:,}; "
          f"blocks or groups skipped: {len(report['skipped'])}; records held only by the crosswalk: "
          f"{report['sticky_links']:,}")
    return clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--crosswalk", action="store_true",
                        help=f"rerun after {CHANGED_EMAIL_SHARE:.0%}% of emails changed, with the first run's crosswalk")
    parser.add_argument("--no-tracemalloc", action="store_true", help="time without tracemalloc's overhead")
    args = parser.parse_args()

    rules = yaml.safe_load(STACK_FILE.read_text())["identity"]["contacts"]
    started = time.perf_counter()
    records, truth = synthesize(args.records, args.seed)
    elapsed = time.perf_counter() - started
    print(f"synthesized {len(records):,} records of {truth.nunique():,} people in {elapsed:.1f} s")

    trace = not args.no_tracemalloc
    clusters = measure("first run", records, truth, rules, None, trace)
    if args.crosswalk:
        changed = change_emails(records, CHANGED_EMAIL_SHARE, args.seed)
        moved = changed["email"].fillna("") != records["email"].fillna("")
        print(f"changed the email of {moved.sum():,} records")
        rerun = measure("rerun with crosswalk", changed, truth, rules, build_crosswalk(records, clusters), trace)
        print(f"[rerun with crosswalk] records whose entity id changed: {(rerun != clusters).sum():,}")
        measure("rerun without crosswalk", changed, truth, rules, None, trace)
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
