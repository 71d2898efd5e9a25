"""The CSV-folder and SQL connectors: string cells, cursor filters, errors that point at the line, upserts."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sync_pipelines.connectors import ConnectorError, connect

SINCE = datetime(2026, 9, 2, tzinfo=timezone.utc)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "customers.csv").write_text(
        "customer_no,contact_name,email_address,modified\n"
        "C1,Ada Lovelace,ada@example.com,2026-09-01 10:00:00\n"
        "C2,Grace Hopper,,2026-09-03 09:00:00\n"
        "\n"
        "C3,Alan Turing,alan@example.com,2026-09-02T00:00:00Z\n", encoding="utf-8")
    return tmp_path


def test_csv_reads_strings_with_empty_cells_as_none(folder):
    erp = connect("csv", str(folder), name="legacy_erp")
    rows = list(erp.read("customers"))
    assert [r["customer_no"] for r in rows] == ["C1", "C2", "C3"]
    assert rows[1]["email_address"] is None and rows[0]["modified"] == "2026-09-01 10:00:00"
    assert erp.stats.records == 3


def test_csv_since_filters_on_the_cursor_column(folder):
    erp = connect("csv", str(folder), cursor={"customers": "modified"})
    assert [r["customer_no"] for r in erp.read("customers", since=SINCE)] == ["C2", "C3"]


def test_csv_errors_name_the_file_and_line(folder):
    path = folder / "broken.csv"
    path.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    erp = connect("csv", str(folder), name="legacy_erp")
    with pytest.raises(ConnectorError, match=r"legacy_erp: .*broken.csv line 3: expected 2 values .* found 3"):
        list(erp.read("broken"))
    with pytest.raises(ConnectorError, match="missing.csv does not exist"):
        list(erp.read("missing"))
    bad_cursor = connect("csv", str(folder), name="legacy_erp", cursor="modified")
    (folder / "dates.csv").write_text("id,modified\n1,yesterday\n", encoding="utf-8")
    with pytest.raises(ConnectorError, match="dates.csv line 2: 'yesterday' is not an ISO 8601"):
        list(bad_cursor.read("dates", since=SINCE))


def test_csv_write_upserts_by_key_and_adds_columns(folder):
    erp = connect("csv", str(folder))
    results = erp.write("customers", [{"customer_no": "C2", "email_address": "grace@example.com"},
                                      {"customer_no": "C9", "contact_name": "New", "tier": "gold"},
                                      {"contact_name": "no key"}], key="customer_no")
    assert [(r["ok"], r["id"], r["created"]) for r in results] == [(True, "C2", False), (True, "C9", True),
                                                                    (False, None, None)]
    rows = {r["customer_no"]: r for r in erp.read("customers")}
    assert rows["C2"]["email_address"] == "grace@example.com" and rows["C2"]["contact_name"] == "Grace Hopper"
    assert rows["C9"]["tier"] == "gold" and rows["C1"]["tier"] is None
    with pytest.raises(ConnectorError, match="needs key="):
        erp.write("customers", [{"customer_no": "C1"}])


@pytest.fixture
def database(tmp_path):
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table("customers", meta, sa.Column("customer_no", sa.String, primary_key=True),
                     sa.Column("email", sa.String), sa.Column("modified", sa.DateTime))
    meta.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [
            {"customer_no": "C1", "email": "ada@example.com", "modified": datetime(2026, 9, 1, 10)},
            {"customer_no": "C2", "email": None, "modified": datetime(2026, 9, 3, 9)}])
    engine.dispose()
    return url


def test_sql_reads_with_a_cursor_column(database):
    warehouse = connect("sql", database, name="erp_db", cursor="modified")
    assert [r["customer_no"] for r in warehouse.read("customers")] == ["C1", "C2"]
    assert [r["customer_no"] for r in warehouse.read("customers", since=SINCE)] == ["C2"]
    with pytest.raises(ConnectorError, match="table 'nope' does not exist"):
        list(warehouse.read("nope"))


def test_csv_and_sql_list_the_ids_of_their_rows(folder, database):
    """A deletion scan's listing: the export's id column, and SELECT of the key column alone."""
    assert connect("csv", str(folder), name="legacy_erp").list_ids("customers", "customer_no") == ["C1", "C2", "C3"]
    assert connect("csv", str(folder)).list_ids("customers", "no_such_column") == [None, None, None]
    table = connect("sql", database, name="erp_db")
    assert sorted(table.list_ids("customers", "customer_no")) == ["C1", "C2"] and table.stats.requests == 1
    with pytest.raises(ConnectorError, match="has no column 'nope'"):
        table.list_ids("customers", "nope")


def test_sql_write_upserts_by_key_and_reports_bad_records(database):
    warehouse = connect("sql", database)
    results = warehouse.write("customers", [
        {"customer_no": "C2", "email": "grace@example.com", "modified": "2026-09-04T08:00:00Z"},
        {"customer_no": "C3", "email": "alan@example.com"},
        {"customer_no": "C4", "colour": "blue"}], key="customer_no")
    assert [(r["ok"], r["id"], r["created"]) for r in results[:2]] == [(True, "C2", False), (True, "C3", True)]
    assert results[2]["ok"] is False and "colour" in results[2]["error"]
    rows = {r["customer_no"]: r for r in warehouse.read("customers")}
    assert rows["C2"]["email"] == "grace@example.com" and rows["C2"]["modified"] == datetime(2026, 9, 4, 8)
    assert set(rows) == {"C1", "C2", "C3"}


def test_sql_url_password_never_shows():
    with pytest.raises(ConnectorError) as raised:
        list(connect("sql", "postgresql+nosuchdriver://u:hunter2secret@db/x").read("t"))
    assert "hunter2secret" not in str(raised.value)


def test_update_mode_never_adds_rows(folder, database):
    erp = connect("csv", str(folder))
    assert [r["ok"] for r in erp.write("customers", [{"customer_no": "C1", "phone": "1"},
                                                     {"customer_no": "C7", "phone": "2"}],
                                       mode="update", key="customer_no")] == [True, False]
    assert [r["customer_no"] for r in erp.read("customers")] == ["C1", "C2", "C3"]
    warehouse = connect("sql", database)
    results = warehouse.write("customers", [{"customer_no": "C1", "email": "a@x.io"},
                                            {"customer_no": "C7", "email": "b@x.io"}], mode="update",
                              key="customer_no")
    assert [r["ok"] for r in results] == [True, False] and "no row with customer_no=C7" in results[1]["error"]
    assert [r["customer_no"] for r in warehouse.read("customers")] == ["C1", "C2"]
