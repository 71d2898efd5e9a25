"""The seeded company: determinism, ids, planted mess."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sync_pipelines.sandbox.data import build_world
from sync_pipelines.sandbox.ids import IdScheme

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)


def rendered(world) -> list:
    return [(key, t.id(r), t.fields(r), int(t.modified[r]), bool(t.deleted[r]))
            for key, t in world.tables.items() for r in range(len(t))]


def test_same_seed_same_data_other_seed_other_data():
    first, second = build_world(5, 0.2, ANCHOR), build_world(5, 0.2, ANCHOR)
    assert rendered(first) == rendered(second)
    assert first.conflicts == second.conflicts
    assert rendered(build_world(6, 0.2, ANCHOR)) != rendered(first)


def test_times_fall_in_the_sixty_days_before_the_anchor_over_many_days():
    world = build_world(1, 0.5, ANCHOR)
    anchor_ms = int(ANCHOR.timestamp() * 1000)
    generated = [table for table in world.tables.values() if len(table)]  # an audience starts empty
    assert len(generated) == len(world.tables) - 1
    for table in generated:
        assert table.created.min() >= anchor_ms - 61 * 86_400_000
        assert table.modified.max() < anchor_ms
        assert (table.modified >= table.created).all()
        assert len(set((table.modified // 86_400_000).tolist())) > 20


def test_people_look_different_across_tools():
    world = build_world(2, 1.0, ANCHOR)
    hubspot = world.tables["hubspot/contacts"]
    emails = [hubspot.fields(r)["email"] for r in range(len(hubspot))]
    assert any(e and e != e.strip() for e in emails) and any(e and e != e.lower() for e in emails)
    assert any(e and "@@" in e for e in emails)
    persons = hubspot.person[hubspot.person >= 0]
    assert len(set(persons.tolist())) < len(persons), "someone is in HubSpot twice"
    phones = [hubspot.fields(r)["phone"] for r in range(len(hubspot))]
    assert any(p and p.startswith("(") for p in phones) and any(p and p.startswith("+1 ") for p in phones)
    zendesk = world.tables["zendesk/users"]
    names = {zendesk.fields(r)["name"].split()[0] for r in range(len(zendesk))}
    assert names & {"Bob", "Bill", "Liz", "Mike"}


@pytest.mark.parametrize("scheme", [IdScheme("salesforce", "003"), IdScheme("string_int", offset=1001),
                                    IdScheme("int", offset=360_000_000_001), IdScheme("stripe", "cus"),
                                    IdScheme("csv", "C", offset=100_000)])
def test_ids_round_trip(scheme):
    for row in (0, 1, 61, 62, 999_999):
        assert scheme.row(scheme.id(row)) == row
    assert scheme.row("garbage") is None


def test_salesforce_ids_carry_the_case_checksum():
    assert IdScheme("salesforce", "003").id(0) == "0035g0000000000AAA"
    assert len(IdScheme("salesforce", "001").id(12345)) == 18


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        build_world(1, 0)
