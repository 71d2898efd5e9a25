"""The seeded company: people, companies and every tool's streams, generated as numpy columns.

The same seed and anchor give byte-identical data. Only integer codes are stored per row; `Table.fields` renders a
record when a page asks for it, so scale 300 (about a million records) builds in seconds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from . import names as N
from .ids import IdScheme
from .table import INVALID_REASONS, Table

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WINDOW_DAYS = 60
BAD_EMAIL, MISSING_EMAIL, MISSING_ID = (INVALID_REASONS.index(r) for r in ("bad_email", "missing_email", "missing_id"))
EMAIL_MISSING_STYLE = 4
PHONE_MISSING_STYLE = 4

PROJECTS = (("1200000000000101", "Customer onboarding"), ("1200000000000102", "Renewals"),
            ("1200000000000103", "Support escalations"))
WORKSPACE = ("1200000000000001", "Sandbox Co")


def today_anchor() -> datetime:
    """UTC midnight of today: generated times fall in the 60 days before it, so recent backfills find data."""
    now = datetime.now(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class People:
    """One row per real person; every tool's contact records point here."""

    first: np.ndarray
    last: np.ndarray
    company: np.ndarray
    title: np.ndarray
    lifecycle: np.ndarray
    personal_domain: np.ndarray  # -1 when the person uses the company domain
    email_suffix: np.ndarray  # -1 for none
    area: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def first_name(self, p: int) -> str:
        return N.FIRST_NAMES[self.first[p]]

    def last_name(self, p: int) -> str:
        return N.LAST_NAMES[self.last[p]]

    def email(self, p: int, companies: "Companies", alternate: bool = False) -> str:
        local = f"{self.first_name(p)}.{self.last_name(p)}".lower()
        if alternate:
            domain = N.PERSONAL_DOMAINS[(max(int(self.personal_domain[p]), 0) + 1) % len(N.PERSONAL_DOMAINS)]
            return f"{local}{p}@{domain}"
        suffix = "" if self.email_suffix[p] < 0 else str(int(self.email_suffix[p]))
        domain = (companies.domain(int(self.company[p])) if self.personal_domain[p] < 0
                  else N.PERSONAL_DOMAINS[self.personal_domain[p]])
        return f"{local}{suffix}@{domain}"

    def phone(self, p: int, alternate: bool = False) -> str:
        """E.164; the alternate number differs only in area code, so it never equals anyone's main number."""
        area = (int(self.area[p]) + int(alternate)) % len(N.AREA_CODES)
        return f"+1{N.AREA_CODES[area]}{int(self.line[p])}"


@dataclass
class Companies:
    first: np.ndarray
    second: np.ndarray
    suffix: np.ndarray
    industry: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def base(self, c: int) -> str:
        """The name without its suffix ("Blue Harbor", "Blue Harbor 2")."""
        combos = len(N.COMPANY_FIRST) * len(N.COMPANY_SECOND)
        base = f"{N.COMPANY_FIRST[self.first[c]]} {N.COMPANY_SECOND[self.second[c]]}"
        return base + ("" if c < combos else f" {c // combos + 1}")

    def suffix_of(self, c: int) -> str:
        return N.COMPANY_SUFFIX[self.suffix[c]]

    def name(self, c: int, style: int = 0) -> str:
        """The name as registered, or written in another of `names.COMPANY_NAME_STYLES`."""
        return N.company_name(self.base(c), self.suffix_of(c), style)

    def domain(self, c: int) -> str:
        combos = len(N.COMPANY_FIRST) * len(N.COMPANY_SECOND)
        slug = f"{N.COMPANY_FIRST[self.first[c]]}{N.COMPANY_SECOND[self.second[c]]}".lower()
        return f"{slug}{'' if c < combos else c // combos + 1}.com"


@dataclass
class World:
    """Everything the sandbox serves, plus what the generator planted on purpose."""

    seed: int
    scale: float
    anchor_ms: int
    people: People
    companies: Companies
    tables: dict[str, Table] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    split_names: list[dict[str, Any]] = field(default_factory=list)  # Salesforce contacts with the whole name last
    # company fields whose golden value a stated rule decides between two tools' different values
    company_conflicts: list[dict[str, Any]] = field(default_factory=list)
    company_traps: list[dict[str, Any]] = field(default_factory=list)  # other companies that look like one

    def table(self, tool: str, stream: str) -> Table | None:
        return self.tables.get(f"{tool}/{stream}")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _pick(rng: np.random.Generator, n: int, weights: tuple[float, ...]) -> np.ndarray:
    return rng.choice(len(weights), size=n, p=np.asarray(weights) / sum(weights)).astype(np.int8)


def _times(rng: np.random.Generator, n: int, anchor_ms: int, edited_share: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Created times spread over the window (sorted, so ids grow with time) and later modification times."""
    start, end = anchor_ms - WINDOW_DAYS * DAY_MS, anchor_ms - 3 * DAY_MS
    created = np.sort(rng.integers(start, end, n))
    edited = rng.random(n) < edited_share
    modified = created + (rng.random(n) * (end - created) * edited).astype(np.int64)
    return created, modified


def _people(seed: int, n: int, n_companies: int) -> People:
    rng = _rng(seed, "people")
    first = rng.integers(0, len(N.FIRST_NAMES), n).astype(np.int16)
    last = rng.integers(0, len(N.LAST_NAMES), n).astype(np.int16)
    company = rng.integers(0, n_companies, n).astype(np.int32)
    personal = np.where(rng.random(n) < 0.3, rng.integers(0, len(N.PERSONAL_DOMAINS), n), -1).astype(np.int8)
    # People sharing a name at the same company domain get a number, as mail admins do.
    key = (first.astype(np.int64) * 1000 + last) * 10_000_000 + company
    key = np.where(personal < 0, key, -1 - np.arange(n))
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    group_start = np.maximum.accumulate(np.where(np.r_[True, sorted_key[1:] != sorted_key[:-1]], np.arange(n), 0))
    occurrence = np.empty(n, np.int64)
    occurrence[order] = np.arange(n) - group_start
    suffix = np.where(personal >= 0, np.arange(n), np.where(occurrence > 0, occurrence + 1, -1))
    return People(
        first=first, last=last, company=company,
        title=rng.integers(0, len(N.JOB_TITLES), n).astype(np.int8),
        lifecycle=_pick(rng, n, (0.5, 0.2, 0.3)),
        personal_domain=personal, email_suffix=suffix,
        area=(np.arange(n) % len(N.AREA_CODES)).astype(np.int8),
        line=2_000_000 + (np.arange(n, dtype=np.int64) * 7919 + seed * 104_729) % 8_000_000,
    )


def _companies(seed: int, n: int) -> Companies:
    rng = _rng(seed, "companies")
    combos = len(N.COMPANY_FIRST) * len(N.COMPANY_SECOND)
    combo = (rng.permutation(combos)[np.arange(n) % combos]).astype(np.int32)
    return Companies(
        first=(combo // len(N.COMPANY_SECOND)).astype(np.int16),
        second=(combo % len(N.COMPANY_SECOND)).astype(np.int16),
        suffix=rng.integers(0, len(N.COMPANY_SUFFIX), n).astype(np.int8),
        industry=rng.integers(0, len(N.INDUSTRIES), n).astype(np.int8),
    )


@dataclass(frozen=True)
class ContactShape:
    """How one tool holds people: who is in it, how messy, and how it renders a person."""

    share: float
    email_styles: tuple[float, ...]  # plain, Capitalised, UPPER, padded, missing
    phone_styles: tuple[float, ...]  # (415) 555-0101, +1 415 555 0101, 415.555.0101, E.164, missing
    name_styles: tuple[float, ...]  # exact, nickname, typo in first name, typo in last name
    duplicate_share: float = 0.0
    junk_share: float = 0.01
    junk_reasons: tuple[int, ...] = (BAD_EMAIL, MISSING_EMAIL)
    deleted_share: float = 0.03


def _contact_table(world: World, rng: np.random.Generator, tool: str, name: str, ids: IdScheme,
                   shape: ContactShape, render: Callable[[Table, int], dict[str, Any]],
                   present_fields: dict[str, str]) -> Table:
    """Rows for the people in one tool; `present_fields` maps canonical field -> which code makes it missing."""
    n_people = len(world.people)
    members = np.flatnonzero(rng.random(n_people) < shape.share)
    duplicates = members[rng.random(len(members)) < shape.duplicate_share]
    n_junk = int(round(len(members) * shape.junk_share))
    person = np.concatenate([members, duplicates, np.full(n_junk, -1)])
    is_duplicate = np.concatenate([np.zeros(len(members), bool), np.ones(len(duplicates), bool), np.zeros(n_junk, bool)])
    order = rng.permutation(len(person))
    person, is_duplicate = person[order], is_duplicate[order]
    n = len(person)
    created, modified = _times(rng, n, world.anchor_ms)
    junk = person < 0
    invalid = np.where(junk, np.asarray(shape.junk_reasons)[rng.integers(0, len(shape.junk_reasons), n)], 0)
    deleted = (rng.random(n) < shape.deleted_share) & ~junk
    codes = {
        "email_style": _pick(rng, n, shape.email_styles),
        "phone_style": np.where(is_duplicate, 1, _pick(rng, n, shape.phone_styles)).astype(np.int8),
        "name_style": np.where(is_duplicate, 1, _pick(rng, n, shape.name_styles)).astype(np.int8),
        "alt_email": is_duplicate.astype(np.int8),
        "alt_phone": np.zeros(n, np.int8),
        "extra_missing": (rng.random(n) < 0.15).astype(np.int8),
        "junk_seed": rng.integers(0, 1 << 30, n).astype(np.int64),
    }
    codes["email_style"][is_duplicate] = 0
    missing_by = {"email": (codes["email_style"] == EMAIL_MISSING_STYLE) | (invalid == MISSING_EMAIL),
                  "phone": codes["phone_style"] == PHONE_MISSING_STYLE,
                  "extra": codes["extra_missing"] == 1}
    present = {f: ~missing_by[code] if code else np.ones(n, bool) for f, code in present_fields.items()}
    table = Table(tool, name, ids, created, modified, person, render, deleted, invalid, codes, present)
    world.tables[table.key] = table
    return table


def person_values(world: World, table: Table, row: int) -> dict[str, Any]:
    """First/last name, email and phone of a contact row as the tool shows them (messy on purpose)."""
    codes = table.codes
    p = int(table.person[row])
    if p < 0:
        seed = int(codes["junk_seed"][row])
        first, last = N.FIRST_NAMES[seed % len(N.FIRST_NAMES)], N.LAST_NAMES[(seed >> 8) % len(N.LAST_NAMES)]
        reason = INVALID_REASONS[int(table.invalid[row])]
        email = f"{first.lower()}@@example" if reason == "bad_email" else (
            None if reason == "missing_email" else f"{first.lower()}.{last.lower()}@example.com")
        return {"first": first, "last": last, "email": email, "phone": None, "company": None,
                "title": None, "lifecycle": "lead", "extra_missing": True}
    people = world.people
    first, last = people.first_name(p), people.last_name(p)
    style = codes["name_style"][row]
    if style == 1:
        first = N.NICKNAMES.get(first, first)
    elif style == 2:
        first = N.typo(first, int(codes["junk_seed"][row]))
    elif style == 3:
        last = N.typo(last, int(codes["junk_seed"][row]))
    email = people.email(p, world.companies, alternate=bool(codes["alt_email"][row]))
    email = (email, email.title(), email.upper(), f"  {email} ", None)[codes["email_style"][row]]
    phone_style = int(codes["phone_style"][row])
    phone = None if phone_style == PHONE_MISSING_STYLE else N.format_phone(
        people.phone(p, alternate=bool(codes["alt_phone"][row])), phone_style)
    company = int(people.company[p])
    return {"first": first, "last": last, "email": email, "phone": phone,
            "company": world.companies.name(company), "company_index": company,
            "title": N.JOB_TITLES[people.title[p]], "lifecycle": N.LIFECYCLE_STAGES[people.lifecycle[p]],
            "extra_missing": bool(codes["extra_missing"][row])}


def build_world(seed: int = 42, scale: float = 1.0, anchor: datetime | None = None) -> World:
    """Generate the whole company; `anchor` defaults to today's UTC midnight."""
    if scale <= 0:
        raise ValueError(f"sandbox scale must be positive, got {scale!r}")
    anchor = anchor or today_anchor()
    n_people = max(10, int(round(1000 * scale)))
    n_companies = max(3, n_people // 8)
    world = World(seed, scale, int(anchor.timestamp() * 1000), _people(seed, n_people, n_companies),
                  _companies(seed, n_companies))
    _build_contacts(world)
    _plant_conflicts(world)
    _plant_split_names(world)
    _build_business(world)
    _plant_contact_companies(world)
    _build_issues_and_audience(world)
    return world


def _build_contacts(world: World) -> None:
    seed = world.seed

    def salesforce(t: Table, row: int) -> dict[str, Any]:
        v = person_values(world, t, row)
        account = world.tables["salesforce/Account"].id(v["company_index"]) if "company_index" in v else None
        if t.codes["split_name"][row] == 1:
            v["first"], v["last"] = None, N.whole_name(v["first"], v["last"])
        return {"FirstName": v["first"], "LastName": v["last"], "Email": v["email"], "Phone": v["phone"],
                "Title": None if v["extra_missing"] else v["title"], "AccountId": account, "External_Id__c": None}

    def hubspot(t: Table, row: int) -> dict[str, Any]:
        v = person_values(world, t, row)
        return {"email": v["email"], "firstname": v["first"], "lastname": v["last"], "phone": v["phone"],
                "company": v["company"], "jobtitle": None if v["extra_missing"] else v["title"],
                "lifecyclestage": v["lifecycle"]}

    def full_name(t: Table, row: int) -> dict[str, Any]:
        v = person_values(world, t, row)
        return {"name": N.whole_name(v["first"], v["last"]), "email": v["email"], "phone": v["phone"]}

    def zendesk_user(t: Table, row: int) -> dict[str, Any]:
        organization = int(t.codes["organization"][row]) if "organization" in t.codes else -1
        organizations = world.tables.get("zendesk/organizations")
        return {**full_name(t, row),
                "organization_id": organizations.id(organization) if organization >= 0 and organizations else None}

    def erp(t: Table, row: int) -> dict[str, Any]:
        v = person_values(world, t, row)
        customer_no = None if t.invalid[row] == MISSING_ID else t.id(row)
        return {"customer_no": customer_no, "contact_name": N.whole_name(v["first"], v["last"]),
                "email_address": v["email"], "phone": v["phone"],
                "company": None if v["extra_missing"] else v["company"]}

    # Accounts exist before contacts point at them: one Account per company.
    _account_table(world)
    names = {"first_name": "", "last_name": ""}
    specs = [
        ("salesforce", "Contact", IdScheme("salesforce", "003"), salesforce,
         ContactShape(0.85, (85, 10, 0, 3, 2), (60, 20, 10, 0, 10), (1, 0, 0, 0)),
         {**names, "email": "email", "phone": "phone", "job_title": "extra"}),
        ("hubspot", "contacts", IdScheme("string_int", offset=1001), hubspot,
         ContactShape(0.70, (80, 5, 5, 5, 5), (30, 40, 10, 5, 15), (88, 8, 2, 2), duplicate_share=0.04),
         {**names, "email": "email", "phone": "phone", "company_name": "", "job_title": "extra",
          "lifecycle_stage": ""}),
        ("zendesk", "users", IdScheme("int", offset=360_000_000_001), zendesk_user,
         ContactShape(0.50, (75, 10, 5, 8, 2), (20, 20, 30, 10, 20), (80, 12, 4, 4)),
         {**names, "email": "email", "phone": "phone"}),
        ("stripe", "customers", IdScheme("stripe", "cus"), full_name,
         ContactShape(0.40, (90, 5, 0, 5, 0), (0, 0, 0, 70, 30), (90, 6, 2, 2), junk_share=0.005),
         {**names, "email": "email", "phone": "phone"}),
        ("legacy_erp", "customers", IdScheme("csv", "C", offset=100_000), erp,
         ContactShape(0.30, (60, 10, 20, 10, 0), (40, 0, 40, 0, 20), (85, 5, 5, 5), junk_share=0.03,
                      junk_reasons=(BAD_EMAIL, MISSING_EMAIL, MISSING_ID), deleted_share=0.0),
         {**names, "email": "email", "phone": "phone", "company_name": "extra"}),
    ]
    for tool, stream, ids, render, shape, present in specs:
        _contact_table(world, _rng(seed, f"{tool}/{stream}"), tool, stream, ids, shape, render, present)


def _plant_conflicts(world: World) -> None:
    """Make some people's newest email live in Zendesk and newest phone in HubSpot, after Salesforce's value."""
    rng = _rng(world.seed, "conflicts")
    contact_tables = [t for t in world.tables.values() if "email" in t.present]
    newest = np.zeros(len(world.people), np.int64)
    for t in contact_tables:
        mask = t.person >= 0
        np.maximum.at(newest, t.person[mask], t.modified[mask])
    sf = world.tables["salesforce/Contact"]
    sf_ok = (sf.person >= 0) & ~sf.deleted
    in_sf = {f: np.zeros(len(world.people), bool) for f in ("email", "phone")}
    for f in in_sf:
        in_sf[f][sf.person[sf_ok & sf.present[f]]] = True
    taken = np.zeros(len(world.people), bool)
    plans = (("zendesk/users", "email", "alt_email", 0.06), ("hubspot/contacts", "phone", "alt_phone", 0.03))
    for key, canonical, code, share in plans:
        t = world.tables[key]
        persons = t.person
        # The record that changed one contact point keeps the other, as a real support-desk or CRM user does:
        # without it nobody (nor any resolver) could tell this is the same person rather than a namesake.
        other = "phone" if canonical == "email" else "email"
        candidates = np.flatnonzero((persons >= 0) & ~t.deleted & t.present[canonical] & t.present[other]
                                    & (t.codes["alt_email"] == 0) & (t.codes["alt_phone"] == 0))
        candidates = candidates[in_sf[canonical][persons[candidates]] & in_sf[other][persons[candidates]]
                                & ~taken[persons[candidates]]]
        _, first_rows = np.unique(persons[candidates], return_index=True)
        candidates = candidates[np.sort(first_rows)]
        chosen = candidates[rng.random(len(candidates)) < share]
        taken[persons[chosen]] = True
        t.codes[code][chosen] = 1
        t.modified[chosen] = np.minimum(newest[persons[chosen]] + rng.integers(HOUR_MS, 2 * DAY_MS, len(chosen)),
                                        world.anchor_ms - 60_000)
        for row in chosen.tolist():
            p = int(persons[row])
            if canonical == "email":
                value, older = world.people.email(p, world.companies, True), world.people.email(p, world.companies)
            else:
                value, older = world.people.phone(p, True), world.people.phone(p)
            world.conflicts.append({"person": person_key(p), "field": canonical, "rule": "last_write_wins",
                                    "tool": t.tool, "value": value, "older_tool": "salesforce",
                                    "older_value": older})


def _plant_split_names(world: World) -> None:
    """Some Salesforce users type the whole name into LastName (FirstName is optional there, LastName is not),
    while HubSpot holds it split: field by field, that would make the golden "Rebecca" "Rebecca Williams". Planted
    on people HubSpot also holds and no conflict was planted on, with an email, so they still resolve."""
    rng = _rng(world.seed, "split_names")
    sf, hs = world.tables["salesforce/Contact"], world.tables["hubspot/contacts"]
    sf.codes["split_name"] = np.zeros(len(sf), np.int8)
    in_hubspot = np.zeros(len(world.people), bool)
    in_hubspot[hs.person[(hs.person >= 0) & ~hs.deleted]] = True
    planted = {c["person"] for c in world.conflicts}
    candidates = np.flatnonzero((sf.person >= 0) & ~sf.deleted & (sf.invalid == 0) & sf.present["email"])
    candidates = candidates[in_hubspot[sf.person[candidates]]]
    candidates = [row for row in candidates.tolist() if person_key(int(sf.person[row])) not in planted]
    for row in [row for row, draw in zip(candidates, rng.random(len(candidates))) if draw < 0.04]:
        sf.codes["split_name"][row] = 1
        world.split_names.append({"person": person_key(int(sf.person[row])), "tool": sf.tool, "id": sf.id(row)})


def person_key(p: int) -> str:
    return f"P{p:06d}"


def _account_table(world: World) -> None:
    rng = _rng(world.seed, "salesforce/Account")
    n = len(world.companies)
    created, modified = _times(rng, n, world.anchor_ms)
    website_style = _pick(rng, n, (50, 30, 20))
    companies = world.companies

    def render(t: Table, row: int) -> dict[str, Any]:
        domain = companies.domain(row)
        website = (f"https://www.{domain}", f"www.{domain}", f"http://{domain}/")[int(t.codes["website"][row])]
        return {"Name": companies.name(row), "Website": website, "Industry": N.INDUSTRIES[companies.industry[row]]}

    # Account rows are the companies in order (not sorted by creation) so a contact's AccountId is its company row.
    table = Table("salesforce", "Account", IdScheme("salesforce", "001"), rng.permutation(created),
                  modified, np.full(n, -1), render, deleted=rng.random(n) < 0.02,
                  codes={"website": website_style, "company": np.arange(n, dtype=np.int32)})
    table.modified = np.maximum(table.modified, table.created)
    world.tables[table.key] = table


def _build_business(world: World) -> None:
    """Deals, company records in HubSpot, tickets, tasks and invoices, linked to the people and companies."""
    n_people, companies = len(world.people), world.companies
    seed = world.seed

    rng = _rng(seed, "salesforce/Opportunity")
    n = max(3, int(round(n_people * 0.4)))
    created, modified = _times(rng, n, world.anchor_ms)
    opp_codes = {"company": rng.integers(0, len(companies), n).astype(np.int32),
                 "product": rng.integers(0, len(N.PRODUCTS), n).astype(np.int8),
                 "stage": _pick(rng, n, (25, 20, 20, 20, 15)),
                 "amount": (rng.integers(10, 1000, n) * 100).astype(np.int64),
                 "close_days": rng.integers(10, 90, n).astype(np.int32)}
    accounts = world.tables["salesforce/Account"]

    def opportunity(t: Table, row: int) -> dict[str, Any]:
        c = int(t.codes["company"][row])
        close = int(t.created[row]) + int(t.codes["close_days"][row]) * DAY_MS
        return {"Name": f"{companies.name(c)} - {N.PRODUCTS[t.codes['product'][row]]}", "AccountId": accounts.id(c),
                "Amount": float(t.codes["amount"][row]), "StageName": N.OPPORTUNITY_STAGES[t.codes["stage"][row]],
                "CloseDate": datetime.fromtimestamp(close / 1000, timezone.utc).strftime("%Y-%m-%d")}

    opportunities = Table("salesforce", "Opportunity", IdScheme("salesforce", "006"), created, modified,
                          np.full(n, -1), opportunity, deleted=rng.random(n) < 0.02, codes=opp_codes)
    world.tables[opportunities.key] = opportunities

    _hubspot_companies(world)

    users = world.tables["zendesk/users"]
    rng = _rng(seed, "zendesk/tickets")
    n = max(3, int(round(n_people * 0.3)))
    created, modified = _times(rng, n, world.anchor_ms)
    people_users = np.flatnonzero(users.person >= 0)
    ticket_codes = {"requester": people_users[rng.integers(0, len(people_users), n)].astype(np.int64),
                    "subject": rng.integers(0, len(N.TICKET_SUBJECTS), n).astype(np.int8),
                    "status": _pick(rng, n, (15, 30, 15, 25, 15)),
                    "priority": _pick(rng, n, (30, 45, 20, 5))}
    ticket_deleted = rng.random(n) < 0.02

    def ticket(t: Table, row: int) -> dict[str, Any]:
        subject = N.TICKET_SUBJECTS[t.codes["subject"][row]]
        return {"subject": subject, "description": f"{subject}. Please help, this blocks our team.",
                "status": N.TICKET_STATUSES[t.codes["status"][row]],
                "priority": N.TICKET_PRIORITIES[t.codes["priority"][row]],
                "requester_id": users.id(int(t.codes["requester"][row]))}

    tickets = Table("zendesk", "tickets", IdScheme("int", offset=1), created, modified, np.full(n, -1), ticket,
                    deleted=ticket_deleted, codes=ticket_codes)
    world.tables[tickets.key] = tickets

    rng = _rng(seed, "asana/tasks")
    n = max(3, int(round(n_people * 0.25)))
    created, modified = _times(rng, n, world.anchor_ms, edited_share=0.8)
    task_codes = {"project": rng.integers(0, len(PROJECTS), n).astype(np.int8),
                  "verb": rng.integers(0, len(N.TASK_VERBS), n).astype(np.int8),
                  "company": rng.integers(0, len(companies), n).astype(np.int32),
                  "assignee": np.where(rng.random(n) < 0.1, -1, rng.integers(0, len(N.TEAM), n)).astype(np.int8),
                  "completed": (rng.random(n) < 0.4).astype(np.int8),
                  "due_days": rng.integers(-20, 40, n).astype(np.int32)}

    def task(t: Table, row: int) -> dict[str, Any]:
        due = world.anchor_ms + int(t.codes["due_days"][row]) * DAY_MS
        assignee = int(t.codes["assignee"][row])
        return {"name": f"{N.TASK_VERBS[t.codes['verb'][row]]} {companies.name(int(t.codes['company'][row]))}",
                "notes": "Checklist: kick-off, data import, training.",
                "completed": bool(t.codes["completed"][row]),
                "due_on": datetime.fromtimestamp(due / 1000, timezone.utc).strftime("%Y-%m-%d"),
                "assignee": None if assignee < 0 else team_member(assignee),
                "projects": [PROJECTS[int(t.codes["project"][row])][0]]}

    tasks = Table("asana", "tasks", IdScheme("string_int", offset=1_200_000_100_000_000), created, modified,
                  np.full(n, -1), task, codes=task_codes)
    world.tables[tasks.key] = tasks

    customers = world.tables["stripe/customers"]
    rng = _rng(seed, "stripe/invoices")
    n = max(3, int(round(n_people * 0.2)))
    created, modified = _times(rng, n, world.anchor_ms)
    live_customers = np.flatnonzero(~customers.deleted)
    won = np.flatnonzero((opp_codes["stage"] == N.OPPORTUNITY_STAGES.index("Closed Won")) & ~opportunities.deleted)
    deal_draw = rng.integers(0, max(len(won), 1), n)
    deals = np.where(rng.random(n) < 0.5, won[deal_draw], -1) if len(won) else np.full(n, -1)
    invoice_codes = {"customer": live_customers[rng.integers(0, len(live_customers), n)].astype(np.int64),
                     "amount": (rng.integers(5, 500, n) * 1000).astype(np.int64),
                     "status": _pick(rng, n, (10, 30, 50, 5, 5)),
                     "deal": deals.astype(np.int64)}

    def invoice(t: Table, row: int) -> dict[str, Any]:
        customer = int(t.codes["customer"][row])
        deal = int(t.codes["deal"][row])
        return {"customer": customers.id(customer), "customer_email": customers.fields(customer).get("email"),
                "amount_due": int(t.codes["amount"][row]), "currency": "usd",
                "status": N.INVOICE_STATUSES[t.codes["status"][row]],
                "metadata": {} if deal < 0 else {"deal_id": opportunities.id(deal)}}

    invoices = Table("stripe", "invoices", IdScheme("stripe", "in"), created, modified, np.full(n, -1), invoice,
                     codes=invoice_codes)
    world.tables[invoices.key] = invoices


HUBSPOT_COMPANY_KINDS = ("member", "duplicate", "namesake", "lookalike")
MEMBER, DUPLICATE, NAMESAKE, LOOKALIKE = range(len(HUBSPOT_COMPANY_KINDS))
HUBSPOT_DOMAIN_STYLES = ("plain", "www", "url", "empty")
EMPTY_DOMAIN = HUBSPOT_DOMAIN_STYLES.index("empty")
COMPANY_STREAMS = ("salesforce/Account", "hubspot/companies", "zendesk/organizations")
# How a contact record names its company where the tool holds one: as the truth says, not at all, or another
# company (the person moved and this tool was never told): write-back must make it the golden company everywhere.
CONTACT_COMPANY_STYLES = ("truth", "none", "stale")
CONTACT_COMPANY_SHARES = (85, 8, 7)


def company_key(c: int) -> str:
    return f"C{c:06d}"


def company_label(table: Table, row: int) -> str | None:
    """The real company a record of `COMPANY_STREAMS` describes (a trap is a company of its own, named after the
    one it resembles); None for a record written through the API since."""
    if row >= table.n_base:
        return None
    kind = int(table.codes["kind"][row]) if "kind" in table.codes else MEMBER
    label = company_key(int(table.codes["company"][row]))
    return label if kind in (MEMBER, DUPLICATE) else f"{label}-{HUBSPOT_COMPANY_KINDS[kind]}"


def _hubspot_companies(world: World) -> None:
    """HubSpot's companies: 80% of the companies, their names and domains written as marketers type them, 5% of
    them twice, an industry edited later than Salesforce's for some, and traps: other companies with a similar
    name (a namesake abroad with another legal form, a look-alike one letter apart) and a domain of their own."""
    companies, accounts = world.companies, world.tables["salesforce/Account"]
    rng = _rng(world.seed, "hubspot/companies")
    members = rng.permutation(np.flatnonzero(rng.random(len(companies)) < 0.8)).astype(np.int32)
    duplicated = members[rng.random(len(members)) < 0.05]
    has_dup = np.isin(members, duplicated)
    member_domains = np.where(has_dup, 0, _pick(rng, len(members), (70, 15, 5, 10)))
    # traps go with companies whose every record holds a domain: a record without one could belong to either
    no_empty = np.ones(len(companies), bool)
    no_empty[members[member_domains == EMPTY_DOMAIN]] = False
    no_empty[duplicated] = False
    eligible = rng.permutation(np.flatnonzero(no_empty & ~accounts.deleted[: len(companies)]))
    n_traps = min(max(1, int(round(len(companies) * 0.03))), len(eligible) // 2)
    namesakes, lookalikes = eligible[:n_traps], eligible[n_traps: 2 * n_traps]
    company = np.concatenate([members, duplicated, namesakes, lookalikes]).astype(np.int32)
    kind = np.repeat(np.arange(4, dtype=np.int8), [len(members), len(duplicated), n_traps, n_traps])
    n = len(company)
    created, modified = _times(rng, n, world.anchor_ms)
    codes = {
        "company": company, "kind": kind,
        "name_style": np.where(kind == MEMBER, _pick(rng, n, (55, 15, 15, 15)),
                               np.where(kind == DUPLICATE, 1 + _pick(rng, n, (1, 1, 1)), 0)).astype(np.int8),
        "domain_style": np.where(kind == MEMBER, np.r_[member_domains, np.zeros(n - len(members))],
                                 np.where(kind == DUPLICATE, EMPTY_DOMAIN * _pick(rng, n, (40, 60)), 0)).astype(np.int8),
        "industry": np.where(kind <= DUPLICATE, companies.industry[company],
                             rng.integers(0, len(N.INDUSTRIES), n)).astype(np.int8),
        "trap_form": rng.integers(0, len(N.NAMESAKE_FORMS), n).astype(np.int8),
    }
    deleted = (rng.random(n) < 0.02) & (kind <= DUPLICATE)

    def render(t: Table, row: int) -> dict[str, Any]:
        c, row_kind = int(t.codes["company"][row]), int(t.codes["kind"][row])
        domain = companies.domain(c)
        if row_kind == NAMESAKE:
            form, country = N.NAMESAKE_FORMS[int(t.codes["trap_form"][row])]
            name, domain = f"{companies.base(c)} {form}", domain.removesuffix(".com") + "." + country
        elif row_kind == LOOKALIKE:
            first, rest = companies.base(c).split(" ", 1)
            base = f"{N.typo(first, 2 * row + 1)} {rest}"  # an odd seed doubles a letter: never the same word
            name, domain = f"{base} {companies.suffix_of(c)}", base.lower().replace(" ", "") + ".com"
        else:
            name = companies.name(c, int(t.codes["name_style"][row]))
            domain = (domain, f"www.{domain}", f"https://www.{domain}/", None)[int(t.codes["domain_style"][row])]
        return {"name": name, "domain": domain, "industry": N.INDUSTRIES[int(t.codes["industry"][row])]}

    table = Table("hubspot", "companies", IdScheme("string_int", offset=5001), created, modified, np.full(n, -1),
                  render, deleted=deleted, codes=codes)
    world.tables[table.key] = table
    _plant_company_conflicts(world, table, rng)
    world.company_traps = [{"company": company_label(table, row), "tool": table.tool, "id": table.id(row),
                            "resembles": company_key(int(company[row])), "kind": HUBSPOT_COMPANY_KINDS[kind[row]]}
                           for row in np.flatnonzero(kind > DUPLICATE).tolist()]


def _plant_company_conflicts(world: World, hubspot: Table, rng: np.random.Generator) -> None:
    """A name written otherwise in HubSpot (Salesforce, the source of truth, wins) and, for 8% of the companies
    both hold once, an industry edited in HubSpot after Salesforce's last change (the later edit wins)."""
    accounts, companies = world.tables["salesforce/Account"], world.companies
    kind, company = hubspot.codes["kind"], hubspot.codes["company"]
    live = (kind <= DUPLICATE) & ~hubspot.deleted & ~accounts.deleted[company]
    once = np.bincount(company[kind <= DUPLICATE], minlength=len(companies)) == 1
    edited = np.flatnonzero(live & once[company] & (kind == MEMBER) & (rng.random(len(hubspot)) < 0.08))
    shift = rng.integers(1, len(N.INDUSTRIES), len(edited))
    hubspot.codes["industry"][edited] = (hubspot.codes["industry"][edited] + shift) % len(N.INDUSTRIES)
    newest = np.maximum(accounts.modified[company[edited]], hubspot.modified[edited])
    hubspot.modified[edited] = np.minimum(newest + rng.integers(HOUR_MS, 2 * DAY_MS, len(edited)),
                                          world.anchor_ms - 60_000)
    named = set()
    for row in np.flatnonzero(live).tolist():
        c = int(company[row])
        values = hubspot.fields(row)
        if c not in named and values["name"] != companies.name(c):
            named.add(c)
            world.company_conflicts.append({"company": company_key(c), "field": "name", "rule": "source_of_truth",
                                            "tool": "salesforce", "value": companies.name(c),
                                            "other_tool": "hubspot", "other_value": values["name"]})
    for row in edited.tolist():
        c = int(company[row])
        world.company_conflicts.append({"company": company_key(c), "field": "industry", "rule": "last_write_wins",
                                        "tool": "hubspot", "value": hubspot.fields(row)["industry"],
                                        "other_tool": "salesforce",
                                        "other_value": N.INDUSTRIES[int(companies.industry[c])]})


def _plant_contact_companies(world: World) -> None:
    """Zendesk organizations (70% of the companies, one each, with their domain), and which company each HubSpot
    contact (an association) and Zendesk user (``organization_id``) names: its person's company where the tool
    holds it, else none, mostly; sometimes none or another company of that tool (`CONTACT_COMPANY_STYLES`), the
    latter only for people Salesforce holds with their live account. Salesforce's ``AccountId`` always names the
    person's company."""
    companies = world.companies
    rng = _rng(world.seed, "zendesk/organizations")
    company = np.flatnonzero(rng.random(len(companies)) < 0.7).astype(np.int32)
    created, modified = _times(rng, len(company), world.anchor_ms)

    def organization(t: Table, row: int) -> dict[str, Any]:
        c = int(t.codes["company"][row])
        return {"name": companies.name(c), "domain_names": [companies.domain(c)]}

    organizations = Table("zendesk", "organizations", IdScheme("int", offset=370_000_000_001), created, modified,
                          np.full(len(company), -1), organization, codes={"company": company})
    world.tables[organizations.key] = organizations
    hubspot = world.tables["hubspot/companies"]
    member = (hubspot.codes["kind"] == MEMBER) & ~hubspot.deleted
    salesforce, accounts = world.tables["salesforce/Contact"], world.tables["salesforce/Account"]
    in_salesforce = np.zeros(len(world.people), bool)
    usable = (salesforce.person >= 0) & ~salesforce.deleted & (salesforce.invalid == 0)
    usable[usable] = ~accounts.deleted[world.people.company[salesforce.person[usable]]]
    in_salesforce[salesforce.person[usable]] = True
    for contacts, holders, column in ((world.tables["hubspot/contacts"], np.flatnonzero(member), "company_record"),
                                      (world.tables["zendesk/users"], np.arange(len(company)), "organization")):
        rng = _rng(world.seed, f"{contacts.key}/company")
        held_by = np.full(len(companies), -1, np.int64)
        held_by[company[holders] if column == "organization" else hubspot.codes["company"][holders]] = holders
        person = contacts.person
        own = np.where(person >= 0, held_by[world.people.company[np.maximum(person, 0)]], -1)
        style = _pick(rng, len(contacts), CONTACT_COMPANY_SHARES)
        other = holders[rng.integers(0, len(holders), len(contacts))]
        # another company only where Salesforce, the source of truth, names the right one: else no rule could tell
        stale = (style == 2) & in_salesforce[np.maximum(person, 0)] & (person >= 0)
        chosen = np.where(stale, np.where(other == own, -1, other), np.where(style == 1, -1, own))
        contacts.codes[column] = np.where(own >= 0, chosen, -1).astype(np.int64)


def _build_issues_and_audience(world: World) -> None:
    """Jira issues of the support escalation project, assigned to staff; the marketing audience, empty until a sync
    writes the golden contacts into it."""
    from .jira import ID_OFFSET, PRIORITIES, STATUSES
    from .mailchimp import subscriber_hash

    rng = _rng(world.seed, "jira/issues")
    n = max(3, int(round(len(world.people) * 0.12)))
    created, modified = _times(rng, n, world.anchor_ms)
    codes = {"summary": rng.integers(0, len(N.TICKET_SUBJECTS), n).astype(np.int8),
             "status": _pick(rng, n, (40, 30, 30)), "priority": _pick(rng, n, (5, 20, 50, 20, 5)),
             "assignee": np.where(rng.random(n) < 0.8, rng.integers(0, len(N.TEAM), n), -1).astype(np.int16),
             "due_days": np.where(rng.random(n) < 0.5, rng.integers(3, 30, n), -1).astype(np.int16)}

    def issue(t: Table, row: int) -> dict[str, Any]:
        member, due = int(t.codes["assignee"][row]), int(t.codes["due_days"][row])
        assignee = None if member < 0 else team_member(member)
        return {"summary": f"Escalation: {N.TICKET_SUBJECTS[t.codes['summary'][row]]}",
                "status": STATUSES[t.codes["status"][row]], "priority": PRIORITIES[t.codes["priority"][row]],
                "assignee": assignee and {"accountId": assignee["gid"], "emailAddress": assignee["email"],
                                          "displayName": assignee["name"]},
                "duedate": None if due < 0 else datetime.fromtimestamp(
                    (int(t.created[row]) + due * DAY_MS) / 1000, timezone.utc).strftime("%Y-%m-%d"),
                "labels": [], "issuetype": "Task"}

    issues = Table("jira", "issues", IdScheme("string_int", offset=ID_OFFSET), created, modified, np.full(n, -1),
                   issue, deleted=rng.random(n) < 0.02, codes=codes)
    empty = np.empty(0, np.int64)
    audience = Table("mailchimp", "members", IdScheme("int", offset=1), empty, empty, empty, lambda t, row: {})
    audience.shown_id = lambda t, row: subscriber_hash(t.fields(row)["email_address"])
    for table in (issues, audience):
        world.tables[table.key] = table


def team_member(index: int) -> dict[str, str]:
    """An Asana user of the sandbox company (tasks are assigned to staff, not customers)."""
    first, last = N.TEAM[index]
    return {"gid": str(1_200_000_000_000_500 + index), "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}@{N.TEAM_DOMAIN}"}


def total_records(world: World) -> int:
    return sum(len(t) for t in world.tables.values())
