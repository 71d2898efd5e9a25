"""Ground truth: what a correct pipeline should find, computed from the live tables (so writes change it too)."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import phonenumbers

from sync_pipelines.core.legal_forms import name_key_of

from .data import COMPANY_STREAMS, World, company_key, company_label, person_key
from .table import INVALID_REASONS, Table

CANONICAL_FIELDS = ("email", "first_name", "last_name", "phone", "company_name", "job_title", "lifecycle_stage")
NAME_FIELDS = ("first_name", "last_name")  # a group in stacks/sandbox.yaml: they survive together


def _split_name(name: Any) -> tuple[str | None, str | None]:
    parts = str(name or "").split()
    return (parts[0] if parts else None), (" ".join(parts[1:]) or None)


def _from_full_name(name_key: str, email_key: str, extra: dict[str, str] | None = None) -> Callable[[dict], dict]:
    def extract(f: dict[str, Any]) -> dict[str, Any]:
        first, last = _split_name(f.get(name_key))
        values = {"email": f.get(email_key), "first_name": first, "last_name": last, "phone": f.get("phone")}
        values.update({canonical: f.get(source) for canonical, source in (extra or {}).items()})
        return values
    return extract


# Mirrors the contact mappings of stacks/sandbox.yaml: tool stream -> canonical values of one rendered record.
CONTACT_MAPPINGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "salesforce/Contact": lambda f: {"email": f.get("Email"), "first_name": f.get("FirstName"),
                                     "last_name": f.get("LastName"), "phone": f.get("Phone"),
                                     "job_title": f.get("Title")},
    "hubspot/contacts": lambda f: {"email": f.get("email"), "first_name": f.get("firstname"),
                                   "last_name": f.get("lastname"), "phone": f.get("phone"),
                                   "company_name": f.get("company"), "job_title": f.get("jobtitle"),
                                   "lifecycle_stage": f.get("lifecyclestage")},
    "zendesk/users": _from_full_name("name", "email"),
    "stripe/customers": _from_full_name("name", "email"),
    "legacy_erp/customers": _from_full_name("contact_name", "email_address", {"company_name": "company"}),
    "mailchimp/members": lambda f: {"email": f.get("email_address"),
                                    "first_name": (f.get("merge_fields") or {}).get("FNAME") or None,
                                    "last_name": (f.get("merge_fields") or {}).get("LNAME") or None,
                                    "phone": (f.get("merge_fields") or {}).get("PHONE") or None},
}


def canonical_value(field: str, value: Any) -> Any:
    """The value as the truth states it: email trimmed and lower-cased, phone in E.164, text trimmed."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if field in ("email", "lifecycle_stage"):
        return text.lower()
    if field == "phone":
        digits = re.sub(r"\D", "", text)
        if len(digits) == 10 and not text.startswith("+") or len(digits) == 11 and digits[0] == "1":
            return "+1" + digits[-10:]
        try:
            return phonenumbers.format_number(phonenumbers.parse(text, "US"), phonenumbers.PhoneNumberFormat.E164)
        except phonenumbers.NumberParseException:
            return text
    return text


class EmailOwners:
    """Which person owns an email, so a contact record created through an API joins that person's truth.

    Built on the first create that needs it (every person's plain and alternate address, plus addresses written
    since), then kept up to date by `attribute`.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self._owners: dict[str, int] | None = None

    def _build(self) -> dict[str, int]:
        people, companies = self.world.people, self.world.companies
        owners: dict[str, int] = {}
        for p in range(len(people)):
            for alternate in (False, True):
                owners.setdefault(canonical_value("email", people.email(p, companies, alternate)), p)
        for key, extract in CONTACT_MAPPINGS.items():
            table = self.world.tables[key]
            written = [*table.overrides, *range(table.n_base, len(table))]
            for row in written:
                self._learn(owners, table, row, extract)
        return owners

    @staticmethod
    def _learn(owners: dict[str, int], table: Table, row: int, extract: Callable[[dict], dict]) -> None:
        email = canonical_value("email", extract(table.fields(row)).get("email"))
        if email is not None and table.person[row] >= 0:
            owners.setdefault(email, int(table.person[row]))

    def attribute(self, table: Table, row: int) -> None:
        """After a write: a valid contact record nobody owns yet goes to the person owning its email."""
        extract = CONTACT_MAPPINGS.get(table.key)
        if extract is None:
            return
        if table.person[row] >= 0:
            if self._owners is not None:
                self._learn(self._owners, table, row, extract)
            return
        if table.invalid[row]:
            return
        email = canonical_value("email", extract(table.fields(row)).get("email"))
        if email is None:
            return
        if self._owners is None:
            self._owners = self._build()
        owner = self._owners.get(email)
        if owner is not None:
            table.person[row] = owner


def summary(world: World) -> dict[str, Any]:
    people_with_records = np.zeros(len(world.people), bool)
    for table in world.tables.values():
        people_with_records[table.person[table.person >= 0]] = True
    return {"seed": world.seed, "scale": world.scale, "people": int(people_with_records.sum()),
            "anchor_ms": world.anchor_ms,
            "streams": {**{key: table.counts() for key, table in world.tables.items()},
                        **{key: _derived_counts(derive(world)) for key, derive in DERIVED_RECORDS.items()}},
            "split_names": world.split_names, "company_traps": world.company_traps}


def _derived_counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    """A derived stream's counts, shaped like a table's."""
    deleted = sum(bool(entry["deleted"]) for entry in entries)
    return {"total": len(entries), "live": len(entries) - deleted, "deleted": deleted, "invalid": 0}


def records(table: Table, world: World | None = None) -> list[dict[str, Any]]:
    """One entry per record: id as the tool shows it, person, deleted flag and invalid reason; for a company
    record, also the company it describes (`data.company_label`); for a contact record of a person (given the
    ``world``), the company that person belongs to, whatever the record names (`company_key`)."""
    ids = [None if table.tool == "legacy_erp" and reason == "missing_id" else table.public_id(row)
           for row, reason in enumerate(INVALID_REASONS[i] for i in table.invalid.tolist())]
    entries = [{"id": ids[row], "person": None if p < 0 else person_key(p), "deleted": d,
                "invalid": INVALID_REASONS[i] or None}
               for row, (p, d, i) in enumerate(zip(table.person.tolist(), table.deleted.tolist(),
                                                   table.invalid.tolist()))]
    if table.key in COMPANY_STREAMS:
        for row, entry in enumerate(entries):
            entry["company"] = company_label(table, row)
    elif world is not None and table.key in CONTACT_MAPPINGS:
        companies = world.people.company
        for entry, p in zip(entries, table.person.tolist()):
            entry["company"] = None if p < 0 else company_key(int(companies[p]))
    return entries


def erp_companies(world: World) -> list[dict[str, Any]]:
    """The ERP has no company records: each company its customers name is one, as a stack reading the export for
    companies keys it (the name's key, `core.legal_forms`), labelled with the company whose registered name has that
    key (none for a name no company has); deleted when no live customer names it any longer."""
    table, companies = world.tables["legacy_erp/customers"], world.companies
    label_of = {name_key_of(companies.name(c)): company_key(c) for c in range(len(companies))}
    live: dict[str, bool] = {}
    for row in range(len(table)):
        key = name_key_of(table.fields(row).get("company") or "")
        if key:
            live[key] = live.get(key, False) or not bool(table.deleted[row])
    return [{"id": key, "person": None, "deleted": not alive, "invalid": None, "company": label_of.get(key)}
            for key, alive in sorted(live.items())]


# Records the truth states for a stream the sandbox does not hold as a table: another reading of a tool's export.
DERIVED_RECORDS: dict[str, Callable[[World], list[dict[str, Any]]]] = {"legacy_erp/companies": erp_companies}


def people(world: World) -> dict[str, dict[str, Any]]:
    """Per person, the newest value of each canonical contact field over their live, valid records."""
    candidates: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {f: [] for f in CANONICAL_FIELDS}
    sources = [(world.tables[key], extract) for key, extract in CONTACT_MAPPINGS.items()]
    for index, (table, extract) in enumerate(sources):
        usable = (table.person >= 0) & ~table.deleted & (table.invalid == 0)
        touched = np.zeros(len(table), bool)
        touched[list(table.overrides)] = True
        touched[table.n_base:] = True
        touched_values = {row: extract(table.fields(row)) for row in np.flatnonzero(usable & touched).tolist()}
        sample = extract(table.fields(0)) if len(table) else {}
        for field in CANONICAL_FIELDS:
            if field not in sample:
                continue
            present = np.ones(len(table), bool)
            present[: table.n_base] = table.present.get(field, True)
            for row, values in touched_values.items():
                present[row] = canonical_value(field, values.get(field)) is not None
            rows = np.flatnonzero(usable & present)
            candidates[field].append((table.person[rows], table.modified[rows], rows + (index << 40)))
    rendered: dict[int, dict[str, Any]] = {}
    result: dict[str, dict[str, Any]] = {}
    for field, parts in candidates.items():
        if not parts:
            continue
        persons, times, keys = (np.concatenate(column) for column in zip(*parts))
        order = np.lexsort((keys, times, persons))
        last_of_person = np.r_[persons[order][1:] != persons[order][:-1], True]
        for p, key in zip(persons[order][last_of_person].tolist(), keys[order][last_of_person].tolist()):
            if key not in rendered:
                table, extract = sources[key >> 40]
                rendered[key] = extract(table.fields(key & ((1 << 40) - 1)))
            result.setdefault(person_key(p), {})[field] = canonical_value(field, rendered[key].get(field))
    _names_from_the_source_of_truth(world, result)
    return {person: {field: values.get(field) for field in CANONICAL_FIELDS} for person, values in sorted(result.items())}


def _names_from_the_source_of_truth(world: World, result: dict[str, dict[str, Any]]) -> None:
    """A planted split name is the golden name whole, as its live Salesforce record holds it (the source of truth
    of the name group wins both parts, one empty), not the newest value of each part."""
    table, extract = world.tables["salesforce/Contact"], CONTACT_MAPPINGS["salesforce/Contact"]
    usable = (table.person >= 0) & ~table.deleted & (table.invalid == 0) & (table.codes["split_name"] == 1)
    for row in np.flatnonzero(usable).tolist():
        values = extract(table.fields(row))
        result[person_key(int(table.person[row]))].update(
            {name: canonical_value(name, values.get(name)) for name in NAME_FIELDS})
